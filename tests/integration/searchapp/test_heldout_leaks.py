"""Held-out captions stay held out: a planted caption only a leaking path could find is never found.

Every image's first two captions hold made-up words that appear nowhere else in the collection (each
its own), and its third caption is the same plain sentence for every image. Holding out either of the
first two (the evaluation cross-fits its fusion weights over two rotations), nothing left in the
collection links a query to its image: full-text search must find nothing and the caption
vectors, CLIP (random demo weights) and the served search can only guess (about 1 in 12). A path that
still sees the held-out caption (a pool thread on its own connection, a cached order) finds the right
image first every time.
"""

import pytest

from searchapp import evaluation
from searchapp.search import SearchRequest, SearchService

IMAGES = 12


def planted_caption(seed: int, rotation: int = 0) -> str:
    return f"zorblax{seed}r{rotation} quintessa{rotation} glimmerfang{rotation}"


def build_planted_collection() -> list:
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from tests.conftest import image_bytes

    images = []
    for seed in range(IMAGES):
        image, _ = add_image(
            read_image(image_bytes(seed)),
            captions=[planted_caption(seed, 0), planted_caption(seed, 1), "a plain test picture"],
        )
        images.append(image)
    embed_everything_missing()
    return images


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential-channels", "parallel-channels"])
def test_held_out_captions_are_invisible_to_every_channel_and_the_served_search(settings, parallel):
    from collection.text_channels import shutdown_pool

    settings.LOUPE_PARALLEL_CHANNELS = parallel
    settings.LOUPE_RESULT_CACHE_SECONDS = 60  # a cached order is one more path that could remember a caption
    service = SearchService()
    build_planted_collection()
    try:
        # Searched once before the evaluation, as live traffic would: the served orders are cached, and the
        # channel threads hold connections opened outside any evaluation.
        warm = [
            service.search(SearchRequest(text=planted_caption(seed, rotation), page_size=10))
            for seed in range(IMAGES)
            for rotation in (0, 1)
        ]
        assert all(response.hits for response in warm)
        metrics = evaluation.held_out_captions(service, rotations=2, ks=(1, 5, 10))["metrics"]
    finally:
        shutdown_pool()  # the pool threads' connections would keep the test database from being dropped
    assert metrics["fts"]["queries"] == metrics["served"]["queries"] == 2 * IMAGES
    assert metrics["fts"]["recall@10"] == 0.0  # the planted words are nowhere else
    guess = 3 / IMAGES  # chance is 1/12; a leak gives 1.0
    fused = ("rrf_own_weights", "rrf_fitted", "convex_max_fitted", "convex_fitted")
    for name in ("caption", "clip", *fused, "served", "served_sequential"):
        assert metrics[name]["recall@1"] <= guess, (name, metrics[name])

"""Held-out captions stay held out: a planted caption only a leaking path could find is never found.

Every image's first caption holds made-up words that appear nowhere else in the collection, and its
second caption is the same plain sentence for every image. Holding out the first captions, nothing
left in the collection links a query to its image: full-text search must find nothing and the caption
vectors, CLIP (random demo weights) and the served search can only guess (about 1 in 12). A path that
still sees the held-out caption (a pool thread on its own connection, a cached order) finds the right
image first every time.
"""

import pytest

from searchapp import evaluation
from searchapp.search import SearchRequest, SearchService

IMAGES = 12


def planted_caption(seed: int) -> str:
    return f"zorblax{seed} quintessa glimmerfang"


def build_planted_collection() -> list:
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from tests.conftest import image_bytes

    images = []
    for seed in range(IMAGES):
        image, _ = add_image(read_image(image_bytes(seed)), captions=[planted_caption(seed), "a plain test picture"])
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
        warm = [service.search(SearchRequest(text=planted_caption(seed), page_size=10)) for seed in range(IMAGES)]
        assert all(response.hits for response in warm)
        metrics = evaluation.held_out_captions(service, rotations=1, ks=(1, 5, 10))
    finally:
        shutdown_pool()  # the pool threads' connections would keep the test database from being dropped
    assert metrics["fts"]["queries"] == IMAGES
    assert metrics["fts"]["recall@10"] == 0.0  # the planted words are nowhere else
    guess = 3 / IMAGES  # chance is 1/12; a leak gives 1.0
    for channel in ("caption", "clip", "fusion"):
        assert metrics[channel]["recall@1"] <= guess, (channel, metrics[channel])

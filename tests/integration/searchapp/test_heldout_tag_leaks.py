"""Tag queries on held-out tags: a held-out image's tags are invisible to every channel and the served search.

Every image carries one made-up tag of its own and the same plain caption. Rotation r empties the tags of
every other image (from the r-th); each of their tags is asked, and only the rotation's images are ranked.
Nothing left links a tag to its image: full-text search must find nothing, and the caption vectors, CLIP
(random demo weights) and the served search can only guess (1 in 6). A path that still sees the tag (a pool
thread on its own connection, a cached order) finds its image first every time.
"""

import pytest

from searchapp.heldout_modes import held_out_tags
from searchapp.search import SearchRequest, SearchService

IMAGES = 12


def planted_tag(seed: int) -> str:
    return f"zorblax{seed}"


def build_planted_collection() -> None:
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from tests.conftest import image_bytes

    for seed in range(IMAGES):
        add_image(read_image(image_bytes(seed)), captions=["a plain test picture"], tags=[planted_tag(seed)])
    embed_everything_missing()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential-channels", "parallel-channels"])
def test_held_out_tags_are_invisible_to_every_channel_and_the_served_search(settings, parallel):
    from collection.text_channels import shutdown_pool

    build_planted_collection()
    service = SearchService()
    # A cached order is one more path that could remember a tag; channels on pool threads another.
    settings.LOUPE_RESULT_CACHE_SECONDS, settings.LOUPE_PARALLEL_CHANNELS = 60, parallel
    try:
        # Searched once before the evaluation, as live traffic would: full text finds each tag's image first.
        warm = [service.search(SearchRequest(text=planted_tag(seed), page_size=10)) for seed in range(IMAGES)]
        assert all("fts" in response.hits[0].channels for response in warm)
        measured = held_out_tags(service, rotations=2, ks=(1, 5, 10))
    finally:
        shutdown_pool()
    metrics = measured["metrics"]
    assert metrics["fts"]["queries"] == metrics["served"]["queries"] == IMAGES
    assert measured["images_ranked_per_rotation"] == {0: IMAGES // 2, 1: IMAGES // 2}
    assert metrics["fts"]["recall@10"] == 0.0  # the planted tags are nowhere else
    assert measured["served_differs_from_offline"] == 0
    guess = 2 / (IMAGES // 2)  # chance is 1/6; a leak gives 1.0
    fused = ("rrf_own_weights", "rrf_fitted", "convex_max_fitted", "convex_fitted")
    for name in ("caption", "clip", *fused, "served", "served_sequential"):
        assert metrics[name]["recall@1"] <= guess, (name, metrics[name])

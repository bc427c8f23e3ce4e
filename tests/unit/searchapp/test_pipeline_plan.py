"""The plan stage: how deep each channel goes, and which searches fall into a logged slice."""

import pytest

from collection.images import CheckedImage
from ranking.experiments.serving import ServingPlan, Team
from searchapp.pipeline.plan import plan_depths
from searchapp.pipeline.request import SearchRequest, validate

INTERLEAVED = ServingPlan(rerank_depth=100, teams=(Team("a", None), Team("b", None)))


@pytest.fixture(autouse=True)
def _depths(settings):
    settings.LOUPE_TEXT_CHANNEL = True
    settings.LOUPE_CHANNEL_DEPTH = 50
    settings.LOUPE_MAX_CANDIDATES = 1000
    settings.LOUPE_SWAP_SHARE = 1.0  # every logged first page is in the swap slice: no randomness here
    settings.LOUPE_EXPLORE_SHARE = 0.0


def test_text_channels_go_whole_multiples_of_their_depth_deep():
    # Page 3 of 24 needs 73 candidates: both CLIP and the text channels round up to 100, so the fused
    # order of pages 1-3 is the fusion of the same lists.
    depths = plan_depths(validate(SearchRequest(text="dog", page=3, page_size=24)), ServingPlan(), logged=False)
    assert (depths.candidates, depths.text, depths.fusing) == (100, 100, True)


def test_a_reranked_or_interleaved_search_takes_clip_deeper_but_not_the_text_channels():
    depths = plan_depths(validate(SearchRequest(text="dog", page_size=10)), INTERLEAVED, logged=False)
    assert (depths.candidates, depths.text) == (100, 50)


def test_image_searches_run_no_text_channel_and_fall_into_no_slice():
    search = validate(SearchRequest(image=CheckedImage(b"x", "0" * 64, "PNG", 1, 1)))
    depths = plan_depths(search, ServingPlan(), logged=True)
    assert (depths.candidates, depths.text, depths.slice.kind) == (25, 0, "")


def test_only_logged_first_pages_of_text_outside_interleaving_fall_into_a_slice():
    first = validate(SearchRequest(text="dog"))
    assert plan_depths(first, ServingPlan(), logged=True).slice.kind == "swap"
    assert plan_depths(first, ServingPlan(), logged=False).slice.kind == ""
    assert plan_depths(validate(SearchRequest(text="dog", page=2)), ServingPlan(), logged=True).slice.kind == ""
    assert plan_depths(first, INTERLEAVED, logged=True).slice.kind == ""

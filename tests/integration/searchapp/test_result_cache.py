"""Repeated queries reuse their served order for a while, yet every search is still its own logged event."""

import time

import pytest

from feedback.identity import Viewer
from feedback.models import Impression, SearchEvent
from searchapp.result_cache import result_cache
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db

ALICE = Viewer(user_key="anon:alice-token-0000000000", session="s1")
BOB = Viewer(user_key="anon:bob-token-00000000000000", session="s2")


@pytest.fixture
def cache_on(settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    result_cache.forget()
    yield settings
    result_cache.forget()


def ids(response) -> list[int]:
    return [hit.image.pk for hit in response.hits]


def test_a_repeated_query_reuses_the_order_and_is_logged_again(service, collection, cache_on):
    first = service.search(SearchRequest(text="a test picture", page_size=5), ALICE)
    again = service.search(SearchRequest(text="A  test picture", page_size=5), BOB)  # same normalised query
    assert not first.cached and again.cached
    assert ids(again) == ids(first) and [h.score for h in again.hits] == [h.score for h in first.hits]
    assert again.event_id != first.event_id
    assert SearchEvent.objects.filter(pk__in=[first.event_id, again.event_id]).count() == 2
    logged = [
        list(Impression.objects.filter(event_id=e).order_by("position").values_list("image_id", "features"))
        for e in (first.event_id, again.event_id)
    ]
    assert logged[0] == logged[1]  # the same list with the same serve-time features
    assert again.timings_ms["encode"] == 0 < first.timings_ms["encode"]  # the query was not encoded again


def test_what_the_order_depends_on_is_part_of_the_key(service, collection, cache_on):
    service.search(SearchRequest(text="a test picture", page_size=5), ALICE)
    assert not service.search(SearchRequest(text="a test picture", tags=("even",), page_size=5), ALICE).cached
    assert not service.search(SearchRequest(text="a test picture", page_size=5, min_score=0.5), ALICE).cached
    assert not service.search(SearchRequest(text="another picture", page_size=5), ALICE).cached
    assert service.search(SearchRequest(text="a test picture", page_size=5), ALICE).cached


def test_entries_expire(service, collection, cache_on):
    cache_on.LOUPE_RESULT_CACHE_SECONDS = 0.2
    service.search(SearchRequest(text="a test picture", page_size=5), ALICE)
    assert service.search(SearchRequest(text="a test picture", page_size=5), ALICE).cached
    time.sleep(0.3)
    assert not service.search(SearchRequest(text="a test picture", page_size=5), ALICE).cached


def test_slices_are_still_drawn_for_every_search(service, collection, cache_on):
    cache_on.LOUPE_SWAP_SHARE = 1.0
    first = service.search(SearchRequest(text="a test picture", page_size=6), ALICE)
    again = service.search(SearchRequest(text="a test picture", page_size=6), BOB)
    assert again.cached and first.swap_position is not None and again.swap_position is not None


def test_off_means_off(service, collection, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 0
    service.search(SearchRequest(text="a test picture", page_size=5), ALICE)
    assert not service.search(SearchRequest(text="a test picture", page_size=5), ALICE).cached
    assert len(result_cache) == 0


def test_page_images_come_from_memory_within_the_time_to_live(service, collection, cache_on, django_assert_num_queries):
    from collection.models import Caption, Image
    from searchapp.result_cache import image_cache, page_images

    image_cache.forget()
    wanted = [image.pk for image in collection[:4]]
    first = page_images(wanted, Image.with_caption_texts)
    assert sorted(first) == sorted(wanted) and first[wanted[0]].caption_texts() == list(
        Caption.objects.filter(image_id=wanted[0]).order_by("position").values_list("text", flat=True)
    )
    with django_assert_num_queries(0):
        again = page_images(wanted, Image.with_caption_texts)  # all four from memory
    assert again[wanted[0]] is first[wanted[0]]
    with django_assert_num_queries(1):
        page_images([*wanted, collection[5].pk], Image.with_caption_texts)  # one query for the one not seen yet
    cache_on.LOUPE_RESULT_CACHE_SECONDS = 0  # caches off: every page reads its rows again
    Caption.objects.filter(image_id=wanted[0], position=0).update(text="edited caption")
    with django_assert_num_queries(1):
        fresh = page_images(wanted, Image.with_caption_texts)
    assert "edited caption" in fresh[wanted[0]].caption_texts()


def test_new_fusion_weights_are_a_new_key(service, collection, cache_on):
    """A calibration (or the evaluation's equal-weights pass) must not be answered with the old weights' order."""
    first = service.search(SearchRequest(text="caption 3 of a test picture", page_size=5), ALICE)
    service.version.fusion_weight = 0.0 if service.version.channel_weight else 1.0
    reweighted = service.search(SearchRequest(text="caption 3 of a test picture", page_size=5), ALICE)
    assert not first.cached and not reweighted.cached
    assert reweighted.channel_weights["clip"] != first.channel_weights["clip"]
    again = service.search(SearchRequest(text="caption 3 of a test picture", page_size=5), BOB)
    assert again.cached and ids(again) == ids(reweighted)

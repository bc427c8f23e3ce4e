"""Training pairs from logged feedback: relevance from clicks against examinations, ratings, negatives, windows."""

from datetime import timedelta

import pytest
from django.utils import timezone

from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.identity import Viewer
from feedback.models import SearchEvent
from ranking.finetune.pairs import (
    RelevanceSettings,
    feedback_pairs,
    smoothed_relevance,
    windowed_pairs,
)
from ranking.propensity import power_law
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
OPTIONS = RelevanceSettings(prior_mean=0.2, prior_strength=4.0, min_relevance=0.5)


@pytest.fixture
def fixed_order(settings):
    settings.LOUPE_SWAP_SHARE = 0.0  # no randomised slices: every search shows the same order
    settings.LOUPE_EXPLORE_SHARE = 0.0


def search(service, n: int):
    viewer = Viewer(user_key=f"anon:pairs-user-{n:04d}-000000")
    return viewer, service.search(SearchRequest(text="A Test   picture", page_size=12), viewer)


def click(viewer, response, position: int, client_id: str) -> None:
    record_click(viewer, ClickInput(str(response.event_id), response.hits[position - 1].image.pk, position, client_id))


def test_pairs_weigh_clicks_against_examinations(service, collection, fixed_order):
    curve = power_law(100)  # examination 1 / position
    searches = [search(service, n) for n in range(3)]
    at = {p: searches[0][1].hits[p - 1].image.pk for p in range(1, 7)}
    (v1, r1), (v2, r2), (v3, r3) = searches
    click(v1, r1, 3, "a")  # position 3 chosen twice in three searches: 2 clicks for 3 x 1/3 examinations
    click(v1, r1, 4, "b")
    click(v2, r2, 3, "c")
    click(v3, r3, 2, "d")  # position 2 once in three searches: 1 click for 1.5 examinations, a stray click
    click(v3, r3, 4, "e")
    record_rating(v3, RatingInput(at[4], 1, "r-bad", "stars", str(r3.event_id)))  # ...but rated bad: dropped
    record_rating(v3, RatingInput(at[6], 5, "r-good", "stars", str(r3.event_id)))  # never clicked, rated good
    pairs = {p.image_id: p for p in feedback_pairs(None, timezone.now(), curve, OPTIONS)}
    assert set(pairs) == {at[3], at[6]}
    chosen = pairs[at[3]]
    assert chosen.query == "a test picture" and chosen.clicks == 2
    assert chosen.examinations == pytest.approx(1.0)
    assert chosen.weight == pytest.approx((2 + 0.8) / (1 + 4))
    assert smoothed_relevance(1, 1.5, OPTIONS) < 0.5  # why position 2's single click is not a pair
    # Skipped above the clicks at 3: positions 1 and 2 in both searches (neither was clicked there).
    assert chosen.skipped == {at[1], at[2]}
    assert pairs[at[6]].weight == 1.0 and pairs[at[6]].skipped == set()


def test_a_rarely_examined_image_needs_more_than_one_click(service, collection, fixed_order):
    viewer, response = search(service, 0)
    click(viewer, response, 12, "deep")  # examined with 1/12: one click is weak evidence, smoothed down
    only_once = feedback_pairs(None, timezone.now(), power_law(100), OPTIONS)
    assert only_once == []
    viewer, response = search(service, 1)
    click(viewer, response, 12, "deep-again")  # the same choice again: (2 + 0.8) / (2/12 + 4) > 0.5
    again = feedback_pairs(None, timezone.now(), power_law(100), OPTIONS)
    assert [p.image_id for p in again] == [response.hits[11].image.pk]


def test_windows_follow_search_time(service, collection, fixed_order):
    loose = RelevanceSettings(min_relevance=0.0)  # every clicked pair: this test is about the windows
    now = timezone.now()
    for n in range(8):
        viewer, response = search(service, n)
        record_click(viewer, ClickInput(str(response.event_id), response.hits[n].image.pk, n + 1, f"w{n}"))
        SearchEvent.objects.filter(pk=response.event_id).update(created_at=now - timedelta(hours=8 - n))
    windows = windowed_pairs(timezone.now(), power_law(100), loose, held_out_share=0.25)
    images = [h.image.pk for h in search(service, 99)[1].hits]
    assert [p.image_id for p in windows.train] == sorted(images[:5])
    assert [p.image_id for p in windows.validation] == [images[5]]
    assert sorted(p.image_id for p in windows.test) == sorted(images[6:8])
    validation_from, test_from, _ = windows.boundaries
    assert validation_from < test_from


def test_a_pair_chosen_again_later_is_left_out_of_the_later_windows(service, collection, fixed_order):
    """Time alone does not hold pairs out: the first result chosen again in the validation and test searches
    is the training pair, so the gate would measure what training fitted. Later windows keep new pairs only."""
    loose = RelevanceSettings(min_relevance=0.0)
    now = timezone.now()
    for n in range(8):
        viewer, response = search(service, n)
        record_click(viewer, ClickInput(str(response.event_id), response.hits[n].image.pk, n + 1, f"w{n}"))
        if n in (5, 7):  # the first result again, chosen in training by search 0
            record_click(viewer, ClickInput(str(response.event_id), response.hits[0].image.pk, 1, f"again{n}"))
        SearchEvent.objects.filter(pk=response.event_id).update(created_at=now - timedelta(hours=8 - n))
    windows = windowed_pairs(timezone.now(), power_law(100), loose, held_out_share=0.25)
    images = [h.image.pk for h in search(service, 99)[1].hits]
    assert [p.image_id for p in windows.train] == sorted(images[:5])
    assert [p.image_id for p in windows.validation] == [images[5]]
    assert sorted(p.image_id for p in windows.test) == sorted(images[6:8])
    assert windows.dropped == {"validation": 1, "test": 1}
    assert windows.test_queries_in_training == 1  # one query string throughout: new images, not new queries


def test_short_clicks_are_not_choices(service, collection, fixed_order):
    viewer, response = search(service, 0)
    image = response.hits[0].image.pk
    record_click(viewer, ClickInput(str(response.event_id), image, 1, "quick", dwell_ms=1200))  # straight back
    record_click(viewer, ClickInput(str(response.event_id), response.hits[1].image.pk, 2, "stayed", dwell_ms=40_000))
    record_click(viewer, ClickInput(str(response.event_id), response.hits[2].image.pk, 3, "unknown"))  # no dwell
    pairs = {p.image_id: p for p in feedback_pairs(None, timezone.now(), power_law(100), RelevanceSettings())}
    assert image not in pairs
    assert set(pairs) == {response.hits[1].image.pk, response.hits[2].image.pk}
    # The quick return is shown above the choices and was not chosen: a hard negative for them.
    assert image in pairs[response.hits[1].image.pk].skipped
    kept = feedback_pairs(None, timezone.now(), power_law(100), RelevanceSettings(short_click_ms=0))
    assert image in {p.image_id for p in kept}  # the bar switched off: every click is a choice

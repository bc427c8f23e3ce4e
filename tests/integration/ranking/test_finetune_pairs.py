"""Training pairs from logged feedback: weights from propensities, skipped negatives, de-duplication, ratings."""

import numpy as np
import pytest
from django.utils import timezone

from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.identity import Viewer
from ranking.finetune.pairs import feedback_pairs, split_by_time
from ranking.propensity import power_law
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db


def test_pairs_from_clicks_and_ratings(service, collection):
    curve = power_law(100)
    viewer = Viewer(user_key="anon:pairs-user-0000000000")
    first = service.search(SearchRequest(text="A Test   picture", page_size=12), viewer)
    third = first.hits[2]
    record_click(viewer, ClickInput(str(first.event_id), third.image.pk, 3, "c1"))
    again = service.search(SearchRequest(text="a test picture", page_size=12), Viewer(user_key="anon:other-00000000"))
    hit = next(h for h in again.hits if h.image.pk == third.image.pk)
    record_click(
        Viewer(user_key="anon:other-00000000"), ClickInput(str(again.event_id), hit.image.pk, hit.position, "c2")
    )
    top = first.hits[0]
    record_click(viewer, ClickInput(str(first.event_id), top.image.pk, 1, "c3"))
    record_rating(viewer, RatingInput(first.hits[5].image.pk, 5, "r1", "stars", str(first.event_id)))
    record_rating(viewer, RatingInput(first.hits[6].image.pk, 1, "r2", "stars", str(first.event_id)))  # bad: no pair
    pairs = {(p.query, p.image_id): p for p in feedback_pairs(timezone.now(), curve)}
    assert set(pairs) == {("a test picture", third.image.pk), ("a test picture", top.image.pk),
                          ("a test picture", first.hits[5].image.pk)}  # fmt: skip
    merged = pairs[("a test picture", third.image.pk)]
    assert merged.weight == pytest.approx(3 + hit.position)  # 1/propensity(3) + 1/propensity(its position)
    # Skipped: above the click at 3 in the first search, position 2 only (position 1 was clicked there);
    # plus everything above it in the second search, where nothing else was clicked. Pooled per pair.
    above_in_second = {h.image.pk for h in again.hits if h.position < hit.position}
    assert merged.skipped == {first.hits[1].image.pk} | above_in_second
    assert pairs[("a test picture", top.image.pk)].skipped == set()
    assert pairs[("a test picture", top.image.pk)].weight == pytest.approx(1.0)
    assert pairs[("a test picture", first.hits[5].image.pk)].weight == pytest.approx(1.0)


def test_deep_clicks_are_clipped_and_the_split_is_by_time():
    from datetime import timedelta

    from ranking.finetune.pairs import Pair

    now = timezone.now()
    pairs = [Pair(f"q{i}", i, 1.0, now + timedelta(seconds=i)) for i in range(10)]
    train, held = split_by_time(pairs)
    assert [p.query for p in held] == ["q8", "q9"] and len(train) == 8
    assert split_by_time(pairs[:1]) == (pairs[:1], [])
    assert np.isclose(min(1 / power_law(100).at(90), 20.0), 20.0)

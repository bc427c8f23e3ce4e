"""The randomised slice: some first pages swap one adjacent pair, logged, and the curve is estimated from them."""

import numpy as np
import pytest
from django.db.models import F

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import SearchEvent
from ranking.features import NAMES
from ranking.training_data import estimated_propensity, swap_counts
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
QUERY = "a test picture"


def test_swapped_pages_are_logged_and_really_swapped(service, collection, settings):
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_SWAP_MAX_POSITION, settings.LOUPE_SWAP_MAX_OFFSET = 1.0, 4, 1
    plain = [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]
    for n in range(20):
        response = service.search(
            SearchRequest(text=QUERY, page_size=12), Viewer(user_key=f"anon:u{n:02d}-0000000000000")
        )
        k = response.swap_position
        assert 1 <= k <= 3
        expected = list(plain)
        expected[k - 1], expected[k] = expected[k], expected[k - 1]
        assert [h.image.pk for h in response.hits] == expected
        event = SearchEvent.objects.get(pk=response.event_id)
        assert (event.swap_position, event.swap_with) == (k, k + 1)
    unlogged = service.search(SearchRequest(text=QUERY, page_size=12))  # no viewer: never swapped
    assert unlogged.swap_position is None and [h.image.pk for h in unlogged.hits] == plain


def test_the_examination_curve_is_estimated_from_logged_clicks(service, collection, settings):
    """Users examine position p with 1/p and click what they examine with 0.8, whatever the image."""
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_SWAP_MAX_POSITION, settings.LOUPE_SWAP_MAX_OFFSET = 0.5, 3, 1
    rng = np.random.default_rng(5)
    true_curve = np.array([1.0, 0.5, 1 / 3])
    for n in range(700):
        viewer = Viewer(user_key=f"anon:u{n:04d}-00000000000")
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        for hit in response.hits[:3]:
            if rng.random() < true_curve[hit.position - 1] * 0.8:
                record_click(
                    viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{n}-{hit.position}")
                )
    counts = swap_counts(None, 3)
    assert (
        counts[1].swapped_searches + counts[2].swapped_searches
        == SearchEvent.objects.exclude(swap_position=None).count()
    )
    curve = estimated_propensity(None, depth=20, max_position=3)
    assert curve.estimated_positions == [2, 3]
    assert curve.values[:3] == pytest.approx(true_curve, abs=0.12)
    assert (np.diff(curve.values) <= 0).all() and len(curve.values) == 20


def test_grid_swaps_trade_pairs_a_row_apart_and_stay_out_of_the_list_counts(service, collection, settings):
    """Half the swap slice trades (k, k+d), d in 2..LOUPE_SWAP_MAX_OFFSET: vertical neighbours on a d-column grid."""
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_SWAP_MAX_POSITION, settings.LOUPE_SWAP_MAX_OFFSET = 1.0, 8, 4
    plain = [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]
    offsets = set()
    for n in range(40):
        response = service.search(
            SearchRequest(text=QUERY, page_size=12), Viewer(user_key=f"anon:g{n:02d}-0000000000000")
        )
        event = SearchEvent.objects.get(pk=response.event_id)
        upper, lower = event.swap_position, event.swap_with
        assert (upper, lower) == (response.swap_position, response.swap_with) and 1 <= upper < lower <= 8
        assert lower - upper <= 4
        offsets.add(lower - upper)
        expected = list(plain)
        expected[upper - 1], expected[lower - 1] = expected[lower - 1], expected[upper - 1]
        assert [h.image.pk for h in response.hits] == expected
    assert offsets == {1, 2, 3, 4}
    adjacent = SearchEvent.objects.filter(swap_with=F("swap_position") + 1).count()
    counted = swap_counts(None, 8)
    # The list curve reads the adjacent swaps only; a grid swap is neither a normal page nor an adjacent pair.
    assert sum(c.swapped_searches for c in counted.values()) == adjacent < 40
    assert all(c.normal_searches == 0 for c in counted.values())


def test_without_swaps_the_power_law_prior_is_used(collection):
    curve = estimated_propensity(None, depth=5, max_position=3)
    assert curve.estimated_positions == [] and curve.values == pytest.approx(1 / np.arange(1, 6))


def test_explored_pages_show_a_deeper_candidate_and_log_it(service, collection, settings):
    settings.LOUPE_EXPLORE_SHARE, settings.LOUPE_EXPLORE_MIN_POSITION = 1.0, 2
    plain = [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]
    for n in range(15):
        viewer = Viewer(user_key=f"anon:x{n:02d}-0000000000000")
        response = service.search(SearchRequest(text=QUERY, page_size=4), viewer)
        slot, source = response.explore_position, response.explore_from
        assert 2 <= slot <= 4 and 5 <= source <= 12
        expected = plain[: slot - 1] + [plain[source - 1]] + plain[slot - 1 : 4][: 4 - slot]
        assert [h.image.pk for h in response.hits] == expected
        event = SearchEvent.objects.get(pk=response.event_id)
        assert (event.explore_position, event.explore_from, event.swap_position) == (slot, source, None)
        # The explored image's logged features say where it stood before: first-stage rank `source`.
        explored = response.hits[slot - 1]
        assert np.expm1(explored.features[NAMES.index("first_stage_rank_log")]) == pytest.approx(source)
    assert swap_counts(None, 4)[1].normal_searches == 0  # explored pages are not "normal" pages

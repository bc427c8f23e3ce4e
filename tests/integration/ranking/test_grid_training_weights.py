"""Training and the gate weigh each click by the propensity of where it was shown: its cell in the reported
grid, or, for a search with no layout, the list curve exactly as before layouts were logged."""

import numpy as np
import pytest
from django.utils import timezone

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.layout import Layout, store_layout
from feedback.models import SearchEvent
from ranking.grid_propensity import GridPropensity
from ranking.grid_swaps import estimated_grid_propensity
from ranking.propensity import power_law
from ranking.training_data import load_searches, split_windows
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
QUERY = "a test picture"
PHONE = Layout((1,), 1, 3)


def clicked_searches(service, n: int) -> list[SearchEvent]:
    """n logged searches, each with one click at position 2..6 (so the list weights differ by position)."""
    events = []
    for i in range(n):
        viewer = Viewer(user_key=f"anon:w{i:03d}-00000000000000")
        response = service.search(SearchRequest(text=QUERY, page_size=8), viewer)
        hit = response.hits[1 + i % 5]
        record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{i}"))
        events.append(SearchEvent.objects.get(pk=response.event_id))
    return events


def list_weights(logged, curve) -> np.ndarray:
    """The weights as main computed them: 1 / curve(position) for a click (clipped at 20), 1 elsewhere."""
    return np.where(logged.data.y > 0, 1.0 / np.maximum(curve.values[logged.positions - 1], 1 / 20), 1.0)


def test_without_a_layout_the_training_weights_are_the_list_curves_exactly(service, collection, settings):
    settings.LOUPE_FEEDBACK_TRUST = False
    clicked_searches(service, 12)
    curve = power_law(100)
    grid = estimated_grid_propensity(None, curve)
    assert grid.cells == {}  # nothing laid out: no cell estimated
    plain = load_searches(None, timezone.now(), curve)
    with_grid = load_searches(None, timezone.now(), curve, grid)
    assert np.array_equal(with_grid.data.weights, plain.data.weights)
    # Even with cells estimated for desktop and phone grids, a search with no layout reads the list curve.
    cells = {width: {(row, column): 0.9 for row in range(1, 9) for column in range(1, width + 1)} for width in (1, 4)}
    estimated = load_searches(None, timezone.now(), curve, GridPropensity(curve, cells=cells))
    assert np.array_equal(estimated.data.weights, plain.data.weights)
    assert np.array_equal(plain.data.weights, list_weights(plain, curve))
    assert sorted(set(plain.data.weights[plain.data.y > 0])) == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_a_search_seen_in_a_grid_weighs_its_click_by_its_cell_and_so_does_the_gate(service, collection, settings):
    settings.LOUPE_FEEDBACK_TRUST = False
    events = clicked_searches(service, 40)
    for event in events[::2]:
        assert store_layout(event, PHONE)
    curve = power_law(100)
    # A phone shows one card a row: rank p is row p. Say the grid estimate found rows 2..8 examined at 0.8.
    grid = GridPropensity(curve, cells={1: {(1, 1): 1.0, **{(row, 1): 0.8 for row in range(2, 9)}}})
    logged = load_searches(None, timezone.now(), curve, grid)
    clicked = logged.data.y > 0
    # Searches of one test transaction share a timestamp, so compare the clicks' weights as a multiset: the
    # phone searches' clicks (rows 2..6) weigh 1 / 0.8, the others 1 / curve(position) = their position.
    listed = [2.0 + i % 5 for i in range(1, 40, 2)]
    assert sorted(np.round(logged.data.weights[clicked], 6)) == sorted([1.25] * 20 + listed)
    assert (logged.data.weights[~clicked] == 1.0).all()
    # The gate's counterfactual DCG reads the same per-row weights (its window is the newest 20%).
    windows = split_windows(logged)
    gate_rows = len(windows.gate.y)
    assert np.array_equal(windows.gate.weights, logged.data.weights[-gate_rows:])

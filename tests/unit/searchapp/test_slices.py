"""The randomised slices of logged first pages: swap and exploration."""

import random
from collections import Counter

import pytest

from searchapp.slices import Slice, draw_slice, explore_below_page, swap_pair


def test_explore_moves_one_item_from_below_the_page_into_it():
    ranked = list(range(1, 101))  # item k stands at position k
    rng = random.Random(3)
    for _ in range(200):
        explored, slot, source = explore_below_page(ranked, 10, 100, 3, rng)
        assert 3 <= slot <= 10 and 11 <= source <= 100
        assert explored[slot - 1] == source
        assert sorted(explored) == ranked  # nothing lost, nothing doubled
        # Above the slot nothing moved; from the slot down to the source, everything moved one place.
        assert explored[: slot - 1] == ranked[: slot - 1]
        assert explored[slot:source] == ranked[slot - 1 : source - 1]
        assert explored[source:] == ranked[source:]


def test_explore_draws_sources_and_slots_uniformly():
    rng = random.Random(4)
    draws = [explore_below_page(list(range(30)), 10, 30, 1, rng)[1:] for _ in range(20_000)]
    slots, sources = Counter(s for s, _ in draws), Counter(s for _, s in draws)
    assert set(slots) == set(range(1, 11)) and set(sources) == set(range(11, 31))
    assert max(slots.values()) / min(slots.values()) < 1.15
    assert max(sources.values()) / min(sources.values()) < 1.25


def test_explore_needs_something_below_the_page():
    assert explore_below_page([1, 2, 3], 10, 100, 3) == ([1, 2, 3], None, None)


def test_swap_trades_one_adjacent_pair():
    swapped, k, lower = swap_pair([1, 2, 3, 4], 3, 1, random.Random(0))
    assert 1 <= k <= 2 and lower == k + 1 and swapped[k - 1 : k + 1] == [k + 1, k]


def test_grid_swaps_are_half_adjacent_and_half_a_row_apart():
    """Offsets 2..max are the vertical neighbours of 2..max-column grids; both ends stay within ``deepest``."""
    rng, offsets = random.Random(3), Counter()
    for _ in range(6000):
        swapped, upper, lower = swap_pair(list(range(1, 13)), 10, 6, rng)
        assert 1 <= upper < lower <= 10
        assert swapped[upper - 1] == lower and swapped[lower - 1] == upper
        assert [x for n, x in enumerate(swapped, 1) if n not in (upper, lower)] == [
            n for n in range(1, 13) if n not in (upper, lower)
        ]
        offsets[lower - upper] += 1
    assert set(offsets) == {1, 2, 3, 4, 5, 6}
    assert offsets[1] / 6000 == pytest.approx(0.5, abs=0.03)
    assert max(offsets[d] for d in range(2, 7)) / min(offsets[d] for d in range(2, 7)) < 1.2
    assert swap_pair([1], 10, 6) == ([1], None, None)
    assert swap_pair([1, 2, 3], 10, 6, rng)[2] <= 3  # a short list: pairs within it


@pytest.mark.parametrize(("swap", "explore"), [(0.1, 0.2), (0.0, 0.5), (0.3, 0.0)])
def test_slices_are_disjoint_and_drawn_at_their_shares(settings, swap, explore):
    settings.LOUPE_SWAP_SHARE, settings.LOUPE_EXPLORE_SHARE = swap, explore
    rng = random.Random(5)
    kinds = Counter(draw_slice(rng).kind for _ in range(20_000))
    assert kinds["swap"] / 20_000 == pytest.approx(swap, abs=0.015)
    assert kinds["explore"] / 20_000 == pytest.approx(explore, abs=0.015)
    assert Slice("explore").needs_depth == settings.LOUPE_RERANK_DEPTH and Slice().needs_depth == 0

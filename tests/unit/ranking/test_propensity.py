"""Propensities from swap interventions recover the examination curve of a simulated position-based model."""

import numpy as np
import pytest

from ranking.propensity import SwapCounts, power_law, propensity_from_swaps


def simulate(true_curve: np.ndarray, searches: int, swap_share: float, seed: int) -> dict[int, SwapCounts]:
    """Searches of `depth` results of random relevance; a share swaps one random adjacent pair."""
    rng = np.random.default_rng(seed)
    depth = len(true_curve)
    counts = {k: SwapCounts() for k in range(1, depth)}
    for _ in range(searches):
        # The ranker is decent: relevance falls with its rank, so A (at k) tends to beat B (at k+1).
        relevance = np.clip(0.8 - 0.03 * np.arange(depth) + rng.normal(0, 0.1, depth), 0.01, 1)
        shown = np.arange(depth)
        swap = int(rng.integers(1, depth)) if rng.random() < swap_share else None
        if swap is not None:
            shown[[swap - 1, swap]] = shown[[swap, swap - 1]]
        clicked = rng.random(depth) < true_curve * relevance[shown]
        for k in range(1, depth):
            c = counts[k]
            if swap == k:
                c.swapped_searches += 1
                c.swapped_lower_clicks += clicked[k]  # A (ranker's k-th) now at k+1
                c.swapped_upper_clicks += clicked[k - 1]  # B now at k
            elif swap is None:
                c.normal_searches += 1
                c.normal_upper_clicks += clicked[k - 1]
                c.normal_lower_clicks += clicked[k]
    return counts


def test_the_curve_is_recovered_despite_relevance_falling_with_rank():
    true_curve = 1.0 / np.arange(1, 11) ** 0.8
    curve = propensity_from_swaps(simulate(true_curve, 60_000, 0.2, seed=0), depth=10)
    assert curve.values[0] == 1.0
    assert curve.values == pytest.approx(true_curve, abs=0.06)
    # Naive click-through rates per position confound relevance with examination and fall faster.
    assert curve.estimated_positions == list(range(2, 11))


def test_too_few_clicks_fall_back_to_the_prior_ratio_and_the_curve_never_rises():
    counts = {1: SwapCounts(100, 50, 25, 100, 15, 30), 2: SwapCounts(100, 1, 1, 1, 0, 0)}
    curve = propensity_from_swaps(counts, depth=4)
    assert curve.estimated_positions == [2]
    assert curve.values[2] == pytest.approx(curve.values[1] * 2 / 3)  # the power law's p(3) / p(2)
    assert curve.values[3] == pytest.approx(curve.values[2] * 3 / 4)
    assert (np.diff(curve.values) <= 0).all()
    assert curve.at(99) == curve.values[-1] and curve.at(0) == 1.0


def test_power_law_prior():
    assert power_law(3).values == pytest.approx([1, 1 / 2, 1 / 3])

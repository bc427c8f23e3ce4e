"""The fine-tune gate's counterfactual clicks: pinned on a hand-computed case, the same figure whichever version
logged the searches, blind to positions whose propensity the product does not know, and split into the pairs
training saw and new ones. Curves are built by ``propensity_from_swaps``, as production builds them (it records
the measured positions from 2: position 1 is the reference)."""

import numpy as np
import pytest

from ranking.finetune.counterfactual import LoggedSearch, clicks_per_search, collection_ranks, compare, gate_depth
from ranking.propensity import PropensityCurve, SwapCounts, propensity_from_swaps


def measured_curve(values: list[float], measured: set[int] | None = None, depth: int | None = None) -> PropensityCurve:
    """The curve ``propensity_from_swaps`` chains from swap counts whose ratios are exactly ``values``' (1000
    normal clicks above, ratio x 1000 swapped clicks below); positions not in ``measured`` get no swaps."""
    depth = depth or len(values)
    counts = {}
    for k in range(1, len(values)):
        if measured is None or k + 1 in measured:
            lower = round(1000 * values[k] / values[k - 1])
            counts[k] = SwapCounts(100, 1000, 0, 100, 0, lower)
    return propensity_from_swaps(counts, depth)


def ranked(order: list[int]):
    """A version as its collection order (first = rank 1): ranks of any search's logged images."""
    rank = {image: r for r, image in enumerate(order, start=1)}
    return lambda search: np.asarray([rank[int(i)] for i in search.images])


def test_production_curves_record_positions_from_two_and_the_gate_reads_to_the_measured_depth():
    curve = measured_curve([1.0, 0.5, 0.25, 0.2])
    assert curve.estimated_positions == [2, 3, 4]  # the form production makes (tests/unit/ranking/test_propensity)
    assert np.allclose(curve.values, [1.0, 0.5, 0.25, 0.2])
    assert gate_depth(curve, 0) == (4, "swap slice")
    gappy = measured_curve([1.0, 0.5, 0.25, 0.2, 0.1, 0.05], measured={2, 3, 5, 6})
    assert gate_depth(gappy, 0) == (3, "swap slice")  # down to the first gap: position 4 unmeasured
    assert gate_depth(measured_curve([1.0, 0.5], measured=set(), depth=48), 0) == (48, "prior")
    assert gate_depth(PropensityCurve(np.ones(48), []), 12) == (12, "prior")


def test_a_click_moved_up_is_worth_the_ratio_of_examinations():
    curve = measured_curve([1.0, 0.5, 0.25, 0.2])  # measured down to position 4
    search = LoggedSearch("red", np.asarray([10, 11, 12, 13]), np.asarray([1, 2, 3, 4]), np.asarray([0, 0, 1, 0], bool))
    logger = ranked([10, 11, 12, 13])
    moved_up = ranked([12, 10, 11, 13])  # the chosen image first: 1 / 0.25 expected clicks
    assert clicks_per_search([search], logger, moved_up, curve, 4, 10.0)[0] == 1.0  # the logger's own order
    assert clicks_per_search([search], moved_up, logger, curve, 4, 10.0)[0] == 4.0
    assert clicks_per_search([search], moved_up, logger, curve, 4, 3.0)[0] == 3.0  # clipped
    assert clicks_per_search([search], moved_up, logger, curve, 2, 10.0)[0] == 0.0  # the click is below the depth
    result = compare([search, search], logger, moved_up, curve, clip=10.0)
    assert (result.before, result.after, result.depth, result.propensity) == (1.0, 4.0, 4, "swap slice")
    assert result.lower_bound == 3.0 and result.chosen_clicks == 2  # both searches gain 3: no spread


def test_an_image_one_version_ranks_below_the_depth_credits_neither():
    curve = measured_curve([1.0, 0.5, 0.25, 0.2])
    search = LoggedSearch("red", np.asarray([10, 11, 12, 13]), np.asarray([1, 2, 3, 4]), np.asarray([0, 0, 1, 0], bool))
    logger = ranked([10, 11, 12, 13])
    buries = ranked([10, 11, 13, 20, 21, 12])  # puts the chosen image 12 at 6, below the depth of 4
    result = compare([search], logger, buries, curve)
    assert (result.before, result.after, result.chosen_clicks) == (0.0, 0.0, 0)


def test_collection_ranks_count_every_image_above():
    scores = np.asarray([0.1, 0.9, 0.3, 0.9, 0.5])
    row = {100 + r: r for r in range(5)}
    assert list(collection_ranks(scores, row, np.asarray([104, 100, 101, 103]))) == [3, 5, 1, 1]  # ties: better rank


def simulated_logs(shown: list[int], attractiveness: np.ndarray, examination: np.ndarray, n: int, seed: int):
    """``n`` searches that all showed ``shown``, clicked by the position-based model."""
    rng = np.random.default_rng(seed)
    images, positions = np.asarray(shown), np.arange(1, len(shown) + 1)
    searches = []
    for _ in range(n):
        seen = rng.random(len(images)) < examination[: len(images)]
        chosen = seen & (rng.random(len(images)) < attractiveness[images])
        searches.append(LoggedSearch("q", images, positions, chosen))
    return searches


def shared_truth(first: list[int], second: list[int], attractiveness, examination, depth: int) -> tuple[float, float]:
    """Each version's true expected clicks on the images both put within the depth."""
    both = set(first[:depth]) & set(second[:depth])
    return tuple(
        float(sum(examination[r] * attractiveness[i] for r, i in enumerate(o[:depth]) if i in both))
        for o in (first, second)
    )


@pytest.mark.parametrize("trial", [0, 1, 2])
def test_the_estimate_is_the_same_whichever_version_logged_the_searches(trial):
    """The audit's toy (/tmp/audit-h4/gate_bias.py): 100 candidates, 15% wanted, a weak and a better version order
    different sets, each logs its own top 48, clicks at examination 1/position^0.5 (the simulator's). Re-ranking
    the logger's list among itself gave B - A = +0.60 when A logged, +0.00 when B logged (truth +1.78 in the top
    10). Crediting only what both versions put in the top 10 gives each version's true clicks there either way."""
    rng = np.random.default_rng(trial)
    examination = 1 / np.arange(1, 49) ** 0.5
    curve = measured_curve(list(examination[:10]))  # the swap slice measured positions 2..10 exactly
    attractiveness = np.where(rng.random(100) < 0.15, 0.9, 0.05)
    wanted = (attractiveness > 0.5).astype(float)
    weak, better = (list(np.argsort(-(wanted * w + rng.normal(0, 1.0, 100)))) for w in (1.0, 2.0))
    truth_weak, truth_better = shared_truth(weak, better, attractiveness, examination, 10)
    assert set(weak[:10]) != set(better[:10])  # the versions bring up different images
    differences = []
    for n, logger in enumerate((weak, better)):
        searches = simulated_logs(logger[:48], attractiveness, examination, 4000, seed=10 * trial + n)
        result = compare(searches, ranked(weak), ranked(better), curve)
        assert result.depth == 10 and result.propensity == "swap slice"
        assert result.before == pytest.approx(truth_weak, abs=0.05 * truth_weak + 0.02)
        assert result.after == pytest.approx(truth_better, abs=0.05 * truth_better + 0.02)
        differences.append(result.difference)
    assert abs(differences[0] - differences[1]) < 0.05 + 0.05 * abs(truth_better - truth_weak)


def test_the_gate_reads_new_pairs_and_records_seen_pairs_and_repeat_queries_apart():
    curve = measured_curve([1.0, 0.5, 0.25, 0.2])
    chosen = np.asarray([0, 0, 1, 1], bool)
    old = LoggedSearch("red", np.asarray([10, 11, 12, 13]), np.asarray([1, 2, 3, 4]), chosen)
    new = LoggedSearch("crimson", np.asarray([10, 11, 12, 13]), np.asarray([1, 2, 3, 4]), chosen)
    logger = ranked([10, 11, 12, 13])
    candidate = ranked([12, 13, 10, 11])  # 12: 3 -> 1 (x4), 13: 4 -> 2 (x2.5)
    result = compare([old, new], logger, candidate, curve, trained_pairs={("red", 12)}, trained_queries={"red"})
    parts = result.parts
    assert parts["seen pairs"]["after"] == pytest.approx(4.0 / 2) and parts["seen pairs"]["chosen_clicks"] == 1
    assert parts["new pairs"]["after"] == pytest.approx((2.5 + 4.0 + 2.5) / 2)
    assert parts["new pairs"]["chosen_clicks"] == 3
    assert parts["all"]["after"] == pytest.approx((6.5 + 6.5) / 2)
    assert parts["repeat queries"]["searches"] == 1 and parts["repeat queries"]["after"] == pytest.approx(6.5)
    assert parts["new queries"]["searches"] == 1 and parts["new queries"]["after"] == pytest.approx(6.5)
    assert (result.gates_on, result.after, result.chosen_clicks) == ("new pairs", parts["new pairs"]["after"], 3)

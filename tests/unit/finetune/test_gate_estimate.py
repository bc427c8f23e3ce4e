"""The fine-tune gate's counterfactual clicks: pinned on a hand-computed case, unbiased for a version that did
not log the searches, and blind to positions whose propensity the product does not know."""

import numpy as np

from ranking.finetune.counterfactual import LoggedSearch, clicks_per_search, compare, gate_depth
from ranking.propensity import PropensityCurve, power_law


def by_score(order: dict[int, float]):
    """A version as its score of each image (higher first)."""
    return lambda search: np.asarray([order[int(i)] for i in search.images])


def test_a_click_moved_up_is_worth_the_ratio_of_examinations():
    curve = PropensityCurve(np.asarray([1.0, 0.5, 0.25, 0.2]), [1, 2, 3])  # measured down to position 4
    search = LoggedSearch("red", np.asarray([10, 11, 12, 13]), np.asarray([1, 2, 3, 4]), np.asarray([0, 0, 1, 0], bool))
    logger = by_score({10: 4, 11: 3, 12: 2, 13: 1})
    moved_up = by_score({12: 4, 10: 3, 11: 2, 13: 1})  # the chosen image first: 1 / 0.25 expected clicks
    assert clicks_per_search([search], logger, curve, 4, 10.0)[0] == 1.0  # the logger's own order: the click
    assert clicks_per_search([search], moved_up, curve, 4, 10.0)[0] == 4.0
    assert clicks_per_search([search], moved_up, curve, 4, 3.0)[0] == 3.0  # clipped
    assert clicks_per_search([search], moved_up, curve, 2, 10.0)[0] == 0.0  # the click is below the depth
    result = compare([search, search], logger, moved_up, curve, clip=10.0)
    assert (result.before, result.after, result.depth, result.propensity) == (1.0, 4.0, 4, "swap slice")
    assert result.lower_bound == 3.0 and result.chosen_clicks == 2  # both searches gain 3: no spread


def test_the_depth_is_what_the_swap_slice_measured_or_the_prior_over_the_list():
    assert gate_depth(PropensityCurve(np.ones(48), [1, 2, 3, 5]), 0) == (4, "swap slice")  # down to the first gap
    assert gate_depth(PropensityCurve(np.ones(48), []), 0) == (48, "prior")
    assert gate_depth(PropensityCurve(np.ones(48), []), 12) == (12, "prior")


def simulated_logs(logger_order: list[int], attractiveness: np.ndarray, curve: PropensityCurve, n: int, seed: int):
    """``n`` searches that all showed ``logger_order``, clicked by the position-based model."""
    rng = np.random.default_rng(seed)
    images, positions = np.asarray(logger_order), np.arange(1, len(logger_order) + 1)
    searches = []
    for _ in range(n):
        examined = rng.random(len(images)) < curve.values[: len(images)]
        chosen = examined & (rng.random(len(images)) < attractiveness[images])
        searches.append(LoggedSearch("q", images, positions, chosen))
    return searches


def expected_clicks(order: list[int], attractiveness: np.ndarray, curve: PropensityCurve) -> float:
    return float(sum(curve.values[r] * attractiveness[i] for r, i in enumerate(order)))


def test_the_estimate_does_not_favour_the_version_that_logged_the_searches():
    """The logger shows the wanted images low; another version would show them first. Recall of what users
    chose can only see the logger's page; the estimate recovers each version's true expected clicks."""
    curve = power_law(10, 1.0)
    curve = PropensityCurve(curve.values, list(range(1, 10)))
    attractiveness = np.asarray([0.05] * 7 + [0.9] * 3)  # images 7, 8, 9 are wanted
    logger = list(range(10))  # the wanted images at 8-10
    better = [9, 8, 7, 0, 1, 2, 3, 4, 5, 6]
    searches = simulated_logs(logger, attractiveness, curve, 4000, seed=3)
    score = {i: -r for r, i in enumerate(better)}
    result = compare(searches, by_score({i: -i for i in logger}), by_score(score), curve)
    truth_logger, truth_better = (expected_clicks(o, attractiveness, curve) for o in (logger, better))
    assert abs(result.before - truth_logger) < 0.03 * truth_logger + 0.01
    assert abs(result.after - truth_better) < 0.06 * truth_better  # 1.70 expected clicks against 0.43
    assert result.lower_bound > 0.9

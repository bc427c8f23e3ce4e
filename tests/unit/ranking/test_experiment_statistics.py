"""Experiment statistics pinned against reference implementations (scipy) and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats

from ranking.experiments.statistics import (
    RatioEstimate,
    benjamini_hochberg,
    compare,
    minimum_detectable_effect,
    ratio,
    sample_ratio_check,
    sign_test,
)


def test_ratio_of_per_user_means_matches_welchs_test():
    """With one unit per user (denominator 1) the delta method is the unequal-variance z-test."""
    rng = np.random.default_rng(0)
    control, treatment = rng.normal(0.30, 0.2, 4000), rng.normal(0.31, 0.25, 3000)
    result = compare(ratio(control, np.ones_like(control)), ratio(treatment, np.ones_like(treatment)))
    welch = stats.ttest_ind(treatment, control, equal_var=False)
    assert result.difference == pytest.approx(treatment.mean() - control.mean())
    assert result.p_value == pytest.approx(welch.pvalue, rel=0.01)
    se = math.sqrt(control.var(ddof=1) / len(control) + treatment.var(ddof=1) / len(treatment))
    assert result.high - result.low == pytest.approx(2 * 1.959964 * se, rel=1e-4)


def test_delta_method_variance_matches_a_hand_computed_case():
    # Three users: clicks (2, 0, 4) over searches (4, 2, 4): R = 6/10.
    num, den = np.array([2.0, 0.0, 4.0]), np.array([4.0, 2.0, 4.0])
    r = 0.6
    var_n, var_d, cov = np.var(num, ddof=1), np.var(den, ddof=1), np.cov(num, den, ddof=1)[0, 1]
    expected = (var_n - 2 * r * cov + r**2 * var_d) / (3 * den.mean() ** 2)
    estimate = ratio(num, den)
    assert estimate.value == pytest.approx(0.6) and estimate.variance == pytest.approx(expected)
    assert var_n == pytest.approx(4.0) and var_d == pytest.approx(4 / 3) and cov == pytest.approx(2.0)
    assert estimate.variance == pytest.approx((4.0 - 2.4 + 0.36 * 4 / 3) / (3 * (10 / 3) ** 2))


def test_delta_method_agrees_with_a_bootstrap_over_users():
    """Users differ in how many searches they make and how clicky they are: clustered data."""
    rng = np.random.default_rng(1)
    searches = rng.integers(1, 30, 2000).astype(float)
    clickiness = rng.beta(2, 5, 2000)
    clicks = rng.binomial(searches.astype(int), clickiness).astype(float)
    estimate = ratio(clicks, searches)
    picks = rng.integers(0, 2000, size=(2000, 2000))
    boot = clicks[picks].sum(axis=1) / searches[picks].sum(axis=1)
    assert estimate.standard_error == pytest.approx(boot.std(ddof=1), rel=0.1)
    naive_se = math.sqrt(estimate.value * (1 - estimate.value) / searches.sum())  # searches as independent
    assert estimate.standard_error > 1.5 * naive_se  # why the user is the unit


def test_users_without_a_denominator_are_left_out_and_degenerate_inputs_are_safe():
    assert ratio(np.array([1.0, 5.0]), np.array([2.0, 0.0])).users == 1
    empty = ratio(np.array([]), np.array([]))
    assert empty.users == 0 and math.isnan(empty.value)
    same = compare(RatioEstimate(0.5, 0.0, 1), RatioEstimate(0.5, 0.0, 1))
    assert same.p_value == 1.0


def test_sample_ratio_mismatch_matches_scipy_chisquare():
    check = sample_ratio_check([5100, 4900], [1, 1])
    assert check.p_value == pytest.approx(stats.chisquare([5100, 4900]).pvalue)
    assert not check.mismatch  # p = 0.046: unremarkable at the 0.001 threshold
    broken = sample_ratio_check([5300, 4700], [1, 1])
    assert broken.mismatch and broken.p_value < 1e-8
    weighted = sample_ratio_check([2500, 7500], [1, 3])
    assert weighted.expected == pytest.approx([2500, 7500]) and weighted.p_value == pytest.approx(1.0)


def test_sign_test_is_the_two_sided_binomial_test():
    assert sign_test(60, 40) == pytest.approx(stats.binomtest(60, 100, 0.5).pvalue)
    assert sign_test(0, 0) == 1.0
    # Hand-computed: 5 wins of 5 -> 2 * 0.5^5 = 0.0625.
    assert sign_test(5, 0) == pytest.approx(0.0625)


def test_benjamini_hochberg_matches_a_hand_computation():
    # sorted: 0.01 (rank 1), 0.03 (2), 0.04 (3), 0.20 (4); p * 4 / rank = 0.04, 0.06, 0.0533, 0.20;
    # running minimum from the largest: 0.20, 0.0533, 0.0533, 0.04.
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.20])
    assert q == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])


def test_benjamini_hochberg_skips_missing_p_values_and_keeps_the_order_of_q_values():
    q = benjamini_hochberg([float("nan"), 0.5, 0.9])
    assert math.isnan(q[0])
    assert q[1:] == pytest.approx([0.9, 0.9])  # 0.5 * 2 / 1 = 1.0 > 0.9 * 2 / 2
    assert benjamini_hochberg([0.8, 0.9, 0.95]) == pytest.approx([0.95, 0.95, 0.95])


def test_minimum_detectable_effect_matches_a_hand_computation():
    # se = sqrt(0.0004 + 0.0005) = 0.03; z_0.975 + z_0.8 = 1.959964 + 0.841621 = 2.801585
    control, treatment = RatioEstimate(0.20, 0.0004, 500), RatioEstimate(0.22, 0.0005, 480)
    assert minimum_detectable_effect(control, treatment) == pytest.approx(0.0840476, abs=1e-6)
    assert math.isnan(minimum_detectable_effect(RatioEstimate(0.2, float("nan"), 1), treatment))

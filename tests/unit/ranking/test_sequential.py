"""The mSPRT (always-valid inference) pinned against hand-computed cases and an A/A replay under peeking."""

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from ranking.experiments.sequential import (
    always_valid,
    compare_paths,
    half_width,
    mixture_likelihood_ratio,
    ratio_path,
)
from ranking.experiments.statistics import compare, ratio


def test_mixture_likelihood_ratio_matches_a_hand_computed_case():
    # θ̂ = 0.1, V = 0.01, τ = 0.1 (τ² = 0.01): Λ = sqrt(1/2) · exp(0.01 · 0.01 / (2 · 0.01 · 0.02)) = e^0.25 / √2.
    assert mixture_likelihood_ratio(0.1, 0.01, 0.1) == pytest.approx(math.exp(0.25) / math.sqrt(2))
    # Interval half-width at α = 0.05: sqrt(0.01 · 0.02 / 0.01 · (log 2 + 2 log 20)).
    assert half_width(0.01, 0.1, 0.05) == pytest.approx(math.sqrt(0.02 * (math.log(2) + 2 * math.log(20))))
    assert mixture_likelihood_ratio(0.3, 0.0, 0.1) == 1.0  # no variance yet: no evidence


def _mixture_by_integration(difference: float, variance: float, tau: float) -> float:
    """Λ from its definition (Johari, Pekelis & Walsh, eq. for the normal mixture): the likelihood ratio of
    θ against 0 for an estimate θ̂ ~ N(θ, V), averaged over θ ~ N(0, τ²), by numerical integration."""

    def integrand(theta):
        sd = math.sqrt(variance)
        ratio = stats.norm.pdf(difference, theta, sd) / stats.norm.pdf(difference, 0, sd)
        return ratio * stats.norm.pdf(theta, 0, tau)

    reach = abs(difference) + 12 * tau  # the integrand peaks at θ̂ τ² / (V + τ²), inside this
    return integrate.quad(integrand, -reach, reach, points=[difference])[0]


def test_msprt_with_v_unequal_to_tau_squared_matches_the_definition_integrated_numerically():
    # V = 0.0004 and τ² = 0.0009 (τ = 0.03), θ̂ = 0.05: unlike the case above, swapping V and τ² in the
    # closed form changes every number (Λ 4.83 -> 1.28), so this catches the two being exchanged.
    difference, variance, tau, alpha = 0.05, 0.0004, 0.03, 0.05
    expected = _mixture_by_integration(difference, variance, tau)
    assert expected == pytest.approx(4.8266, abs=1e-3)  # by hand: sqrt(4/13) · exp(2.25/1.04)
    assert mixture_likelihood_ratio(difference, variance, tau) == pytest.approx(expected, rel=1e-6)
    found = always_valid(np.array([difference]), np.array([variance]), np.array([tau]), np.array([True]), alpha)
    assert found.p_value == pytest.approx(1 / expected, rel=1e-6)

    # The interval holds the θ0 whose Λ (of θ̂ - θ0) stays below 1/α: its ends solved numerically.
    def excess(theta0):
        return _mixture_by_integration(difference - theta0, variance, tau) - 1 / alpha

    low = optimize.brentq(excess, difference - 0.5, difference)
    high = optimize.brentq(excess, difference, difference + 0.5)
    assert found.interval == pytest.approx((low, high), rel=1e-5)
    assert half_width(variance, tau, alpha) == pytest.approx((high - low) / 2, rel=1e-5)


def test_always_valid_p_value_is_the_running_minimum_and_never_rises():
    differences = np.array([0.0, 0.5, 0.05, 0.0])
    found = always_valid(differences, np.full(4, 0.01), np.full(4, 0.1), np.ones(4, bool), 0.05)
    by_hand = np.minimum.accumulate(np.minimum(1 / mixture_likelihood_ratio(differences, 0.01, 0.1), 1))
    assert found.p_values == pytest.approx(by_hand)
    assert np.all(np.diff(found.p_values) <= 0) and found.p_value == found.p_values[1] < 0.05
    low, high = found.interval
    assert low == pytest.approx(0.5 - float(half_width(0.01, 0.1, 0.05)))  # the running intersection keeps the best
    assert high == pytest.approx(0.0 + float(half_width(0.01, 0.1, 0.05)))


def test_looks_before_monitoring_starts_do_not_count():
    found = always_valid(
        np.array([5.0, 0.0]), np.array([0.01, 0.01]), np.array([0.1, 0.1]), np.array([False, True]), 0.05
    )
    assert found.p_values[0] == 1.0 and found.p_value > 0.5


def test_ratio_path_equals_the_delta_method_over_per_user_sums_at_every_point():
    rng = np.random.default_rng(4)
    user = rng.integers(0, 40, 300)
    arm = user % 2 == 0
    clicks = rng.poisson(0.5, 300).astype(float)
    path = ratio_path(arm, user, clicks, np.ones(300))
    for i in (60, 150, 299):
        seen = np.arange(300) <= i
        users = np.unique(user[seen & arm])
        per_user_clicks = np.array([clicks[seen & (user == u)].sum() for u in users])
        per_user_searches = np.array([(seen & (user == u)).sum() for u in users], float)
        expected = ratio(per_user_clicks, per_user_searches)
        assert path.users[i] == expected.users
        assert path.value[i] == pytest.approx(expected.value) and path.variance[i] == pytest.approx(expected.variance)


def _peeking_a_a(replays: int, searches: int, every: int, seed: int):
    """A/A replays: 400 users with Beta(2, 2) clickiness, sticky arms, Poisson clicks; peek every ``every``."""
    rng = np.random.default_rng(seed)
    sequential = fixed = 0
    looks = np.arange(every - 1, searches, every)
    for _ in range(replays):
        clickiness = rng.beta(2, 2, 400) / 0.5
        arm_of = rng.random(400) < 0.5
        user = rng.integers(0, 400, searches)
        clicks = rng.poisson(0.3 * clickiness[user]).astype(float)
        control = ratio_path(~arm_of[user], user, clicks, np.ones(searches))
        treatment = ratio_path(arm_of[user], user, clicks, np.ones(searches))
        test = compare_paths(control, treatment, 0.1, 30, 0.05)
        sequential += bool((test.p_values[looks] < 0.05).any())
        z = np.abs(treatment.value - control.value) / np.sqrt(control.variance + treatment.variance)
        fixed_p = 2 * stats.norm.sf(z[looks])
        ready = (control.users[looks] >= 30) & (treatment.users[looks] >= 30)
        fixed += bool((fixed_p[ready] < 0.05).any())
    return sequential / replays, fixed / replays


def test_a_a_false_positives_under_peeking_stay_below_alpha_only_with_the_msprt():
    sequential, fixed = _peeking_a_a(replays=200, searches=1500, every=50, seed=7)
    assert sequential <= 0.05
    assert fixed > 0.10  # the fixed-horizon test read at every look: why the default is sequential


def test_fixed_comparison_at_the_end_agrees_with_the_path():
    rng = np.random.default_rng(5)
    user = rng.integers(0, 100, 500)
    clicks = rng.poisson(0.4, 500).astype(float)
    arm = user % 2 == 1
    a, b = ratio_path(~arm, user, clicks, np.ones(500)), ratio_path(arm, user, clicks, np.ones(500))

    def per(mask):
        return ratio(
            np.bincount(user[mask], clicks[mask], 100)[np.unique(user[mask])],
            np.bincount(user[mask], None, 100)[np.unique(user[mask])].astype(float),
        )

    fixed = compare(per(~arm), per(arm))
    assert b.value[-1] - a.value[-1] == pytest.approx(fixed.difference)
    assert a.variance[-1] + b.variance[-1] == pytest.approx(((fixed.high - fixed.low) / (2 * 1.959964)) ** 2, rel=1e-4)

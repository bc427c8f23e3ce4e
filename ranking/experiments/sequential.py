"""Always-valid inference: statistics that stay valid however often the results are read.

The page and the API are live, and people look every day. A fixed-horizon p-value read at every look
and acted on the first time it drops below 0.05 declares far more than 5% of A/A tests (measured in
``docs/experiments.md``). The mixture sequential probability ratio test (mSPRT) of Johari, Pekelis &
Walsh ("Always Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 2022;
arXiv 1512.04922, 2015) fixes that. For a difference estimate θ̂ with variance V (both from the delta
method over users, ``ranking.experiments.statistics``), the likelihood ratio of "difference θ" against
"no difference", averaged over θ ~ N(0, τ²), is

    Λ = sqrt(V / (V + τ²)) · exp(τ² θ̂² / (2 V (V + τ²)))

Under no difference Λ is a non-negative martingale with mean 1 along the experiment, so by Ville's
inequality the chance that it *ever* reaches 1/α is at most α. The always-valid p-value is therefore
the running minimum of 1/Λ over the experiment's history (monotone non-increasing, valid at whatever
moment someone stops), and the always-valid interval the running intersection of

    θ̂ ± sqrt(V (V + τ²) / τ² · (log((V + τ²) / V) − 2 log α))

(the θ whose Λ stays below 1/α). The history is evaluated after *every* search, in search-time order,
with the clicks known today: every possible schedule of looks is covered, so daily, hourly or
continuous reading are all safe.

τ (the mixing spread) is what the test is most sensitive to: the experiment's expected effect (a
relative difference, default 10%) times the control's current value; for interleaving, times the
current share of decided searches. Like the variance, it is a plug-in of a nuisance estimate (Johari
et al., section 5); the A/A replays in ``bench/simulate_experiments.py`` measure that the error rate
holds with it.

Monitoring starts once every arm has ``start_users`` users (the experiment's minimum, at least
``MIN_MONITORED_USERS``): with a handful of users the plugged-in variance is too noisy and one lucky
early look would stay the minimum forever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Below about 30 users per arm the delta-method variance is itself too uncertain to plug in (the
# normal approximation of a ratio of sums needs a few dozen units); the A/A replays use 50.
MIN_MONITORED_USERS = 30


def mixture_likelihood_ratio(difference, variance, tau):
    """Λ of the mSPRT with a N(0, τ²) mixture; 1 (no evidence) where the variance or τ is not positive."""
    d, v, t2 = (np.asarray(x, dtype=np.float64) for x in (difference, variance, np.square(tau)))
    valid = (v > 0) & (t2 > 0)
    v, t2 = np.where(valid, v, 1.0), np.where(valid, t2, 1.0)
    log_ratio = 0.5 * np.log(v / (v + t2)) + t2 * d**2 / (2 * v * (v + t2))
    with np.errstate(over="ignore"):
        return np.where(valid, np.exp(log_ratio), 1.0)


def half_width(variance, tau, alpha: float):
    """Half-width of the always-valid (1 - alpha) interval at one look."""
    v, t2 = np.asarray(variance, dtype=np.float64), np.square(np.asarray(tau, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.sqrt(v * (v + t2) / t2 * (np.log((v + t2) / v) - 2 * math.log(alpha)))
    return np.where((v > 0) & (t2 > 0), width, np.inf)


@dataclass(frozen=True)
class AlwaysValid:
    """The mSPRT's history after each search: always-valid p-values and interval bounds (running)."""

    p_values: np.ndarray  # running minimum of 1/Λ; 1 before monitoring starts
    low: np.ndarray  # running maximum of the lower bounds
    high: np.ndarray  # running minimum of the upper bounds

    @property
    def p_value(self) -> float:
        return float(self.p_values[-1]) if len(self.p_values) else 1.0

    @property
    def interval(self) -> tuple[float, float]:
        if not len(self.low) or not np.isfinite(self.low[-1]):
            return float("nan"), float("nan")
        return float(self.low[-1]), float(self.high[-1])


def always_valid(difference, variance, tau, monitored, alpha: float) -> AlwaysValid:
    """Running mSPRT over a history of (θ̂, V, τ); ``monitored`` marks the looks that count."""
    monitored = np.asarray(monitored, dtype=bool)
    inverse = 1.0 / mixture_likelihood_ratio(difference, variance, tau)
    p_values = np.minimum.accumulate(np.where(monitored, np.minimum(inverse, 1.0), 1.0)) if len(inverse) else inverse
    width = half_width(variance, tau, alpha)
    d = np.asarray(difference, dtype=np.float64)
    low = np.where(monitored & np.isfinite(width), d - width, -np.inf)
    high = np.where(monitored & np.isfinite(width), d + width, np.inf)
    if len(low):
        low, high = np.maximum.accumulate(low), np.minimum.accumulate(high)
    return AlwaysValid(p_values, low, high)


@dataclass(frozen=True)
class RatioPath:
    """One arm's ratio metric after each search of the whole experiment (all arms, in time order)."""

    value: np.ndarray
    variance: np.ndarray  # delta method over users, as ``statistics.ratio``
    users: np.ndarray  # users with a positive denominator so far


def _user_cumulative(user: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each search's user's running total of ``values`` up to and including that search."""
    order = np.argsort(user, kind="stable")
    sorted_values = values[order]
    total = np.cumsum(sorted_values)
    starts = np.r_[True, user[order][1:] != user[order][:-1]] if len(user) else np.array([], bool)
    group = np.cumsum(starts) - 1
    base = (total - sorted_values)[starts][group]
    out = np.empty_like(total)
    out[order] = total - base
    return out


def ratio_path(in_arm, user, numerators, denominators) -> RatioPath:
    """The delta-method ratio of one arm after every search, from running per-user sums.

    ``in_arm`` marks the arm's searches among all searches (time order), ``user`` is an integer per
    user, ``numerators``/``denominators`` each search's contribution (clicks, 1 search, ...). A user's
    sums change with each of their searches; the sums over users of N, D, N², D² and N·D change by
    the difference of that user's squares, so the whole history costs one pass. Equals
    ``statistics.ratio`` over the per-user sums at every point (tested); assumes, as every metric in
    ``results.METRICS`` does, that a user with no denominator has no numerator either.
    """
    in_arm = np.asarray(in_arm, dtype=bool)
    user = np.asarray(user)
    x = np.where(in_arm, np.asarray(numerators, dtype=np.float64), 0.0)
    y = np.where(in_arm, np.asarray(denominators, dtype=np.float64), 0.0)
    n_after, d_after = _user_cumulative(user, x), _user_cumulative(user, y)
    n_before, d_before = n_after - x, d_after - y
    users = np.cumsum(in_arm & (d_after > 0) & (d_before <= 0))
    s_n, s_d = np.cumsum(x), np.cumsum(y)
    s_nn = np.cumsum(n_after**2 - n_before**2)
    s_dd = np.cumsum(d_after**2 - d_before**2)
    s_nd = np.cumsum(n_after * d_after - n_before * d_before)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = s_n / s_d
        var_n = (s_nn - s_n**2 / users) / (users - 1)
        var_d = (s_dd - s_d**2 / users) / (users - 1)
        cov = (s_nd - s_n * s_d / users) / (users - 1)
        mean_d = s_d / users
        variance = (var_n - 2 * value * cov + value**2 * var_d) / (users * mean_d**2)
    variance = np.where(users > 1, np.maximum(variance, 0.0), np.nan)
    return RatioPath(np.where(users > 0, value, np.nan), variance, users)


def compare_paths(
    control: RatioPath, treatment: RatioPath, expected_effect: float, start_users: int, alpha: float
) -> AlwaysValid:
    """Always-valid test of treatment minus control along the experiment's history."""
    difference = treatment.value - control.value
    variance = control.variance + treatment.variance
    tau = expected_effect * np.abs(control.value)
    monitored = (control.users >= start_users) & (treatment.users >= start_users) & np.isfinite(difference)
    return always_valid(np.nan_to_num(difference), np.nan_to_num(variance), np.nan_to_num(tau), monitored, alpha)


def preference_test(
    path: RatioPath, decided_share, expected_effect: float, start_users: int, alpha: float
) -> AlwaysValid:
    """Always-valid test that an interleaving preference (wins A − wins B per search) is zero."""
    tau = expected_effect * np.asarray(decided_share, dtype=np.float64)
    monitored = (path.users >= start_users) & np.isfinite(path.value)
    return always_valid(np.nan_to_num(path.value), np.nan_to_num(path.variance), tau, monitored, alpha)

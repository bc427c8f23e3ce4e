"""Statistics for experiments, with the user as the unit of analysis.

Every metric is a ratio of per-user sums, R = sum(numerator_u) / sum(denominator_u) (clicks per
search: clicks over searches; mean rating: rating utility over ratings). Searches by the same user
are not independent (a user who clicks a lot clicks a lot in every search), so treating searches as
independent would make intervals too narrow. The delta method gives the variance of R from the
per-user pairs (Deng, Lu & Litz, "Applying the Delta Method in Metric Analytics", KDD 2018):

    var(R) ≈ (var(N) - 2 R cov(N, D) + R² var(D)) / (n · mean(D)²)

Two arms are independent samples of users, so the difference of their ratios has the sum of the
variances; a normal approximation gives the 95% interval and the two-sided p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class RatioEstimate:
    value: float
    variance: float
    users: int

    @property
    def standard_error(self) -> float:
        return math.sqrt(max(self.variance, 0.0))


def ratio(numerators: np.ndarray, denominators: np.ndarray) -> RatioEstimate:
    """The ratio of sums over users and its delta-method variance. Users with a zero denominator are left out."""
    num = np.asarray(numerators, dtype=np.float64)
    den = np.asarray(denominators, dtype=np.float64)
    keep = den > 0
    num, den = num[keep], den[keep]
    n = len(den)
    if n == 0:
        return RatioEstimate(float("nan"), float("nan"), 0)
    value = float(num.sum() / den.sum())
    if n < 2:
        return RatioEstimate(value, float("nan"), n)
    mean_d = den.mean()
    var_n, var_d = num.var(ddof=1), den.var(ddof=1)
    cov = float(np.cov(num, den, ddof=1)[0, 1])
    variance = (var_n - 2 * value * cov + value**2 * var_d) / (n * mean_d**2)
    return RatioEstimate(value, float(variance), n)


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control, with its 95% interval and two-sided p-value."""

    control: float
    treatment: float
    difference: float
    low: float
    high: float
    p_value: float
    method: str = "fixed-horizon"  # or "always-valid" (ranking.experiments.sequential)

    @property
    def relative(self) -> float:
        return self.difference / self.control if self.control else float("nan")

    def as_dict(self) -> dict:
        return {**self.__dict__, "relative": self.relative}


def compare(control: RatioEstimate, treatment: RatioEstimate, confidence: float = 0.95) -> Comparison:
    difference = treatment.value - control.value
    se = math.sqrt(control.variance + treatment.variance) if control.users > 1 and treatment.users > 1 else float("nan")
    if not se or math.isnan(se):
        p = 1.0 if difference == 0 or math.isnan(difference) else float("nan")
        return Comparison(control.value, treatment.value, difference, float("nan"), float("nan"), p)
    z = stats.norm.ppf(0.5 + confidence / 2)
    p_value = float(2 * stats.norm.sf(abs(difference) / se))
    return Comparison(control.value, treatment.value, difference, difference - z * se, difference + z * se, p_value)


@dataclass(frozen=True)
class SampleRatio:
    """Sample-ratio-mismatch check: do the users per arm match the configured weights?"""

    observed: list[int]
    expected: list[float]
    p_value: float
    mismatch: bool


def sample_ratio_check(users_per_arm: list[int], weights: list[float], threshold: float = 0.001) -> SampleRatio:
    """Chi-square goodness of fit; p below ``threshold`` means the split is broken (assignment or logging bug)."""
    total = sum(users_per_arm)
    weight = float(sum(weights))
    shares = np.asarray(weights, dtype=np.float64) / weight if weight > 0 else np.zeros(len(weights))
    expected = (shares * total).tolist()
    if total == 0 or len(users_per_arm) < 2:
        return SampleRatio(list(users_per_arm), expected, 1.0, False)
    observed = np.asarray(users_per_arm, dtype=np.float64)
    if np.any((shares == 0) & (observed > 0)):
        # Users in an arm that should have none (weight 0; refused at start, but rows from before remain):
        # a certain mismatch, where chi-square would divide by zero.
        return SampleRatio(list(users_per_arm), expected, 0.0, True)
    kept = shares > 0
    p_value = float(stats.chisquare(observed[kept], np.asarray(expected)[kept]).pvalue) if kept.sum() > 1 else 1.0
    return SampleRatio(list(users_per_arm), expected, p_value, p_value < threshold)


def sign_test(wins_a: int, wins_b: int) -> float:
    """Two-sided binomial test that decided searches split evenly between two interleaved rankers."""
    decided = wins_a + wins_b
    if decided == 0:
        return 1.0
    return float(stats.binomtest(wins_a, decided, 0.5).pvalue)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given.

    Reading several metrics at once and calling any p < 0.05 a finding inflates false findings; BH keeps
    the expected share of false ones among those called below ``q`` (Benjamini & Hochberg, JRSS B 1995).
    q_(i) = min over k >= i of p_(k) * m / k, capped at 1, over the m p-values that exist (NaN stays NaN).
    """
    present = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    out = [float("nan")] * len(p_values)
    m = len(present)
    running = 1.0
    for rank, (p, i) in reversed(list(enumerate(sorted(present), start=1))):
        running = min(running, p * m / rank)
        out[i] = running
    return out


def minimum_detectable_effect(
    control: RatioEstimate, treatment: RatioEstimate, alpha: float = 0.05, power: float = 0.8
) -> float:
    """The smallest absolute difference a two-sided fixed-horizon test at ``alpha`` finds with ``power``,
    given the arms' variances so far: (z_(1-alpha/2) + z_power) * sqrt(var_c + var_t). NaN with fewer than
    two users in an arm. More traffic shrinks the variances, and the effect with them, as 1/sqrt(users)."""
    if control.users < 2 or treatment.users < 2:
        return float("nan")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(control.variance + treatment.variance))

"""The promotion gate: does a candidate ranker beat the serving order on searches it never trained on?

Both orders are scored on the gate window (the most recent logged searches; ``ranking.training_data.
split_windows``), which neither training nor early stopping read, with the
counterfactual DCG@10 of ``ranking.ltr.counterfactual_dcg``, per search, so the comparison is paired:
the same searches, the same clicks, two orders. The clicks weigh their searches' trust (``feedback.trust``),
as in training. The candidate is promoted only if

- its mean beats the serving order's by the relative ``margin`` (``LOUPE_PROMOTION_MARGIN``), and
- the gain is not noise: the one-sided lower confidence bound of the mean paired difference, from a
  bootstrap over searches, is above zero, and
- the gain is not concentrated: at least ``KEEP_SHARE`` (half) of it remains once the searches of the
  ``leave_out`` identities that contributed most to it are left out (5, or 2% of the window's distinct
  identities when fewer, at least 1), and again without the top networks (counted the same way).
  A share of the point gain, not the margin or the bootstrap bound again: the counterfactual DCG is
  heavy-tailed (a click at a deep position weighs up to 20), so an honest gain of a few percent loses
  a good part of itself with its top contributors, while a flood's gain lives in its own searches.

The second rule matters when the serving order is already good: a candidate that merely reshuffles it
wins about half of the searches and loses the other half, and must not replace it on a lucky window.
The third is what stops click flooding (issue 19, finding 3): fake identities validate the model they
taught, since the gate window is their traffic too; a gain that a handful of identities or one network
carry is theirs, not the users'. Honest gains are spread over many people and survive losing a few.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Identities (and, separately, networks) whose searches the concentration test removes: 5, or 2% of the
# distinct owners in the window when that is fewer. One network suffices for a flood from one network; in
# a small window (the bench's: ~60 searches by ~55 honest users) removing 5 heavy-tailed IPS contributors
# (a click at a deep position weighs up to 20) took 73% of an honest +7% gain and refused it.
LEAVE_OUT = 5
LEAVE_OUT_SHARE = 0.02
KEEP_SHARE = 0.5  # of the relative gain that must remain without them


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    candidate: float  # mean counterfactual DCG@10 per gate-window search
    serving: float
    relative_gain: float  # candidate / serving - 1 (inf when the serving order scores 0; null in as_dict)
    lower_bound: float  # one-sided lower confidence bound of the mean paired difference
    searches: int
    reason: str
    gain_without_top_identities: float | None = None  # relative gain once the top ``leave_out`` are removed
    gain_without_top_networks: float | None = None

    def as_dict(self) -> dict:
        """JSON-ready: a value that is not a finite number (the gain over a serving order scoring 0) is None.

        PostgreSQL's jsonb refuses ``Infinity``; storing it failed the whole retraining, so no ranker
        could ever be trained while the serving order scored 0 on the gate window (issue 19, finding 8).
        """
        return {k: _json_number(v) for k, v in asdict(self).items()}


def _json_number(value):
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class _Paired:
    candidate: float
    serving: float
    gain: float
    lower: float


def _paired(candidate: np.ndarray, serving: np.ndarray, confidence: float, resamples: int, seed: int) -> _Paired:
    n = len(candidate)
    if n == 0:
        return _Paired(0.0, 0.0, 0.0, 0.0)
    mean_c, mean_s = float(candidate.mean()), float(serving.mean())
    difference = candidate - serving
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lower = float(np.quantile(means, 1.0 - confidence))
    gain = mean_c / mean_s - 1.0 if mean_s > 0 else (float("inf") if mean_c > 0 else 0.0)
    return _Paired(mean_c, mean_s, gain, lower)


def top_contributors(difference: np.ndarray, owners: Sequence[str], k: int) -> set[str]:
    """The ``k`` owners (identities or networks) whose searches add most to the summed paired difference.

    An empty owner is unknown (an old log row, an address that did not parse): never one group.
    """
    totals: dict[str, float] = defaultdict(float)
    for value, owner in zip(difference, owners, strict=True):
        if owner:
            totals[owner] += float(value)
    ranked = sorted((total, owner) for owner, total in totals.items() if total > 0)
    return {owner for _, owner in ranked[-k:]} if k > 0 else set()


def decide(
    candidate: np.ndarray,
    serving: np.ndarray,
    *,
    margin: float,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    identities: Sequence[str] | None = None,
    networks: Sequence[str] | None = None,
    leave_out: int = LEAVE_OUT,
) -> GateDecision:
    """Compare per-search scores of two orders on the same searches (see the module docstring).

    ``identities`` and ``networks`` name each search's identity and arrival network; without them the
    concentration test is not run.
    """
    candidate, serving = np.asarray(candidate, dtype=np.float64), np.asarray(serving, dtype=np.float64)
    if candidate.shape != serving.shape or candidate.ndim != 1:
        raise ValueError("candidate and serving must score the same searches.")
    for owners in (identities, networks):
        if owners is not None and len(owners) != len(candidate):
            raise ValueError("identities and networks must name one owner per search.")
    n = len(candidate)
    if n == 0:
        return GateDecision(False, 0.0, 0.0, 0.0, 0.0, 0, "no gate-window searches")
    whole = _paired(candidate, serving, confidence, resamples, seed)
    without: dict[str, _Paired] = {}
    left_out: dict[str, int] = {}
    for name, owners in (("identities", identities), ("networks", networks)):
        if owners is None:
            continue
        distinct = len({owner for owner in owners if owner})
        k = max(1, min(leave_out, round(LEAVE_OUT_SHARE * distinct)))
        removed = top_contributors(candidate - serving, owners, k)
        left_out[name] = k
        keep = np.array([owner not in removed for owner in owners], dtype=bool)
        without[name] = _paired(candidate[keep], serving[keep], confidence, resamples, seed)
    if math.isinf(whole.gain) and whole.lower > 0:
        reason = (
            f"the serving order scores 0, the candidate {whole.candidate:.4f}; "
            f"lower bound {whole.lower:+.4f} at {confidence:.0%}"
        )
    elif whole.gain < margin:
        reason = f"gain {whole.gain:+.1%} is below the margin {margin:.1%}"
    elif whole.lower <= 0:
        reason = f"gain {whole.gain:+.1%} is not significant (lower bound {whole.lower:+.4f} at {confidence:.0%})"
    else:
        reason = f"gain {whole.gain:+.1%}, lower bound {whole.lower:+.4f} at {confidence:.0%}"
    if whole.gain >= margin and whole.lower > 0:
        for name, rest in without.items():
            if rest.gain < KEEP_SHARE * whole.gain:
                reason = (
                    f"gain {whole.gain:+.1%} is concentrated: without the top {left_out[name]} {name} it is "
                    f"{rest.gain:+.1%}, less than {KEEP_SHARE:.0%} of it"
                )
                break
    promote = whole.gain >= margin and whole.lower > 0
    promote = promote and all(rest.gain >= KEEP_SHARE * whole.gain for rest in without.values())
    return GateDecision(
        promote,
        whole.candidate,
        whole.serving,
        whole.gain,
        whole.lower,
        n,
        reason,
        without["identities"].gain if "identities" in without else None,
        without["networks"].gain if "networks" in without else None,
    )

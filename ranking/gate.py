"""The promotion gate: does a candidate ranker beat the serving order on searches it never trained on?

Both orders are scored on the gate window (the most recent logged searches; ``ranking.training_data.
split_windows``), which neither training nor early stopping read, with the
counterfactual DCG@10 of ``ranking.ltr.counterfactual_dcg``, per search, so the comparison is paired:
the same searches, the same clicks, two orders. The candidate is promoted only if

- its mean beats the serving order's by the relative ``margin`` (``LOUPE_PROMOTION_MARGIN``), and
- the gain is not noise: the one-sided lower confidence bound of the mean paired difference, from a
  bootstrap over searches, is above zero.

The second rule matters when the serving order is already good: a candidate that merely reshuffles it
wins about half of the searches and loses the other half, and must not replace it on a lucky window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    candidate: float  # mean counterfactual DCG@10 per gate-window search
    serving: float
    relative_gain: float  # candidate / serving - 1 (inf when the serving order scores 0; null in as_dict)
    lower_bound: float  # one-sided lower confidence bound of the mean paired difference
    searches: int
    reason: str

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


def decide(
    candidate: np.ndarray,
    serving: np.ndarray,
    *,
    margin: float,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> GateDecision:
    """Compare per-search scores of two orders on the same searches (see the module docstring)."""
    candidate, serving = np.asarray(candidate, dtype=np.float64), np.asarray(serving, dtype=np.float64)
    if candidate.shape != serving.shape or candidate.ndim != 1:
        raise ValueError("candidate and serving must score the same searches.")
    n = len(candidate)
    if n == 0:
        return GateDecision(False, 0.0, 0.0, 0.0, 0.0, 0, "no gate-window searches")
    mean_c, mean_s = float(candidate.mean()), float(serving.mean())
    difference = candidate - serving
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lower = float(np.quantile(means, 1.0 - confidence))
    gain = mean_c / mean_s - 1.0 if mean_s > 0 else (float("inf") if mean_c > 0 else 0.0)
    if math.isinf(gain) and lower > 0:
        reason = f"the serving order scores 0, the candidate {mean_c:.4f}; lower bound {lower:+.4f} at {confidence:.0%}"
    elif gain < margin:
        reason = f"gain {gain:+.1%} is below the margin {margin:.1%}"
    elif lower <= 0:
        reason = f"gain {gain:+.1%} is not significant (lower bound {lower:+.4f} at {confidence:.0%})"
    else:
        reason = f"gain {gain:+.1%}, lower bound {lower:+.4f} at {confidence:.0%}"
    return GateDecision(gain >= margin and lower > 0, mean_c, mean_s, gain, lower, n, reason)

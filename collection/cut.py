"""Where a ranked list stops: a fixed minimum score and a dynamic cut at a large relative drop.

The dynamic cut follows the "score cliff" idea: when a result scores much lower than the one
above it, what follows is rarely relevant. It is off by default (``max_relative_drop = 0``).
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_length(
    scores: Sequence[float], *, min_score: float | None = None, max_relative_drop: float = 0.0, min_keep: int = 1
) -> int:
    """How many of the descending ``scores`` to keep.

    - every kept score is >= ``min_score`` (when given);
    - with ``0 < max_relative_drop < 1``, the list stops before the first score that falls below
      ``(1 - max_relative_drop)`` times the score above it; at least ``min_keep`` results that pass
      ``min_score`` survive the dynamic cut.
    """
    if not 0.0 <= max_relative_drop < 1.0:
        raise ValueError("max_relative_drop must be in [0, 1)")
    keep = len(scores)
    if min_score is not None:
        keep = next((i for i, score in enumerate(scores) if score < min_score), keep)
    if max_relative_drop > 0:
        for i in range(max(1, min_keep), keep):
            previous, current = scores[i - 1], scores[i]
            if previous > 0 and current < (1.0 - max_relative_drop) * previous:
                return i
    return keep

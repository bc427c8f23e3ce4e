"""Fusing the search channels' lists into one order: reciprocal-rank or convex score fusion.

**Reciprocal rank** (Cormack, Clarke & Büttcher, SIGIR 2009): an image's fused score is the weighted
mean, over the channels that *could* have found it, of ``1 / (k + rank)`` (0 when the channel could
but did not), scaled so that being first in every eligible channel scores 1.0. It throws the scores
away: on coco_mini's held-out captions it fell below its best channel (docs/retrieval.md).

**Convex** (Bruch, Gai & Ingber, "An Analysis of Fusion Functions for Hybrid Retrieval", ACM TOIS
2023): each channel's scores are normalised over the list it returned (``max_normalised``), and an image's fused
score is the weighted mean of its normalised scores over the channels that could have found it (0
where a channel could but did not). The paper found it beats RRF in and out of domain and needs few
labelled queries to fit its weights; Loupe fits them on the collection's own held-out captions
(``searchapp.evaluation``).

In both, an image without captions or tags is judged by CLIP alone, so it is not penalised for
lacking text, and a channel with weight 0 changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

RRF = "rrf"
CONVEX = "convex"
METHODS = (RRF, CONVEX)
# How a channel's scores are normalised before the convex combination (``NORMALISATIONS``). MAX serves
# unless a fit chose another on held-out queries of other rotations (searchapp.evaluation cross-fits it).
MAX = "max"
# Fused scores are rounded: sums that differ only in the order of their terms' rounding are ties, broken by
# CLIP's order, so a vectorised re-computation (searchapp.fusion_fit) orders candidates exactly alike.
TIE_DECIMALS = 12


@dataclass
class FusedCandidate:
    image_id: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)  # channel -> 1-based rank where found

    @property
    def channels(self) -> list[str]:
        return sorted(self.ranks)


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[int]],
    weights: Mapping[str, float],
    *,
    eligible: Callable[[str, int], bool] = lambda channel, image_id: True,
    k: int = 60,
) -> list[FusedCandidate]:
    """Fuse ranked id lists; best first, ties broken by the first channel's order, then id."""

    def value(channel: str, candidate: FusedCandidate) -> float:
        rank = candidate.ranks.get(channel)
        return (k + 1) / (k + rank) if rank is not None else 0.0  # first place scores 1

    return _weighted_mean(rankings, weights, eligible, value)


def convex_fusion(
    rankings: Mapping[str, Sequence[tuple[int, float]]],
    weights: Mapping[str, float],
    *,
    eligible: Callable[[str, int], bool] = lambda channel, image_id: True,
    normalisation: str = MAX,
) -> list[FusedCandidate]:
    """Fuse ranked (id, score) lists by a convex combination of normalised scores; best first, ties
    broken by the first channel's order, then id."""
    normalise = NORMALISATIONS[normalisation]
    normalised = {channel: normalise(ranking) for channel, ranking in rankings.items()}
    ids = {channel: [image_id for image_id, _ in ranking] for channel, ranking in rankings.items()}
    return _weighted_mean(
        ids, weights, eligible, lambda channel, candidate: normalised[channel].get(candidate.image_id, 0.0)
    )


def _weighted_mean(
    rankings: Mapping[str, Sequence[int]],
    weights: Mapping[str, float],
    eligible: Callable[[str, int], bool],
    value: Callable[[str, FusedCandidate], float],
) -> list[FusedCandidate]:
    """Each candidate's weighted mean of ``value`` over the weighted channels that could have found it."""
    candidates: dict[int, FusedCandidate] = {}
    for channel, ranking in rankings.items():
        for rank, image_id in enumerate(ranking, 1):
            candidate = candidates.get(image_id)
            if candidate is None:
                candidate = candidates[image_id] = FusedCandidate(image_id, 0.0)
            candidate.ranks.setdefault(channel, rank)
    used = [(channel, weights.get(channel, 0.0)) for channel in rankings if weights.get(channel, 0.0) > 0]
    for candidate in candidates.values():
        total_weight = numerator = 0.0
        for channel, weight in used:
            if eligible(channel, candidate.image_id):
                total_weight += weight
                numerator += weight * value(channel, candidate)
        candidate.score = round(numerator / total_weight, TIE_DECIMALS) if total_weight else 0.0
    first = next(iter(rankings.values()), [])
    order = {image_id: i for i, image_id in enumerate(first)}
    return sorted(candidates.values(), key=lambda c: (-c.score, order.get(c.image_id, len(order)), c.image_id))


def max_normalised(ranking: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Scores over the list's best, floored at 0: Bruch et al.'s theoretical min-max with a minimum of 0
    (ts_rank_cd is never below it; a cosine below 0 is no match). A list whose best is not above 0 scores
    1 throughout; an id listed twice keeps its best score."""
    return floored(ranking, 0.0)


def floored(ranking: Sequence[tuple[int, float]], floor: float) -> dict[int, float]:
    """``(max(score, floor) - floor) / (best - floor)``: theoretical min-max with ``floor`` as the minimum
    (-1 is a cosine's). A list whose best is not above the floor scores 1 throughout."""
    if not ranking:
        return {}
    high = max(score for _, score in ranking)
    result: dict[int, float] = {}
    for image_id, score in ranking:
        value = (max(score, floor) - floor) / (high - floor) if high > floor else 1.0
        result[image_id] = max(result.get(image_id, 0.0), value)
    return result


def min_max_normalised(ranking: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Min-max over the list: its best 1, its last 0 (a one-item or flat list scores 1)."""
    if not ranking:
        return {}
    low = min(score for _, score in ranking)
    return floored(ranking, low) if max(score for _, score in ranking) > low else {i: 1.0 for i, _ in ranking}


def z_normalised(ranking: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Standard scores over the list, shifted so its worst is 0 (an absent image also counts 0)."""
    if not ranking:
        return {}
    scores = [score for _, score in ranking]
    mean = sum(scores) / len(scores)
    spread = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
    if spread == 0:
        return {i: 1.0 for i, _ in ranking}
    low = (min(scores) - mean) / spread
    result: dict[int, float] = {}
    for image_id, score in ranking:
        result[image_id] = max(result.get(image_id, 0.0), (score - mean) / spread - low)
    return result


# The candidates the cross-fitting chooses among (the five the audit of issue 18 found chosen on the reported
# queries, plus MAX): each rotation of a held-out evaluation is scored with the one that fitted best on the
# other rotations (searchapp.evaluation), and a calibration stores the one that fitted best on all.
NORMALISATIONS: dict[str, Callable[[Sequence[tuple[int, float]]], dict[int, float]]] = {
    MAX: max_normalised,
    "minmax": min_max_normalised,
    "zscore": z_normalised,
    "floor-1": lambda ranking: floored(ranking, -1.0),
    "floor0.2": lambda ranking: floored(ranking, 0.2),
    "floor0.5": lambda ranking: floored(ranking, 0.5),
}

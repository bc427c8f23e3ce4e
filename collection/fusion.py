"""Reciprocal-rank fusion of the search channels (Cormack, Clarke & Büttcher, SIGIR 2009).

Each channel ranks candidates; an image's fused score is the weighted mean, over the channels
that *could* have found it, of ``1 / (k + rank)`` (0 when the channel could but did not). An image
without captions or tags is judged by CLIP alone, so it is not penalised for lacking text, and a
channel with weight 0 (measured useless) changes nothing. Scores are scaled so that being first in
every eligible channel scores 1.0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


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
    candidates: dict[int, FusedCandidate] = {}
    for channel, ranking in rankings.items():
        for rank, image_id in enumerate(ranking, 1):
            candidate = candidates.get(image_id)
            if candidate is None:
                candidate = candidates[image_id] = FusedCandidate(image_id, 0.0)
            candidate.ranks.setdefault(channel, rank)
    best = 1.0 / (k + 1)
    used = [(channel, weights.get(channel, 0.0)) for channel in rankings if weights.get(channel, 0.0) > 0]
    for candidate in candidates.values():
        total_weight = numerator = 0.0
        for channel, weight in used:
            if not eligible(channel, candidate.image_id):
                continue
            total_weight += weight
            rank = candidate.ranks.get(channel)
            if rank is not None:
                numerator += weight / (k + rank)
        candidate.score = numerator / total_weight / best if total_weight else 0.0
    first = next(iter(rankings.values()), [])
    order = {image_id: i for i, image_id in enumerate(first)}
    return sorted(candidates.values(), key=lambda c: (-c.score, order.get(c.image_id, len(order)), c.image_id))

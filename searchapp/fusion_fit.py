"""Fitting fusion weights on labelled queries, offline, from the channels' recorded lists.

A labelled query here is a held-out caption and its image (``searchapp.evaluation``): the collection's
own captions are the labels, so a collection fits its weights without anyone judging results. Each
query's channel lists are retrieved once; the fit then fuses them again for every weight on a grid
over the simplex (step 0.1: 66 points for three channels) and keeps the best mean reciprocal rank.
Bruch, Gai & Ingber (ACM TOIS 2023) found convex fusion needs only tens of labelled queries to fit;
coco_mini gives ~640 per fit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.conf import settings

from collection.fusion import CONVEX, convex_fusion, reciprocal_rank_fusion
from ranking.metrics import reciprocal_rank


@dataclass(frozen=True)
class LabelledQuery:
    """One query's channel lists, as the served search retrieved them, and the images that answer it."""

    text: str
    relevant: frozenset[int]
    rankings: dict[str, list[tuple[int, float]]]  # channel -> [(image id, score)], best first; "clip" first
    has_document: dict[int, bool]
    has_captions: dict[int, bool]
    group: int = 0  # the rotation it was held out in: a fit never sees the group it is scored on
    own_weights: dict[str, float] = field(default_factory=dict)  # the channels' own (unfitted) weights


def fused_ids(query: LabelledQuery, method: str, weights: dict[str, float]) -> list[int]:
    """The query's fused order under ``method`` and ``weights``, exactly as ``searchapp.pipeline.fuse``."""
    if len(query.rankings) == 1:
        return [image_id for image_id, _ in query.rankings["clip"]]

    def eligible(channel: str, image_id: int) -> bool:
        if channel == "fts":
            return query.has_document.get(image_id, False)
        return query.has_captions.get(image_id, False) if channel == "caption" else True

    if method == CONVEX:
        fused = convex_fusion(query.rankings, weights, eligible=eligible)
    else:
        ids = {name: [image_id for image_id, _ in ranking] for name, ranking in query.rankings.items()}
        fused = reciprocal_rank_fusion(ids, weights, eligible=eligible, k=settings.LOUPE_RRF_K)
    return [c.image_id for c in fused]


def weight_grid(channels: Sequence[str], step: float = 0.1) -> list[dict[str, float]]:
    """Every weighting of ``channels`` on the simplex in steps of ``step`` (all-zero left out)."""
    n = round(1 / step)
    grid = []
    for parts in itertools.product(range(n + 1), repeat=len(channels)):
        if sum(parts) == n:
            grid.append({c: round(p * step, 4) for c, p in zip(channels, parts, strict=True)})
    return grid


@dataclass(frozen=True)
class Fit:
    method: str
    weights: dict[str, float]
    mrr: float  # on the queries it was fitted on
    queries: int


def fit_weights(queries: Sequence[LabelledQuery], method: str, channels: Sequence[str], step: float = 0.1) -> Fit:
    """The grid weights with the best mean reciprocal rank on ``queries``; ties go to the more even weights."""
    if not queries:
        raise ValueError("No labelled queries to fit fusion weights on.")
    best: tuple[float, float, dict[str, float]] | None = None
    for weights in weight_grid(channels, step):
        mrr = sum(reciprocal_rank(fused_ids(q, method, weights), q.relevant) for q in queries) / len(queries)
        evenness = -max(weights.values())
        if best is None or (round(mrr, 9), evenness) > (round(best[0], 9), best[1]):
            best = (mrr, evenness, weights)
    return Fit(method, best[2], best[0], len(queries))

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

import numpy as np
from django.conf import settings

from collection.fusion import CONVEX, MAX, NORMALISATIONS, TIE_DECIMALS, convex_fusion, reciprocal_rank_fusion
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
    # The items that are ranked for this query (tag queries: the rotation's held-out images); None: all. The
    # channels retrieve from everything, the fusion fuses everything, and the others are dropped afterwards.
    candidates: frozenset[int] | None = None


def counted(query: LabelledQuery, ids: Sequence[int]) -> list[int]:
    """``ids`` without the items that are not ranked for ``query`` (order kept)."""
    return list(ids) if query.candidates is None else [i for i in ids if i in query.candidates]


def fused_ids(query: LabelledQuery, method: str, weights: dict[str, float], normalisation: str = MAX) -> list[int]:
    """The query's fused order under ``method`` and ``weights``, exactly as ``searchapp.pipeline.fuse``."""
    if len(query.rankings) == 1:
        return [image_id for image_id, _ in query.rankings["clip"]]

    def eligible(channel: str, image_id: int) -> bool:
        if channel == "fts":
            return query.has_document.get(image_id, False)
        return query.has_captions.get(image_id, False) if channel == "caption" else True

    if method == CONVEX:
        fused = convex_fusion(query.rankings, weights, eligible=eligible, normalisation=normalisation)
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
    normalisation: str = MAX


@dataclass(frozen=True)
class Prepared:
    """One query as arrays, so that a weighting costs a matrix product: row i is candidate ``ids[i]``."""

    ids: np.ndarray
    scores: np.ndarray  # (candidates, channels): normalised score (convex) or (k + 1) / (k + rank) (RRF); 0: absent
    eligible: np.ndarray  # (candidates, channels): the channel could have found the candidate
    tie_order: np.ndarray  # position in the first channel's list (len(list) if absent), then the id
    relevant: np.ndarray  # (candidates,) bool


def prepare(query: LabelledQuery, method: str, channels: Sequence[str], normalisation: str = MAX) -> Prepared:
    ids = sorted({image_id for ranking in query.rankings.values() for image_id, _ in ranking})
    row = {image_id: i for i, image_id in enumerate(ids)}
    scores = np.zeros((len(ids), len(channels)))
    eligible = np.ones((len(ids), len(channels)), dtype=bool)
    for j, channel in enumerate(channels):
        ranking = query.rankings.get(channel)
        if ranking is None:
            eligible[:, j] = False  # the channel did not run: fused as if its weight were 0
            continue
        if method == CONVEX:
            for image_id, value in NORMALISATIONS[normalisation](ranking).items():
                scores[row[image_id], j] = value
        else:
            for rank, (image_id, _) in reversed(list(enumerate(ranking, 1))):  # the first rank wins
                # Scaled as collection.fusion scales it (first everywhere = 1), so the rounding matches.
                scores[row[image_id], j] = (settings.LOUPE_RRF_K + 1) / (settings.LOUPE_RRF_K + rank)
        if channel == "fts":
            eligible[:, j] = [query.has_document.get(i, False) for i in ids]
        elif channel == "caption":
            eligible[:, j] = [query.has_captions.get(i, False) for i in ids]
    first = next(iter(query.rankings.values()), [])
    position = {image_id: p for p, (image_id, _) in reversed(list(enumerate(first)))}
    tie_order = np.array([position.get(i, len(position)) for i in ids])
    relevant = np.array([i in query.relevant for i in ids], dtype=bool)
    keep = np.array([query.candidates is None or i in query.candidates for i in ids], dtype=bool)
    # Dropped after normalising (the lists are normalised whole, as served): the rest keep their order.
    return Prepared(np.array(ids)[keep], scores[keep], eligible[keep], tie_order[keep], relevant[keep])


def prepared_reciprocal_rank(query: Prepared, weights: np.ndarray) -> float:
    """The reciprocal rank of the first relevant candidate under ``weights`` (channel order of ``prepare``)."""
    if not query.relevant.any():
        return 0.0
    used = query.eligible * (weights > 0)
    total = used @ weights
    numerator = (query.scores * used) @ weights
    fused = np.divide(numerator, total, out=np.zeros_like(numerator), where=total > 0)
    fused = np.round(fused, TIE_DECIMALS)  # as collection.fusion rounds: the same ties
    order = np.lexsort((query.ids, query.tie_order, -fused))
    return 1.0 / (1 + int(np.flatnonzero(query.relevant[order])[0]))


def fit_weights(
    queries: Sequence[LabelledQuery],
    method: str,
    channels: Sequence[str],
    step: float = 0.1,
    normalisation: str = MAX,
) -> Fit:
    """The grid weights with the best mean reciprocal rank on ``queries``; ties go to the more even weights."""
    if not queries:
        raise ValueError("No labelled queries to fit fusion weights on.")
    prepared = [prepare(q, method, channels, normalisation) for q in queries if len(q.rankings) > 1]
    # With one channel the weights change nothing: those queries score the same under every weighting.
    fixed = sum(
        reciprocal_rank(counted(q, fused_ids(q, method, {})), q.relevant) for q in queries if len(q.rankings) == 1
    )
    best: tuple[float, float, dict[str, float]] | None = None
    for weights in weight_grid(channels, step):
        vector = np.array([weights[c] for c in channels])
        mrr = (fixed + sum(prepared_reciprocal_rank(q, vector) for q in prepared)) / len(queries)
        evenness = -max(weights.values())
        if best is None or (round(mrr, 9), evenness) > (round(best[0], 9), best[1]):
            best = (mrr, evenness, weights)
    return Fit(method, best[2], best[0], len(queries), normalisation if method == CONVEX else MAX)


def fit_convex(queries: Sequence[LabelledQuery], channels: Sequence[str], step: float = 0.1) -> Fit:
    """Convex fusion's normalisation and weights, both chosen on ``queries``: the best fitted MRR over every
    normalisation in ``collection.fusion.NORMALISATIONS`` (ties go to MAX, then the listed order). Choosing the
    normalisation on the queries that are reported would flatter it (issue 18's audit): a held-out evaluation
    calls this on the other rotations only."""
    fits = [fit_weights(queries, CONVEX, channels, step, name) for name in NORMALISATIONS]
    return max(fits, key=lambda fit: round(fit.mrr, 9))  # max keeps the first of equals: MAX is listed first

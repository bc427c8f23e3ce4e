"""Fuse: one first-stage order from the channels' lists (weighted reciprocal rank fusion).

With CLIP alone its order is the first stage, unchanged. An image a text channel cannot find (no
caption, no text document) is not penalised for missing from that channel's list: each channel's
rows say which images it could have found, so eligibility needs no extra query.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from collection.fusion import reciprocal_rank_fusion
from ranking.features import Candidate
from searchapp.pipeline.retrieve import Retrieved


@dataclass(frozen=True)
class Ranked:
    """A candidate and the score of the order it is served in (first-stage score, or the reranker's)."""

    candidate: Candidate
    score: float


def first_stage(retrieved: Retrieved) -> list[Ranked]:
    clip = retrieved.clip
    if len(retrieved.rankings) == 1:
        candidates = [Candidate(n.id, n.score, i, {"clip": i}, n.score) for i, n in enumerate(clip, 1)]
    else:
        candidates = fused(retrieved, {n.id: n.score for n in clip})
    return [Ranked(c, c.first_stage_score) for c in candidates]


def fused(retrieved: Retrieved, clip_cosines: dict[int, float]) -> list[Candidate]:
    has_document: dict[int, bool] = {}
    has_captions: dict[int, bool] = {}
    for ranking in retrieved.rankings.values():
        for n in ranking:
            has_document[n.id] = has_document.get(n.id, False) or bool(n.has_document)
            has_captions[n.id] = has_captions.get(n.id, False) or bool(n.has_captions)

    def eligible(channel: str, image_id: int) -> bool:
        if channel == "fts":
            return has_document[image_id]
        return has_captions[image_id] if channel == "caption" else True

    ids = {name: [n.id for n in ranking] for name, ranking in retrieved.rankings.items()}
    order = reciprocal_rank_fusion(ids, retrieved.weights, eligible=eligible, k=settings.LOUPE_RRF_K)
    return [
        Candidate(c.image_id, c.score, position, dict(c.ranks), clip_cosines.get(c.image_id))
        for position, c in enumerate(order, 1)
    ]

"""Fuse: one first-stage order from the channels' lists, by the serving ``Fusion`` (reciprocal rank,
or a convex combination of normalised scores: ``collection.fusion``).

With CLIP alone its order is the first stage, unchanged. An image a text channel cannot find (no
caption, no text document) is not penalised for missing from that channel's list: each channel's
rows say which images it could have found, so eligibility needs no extra query. The feedback channel
(images chosen for this query or for past queries near it) can judge every image, as CLIP can: an
image nobody chose scores 0 there.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from collection.fusion import CONVEX, NORMALISATIONS, convex_fusion, reciprocal_rank_fusion
from collection.fusion_setting import Fusion
from ranking.features import Candidate
from searchapp.pipeline.retrieve import FEEDBACK, Retrieved


@dataclass(frozen=True)
class Ranked:
    """A candidate and the score of the order it is served in (first-stage score, or the reranker's)."""

    candidate: Candidate
    score: float


def first_stage(retrieved: Retrieved, fusion: Fusion) -> list[Ranked]:
    clip = retrieved.clip
    if len(retrieved.rankings) == 1:
        normalised = channel_scores(retrieved, fusion)
        candidates = [
            Candidate(n.id, n.score, i, {"clip": i}, n.score, channel_scores=normalised[n.id])
            for i, n in enumerate(clip, 1)
        ]
    else:
        candidates = fused(retrieved, fusion, {n.id: n.score for n in clip})
    return [Ranked(c, c.first_stage_score) for c in candidates]


def fused_weights(retrieved: Retrieved, fusion: Fusion) -> dict[str, float]:
    """The weight of each channel that took part: the fitted fusion's, else the channel's own.

    A fit on held-out captions knows nothing of feedback, so the feedback channel keeps its own weight
    unless a fit names it."""
    if fusion.weights is None:
        return dict(retrieved.weights)
    own = {FEEDBACK: retrieved.weights.get(FEEDBACK, 0.0)}
    return {name: fusion.weights.get(name, own.get(name, 0.0)) for name in retrieved.rankings}


def channel_scores(retrieved: Retrieved, fusion: Fusion) -> dict[int, dict[str, float]]:
    """Each candidate's score in each channel that found it, normalised as convex fusion normalises the
    channel's list (the serving fusion's normalisation, also under RRF): reranker features."""
    normalise = NORMALISATIONS[fusion.normalisation]
    scores: dict[int, dict[str, float]] = {}
    for name, ranking in retrieved.rankings.items():
        for image_id, value in normalise([(n.id, n.score) for n in ranking]).items():
            scores.setdefault(image_id, {})[name] = value
    return scores


def text_flags(retrieved: Retrieved) -> tuple[dict[int, bool], dict[int, bool]]:
    """Which candidates have a full-text document, and which have captions, as the channels' rows say."""
    has_document: dict[int, bool] = {}
    has_captions: dict[int, bool] = {}
    for ranking in retrieved.rankings.values():
        for n in ranking:
            has_document[n.id] = has_document.get(n.id, False) or bool(n.has_document)
            has_captions[n.id] = has_captions.get(n.id, False) or bool(n.has_captions)
    return has_document, has_captions


def fused(retrieved: Retrieved, fusion: Fusion, clip_cosines: dict[int, float]) -> list[Candidate]:
    has_document, has_captions = text_flags(retrieved)

    def eligible(channel: str, image_id: int) -> bool:
        if channel == "fts":
            return has_document[image_id]
        return has_captions[image_id] if channel == "caption" else True

    weights = fused_weights(retrieved, fusion)
    if fusion.method == CONVEX:
        scored = {name: [(n.id, n.score) for n in ranking] for name, ranking in retrieved.rankings.items()}
        order = convex_fusion(scored, weights, eligible=eligible, normalisation=fusion.normalisation)
    else:
        ids = {name: [n.id for n in ranking] for name, ranking in retrieved.rankings.items()}
        order = reciprocal_rank_fusion(ids, weights, eligible=eligible, k=settings.LOUPE_RRF_K)
    chosen = {n.id: n.score for n in retrieved.rankings.get(FEEDBACK, ())}
    normalised = channel_scores(retrieved, fusion)
    return [
        Candidate(
            c.image_id,
            c.score,
            position,
            dict(c.ranks),
            clip_cosines.get(c.image_id),
            chosen.get(c.image_id, 0.0),
            normalised.get(c.image_id, {}),
        )
        for position, c in enumerate(order, 1)
    ]

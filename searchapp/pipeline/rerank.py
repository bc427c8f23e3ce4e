"""Features and rerank: the learned ranker's order of the top candidates, or two arms interleaved.

Any failure serves the first-stage order (counted and logged): a broken ranker must never take
search down with it.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

import numpy as np

from collection.models import EncoderVersion
from core.metrics import FALLBACKS
from feedback.identity import Viewer
from feedback.impressions import count, query_key
from ranking.experiments.interleaving import team_draft
from ranking.experiments.serving import ServingPlan
from ranking.features import NAMES, ImageFacts, candidate_features
from ranking.personal import Personal
from ranking.registry import ServingRanker
from searchapp.pipeline.fuse import Ranked

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """A candidate's serve-time feature row (``ranking.features.NAMES`` order) and the facts behind it."""

    row: np.ndarray
    facts: ImageFacts | None  # None: the image's row went between retrieval and the features


@dataclass(frozen=True)
class Reranked:
    """The served order, what reranking computed on the way (the page reuses it) and who ranked it."""

    ranked: list[Ranked]
    scored: dict[int, Scored] = field(default_factory=dict)  # image id -> features, for reranked candidates
    teams: dict[int, str] = field(default_factory=dict)  # interleaving: image id -> the arm that placed it
    ranker_label: str = "embedding"


@dataclass(frozen=True)
class RerankInput:
    """What a ranker scores against: the encoder version's vectors, the query's vector and text, the depth,
    and whose taste the per-user features read (None: not personalised, the shared order)."""

    version: EncoderVersion
    vector: np.ndarray
    text: str
    depth: int
    personal: Personal | None = None


def rank(first_stage: list[Ranked], plan: ServingPlan, query: RerankInput, *, kind: str, viewer: Viewer | None):
    """The order ``plan`` serves for a search of ``kind``: interleaved, reranked, or the first stage."""
    if plan.teams is not None and kind == "text":
        return interleave(plan, first_stage, query, viewer)
    if plan.ranker is not None and kind == "text":
        reranked = rerank(plan.ranker, first_stage, query, plan.rerank_depth)
        if reranked is not None:
            return reranked
    return Reranked(first_stage)


def interleave(plan: ServingPlan, ranked: list[Ranked], query: RerankInput, viewer: Viewer | None) -> Reranked:
    """Team-draft interleave the two arms' orders over the whole candidate list.

    The coin flips are seeded by (experiment salt, user, query): a user paging through one query sees
    one consistent interleaved list, while across users and queries the draws are independent.
    """
    orders: list[list[Ranked]] = []
    labels: list[str] = []
    scored: dict[int, Scored] = {}
    for team in plan.teams:
        order, label = ranked, "embedding"
        if team.ranker is not None:
            reranked = rerank(team.ranker, ranked, query, plan.rerank_depth)
            if reranked is not None:
                order, label = reranked.ranked, reranked.ranker_label
                scored.update(reranked.scored)
        orders.append(order)
        labels.append(label)
    seed = hashlib.sha256(f"{plan.salt}:{viewer.user_key if viewer else ''}:{query.text}".encode()).digest()
    by_id = [{r.candidate.image_id: r for r in order} for order in orders]
    merged = team_draft(
        [r.candidate.image_id for r in orders[0]],
        [r.candidate.image_id for r in orders[1]],
        len(ranked),
        random.Random(seed),
    )
    names = {"a": plan.teams[0].name, "b": plan.teams[1].name}
    interleaved = [by_id[0 if side == "a" else 1][image_id] for image_id, side in merged]
    teams = {image_id: names[side] for image_id, side in merged}
    return Reranked(interleaved, scored, teams, f"{labels[0]} | {labels[1]}")


def rerank(serving: ServingRanker, ranked: list[Ranked], query: RerankInput, rerank_depth: int) -> Reranked | None:
    """The top ``rerank_depth`` candidates in the learned order, the rest after them; None on failure."""
    top = ranked[:rerank_depth]
    if not top:
        return Reranked(ranked, ranker_label=serving.version.label)
    try:
        if list(serving.version.feature_names) != NAMES:
            raise ValueError(f"{serving.version} was trained on other features than the registry's.")
        candidates = [r.candidate for r in top]
        matrix, facts = candidate_features(
            query.version, query.vector, candidates, query_key(query.text), query.depth, query.personal
        )
        # One thread: a hundred rows take 0.05 ms, while waking OpenMP workers on cores busy with the text
        # towers and PostgreSQL cost 0.7-1.5 ms per search (measured in the search API profile).
        scores = serving.booster.predict(matrix, num_threads=1)
    except Exception:  # noqa: BLE001 - any failure serves the first-stage order, counted and logged
        count("rerank_fallbacks")
        FALLBACKS.labels("rerank").inc()
        logger.exception("Reranking with %s failed; serving the first-stage order.", serving.version)
        return None
    order = sorted(range(len(top)), key=lambda i: (-scores[i], top[i].candidate.first_stage_rank))
    scored = {
        c.image_id: Scored(row, facts[c.image_id])
        for c, row in zip(candidates, matrix, strict=True)
        if c.image_id in facts
    }
    reordered = [Ranked(top[i].candidate, float(scores[i])) for i in order] + ranked[len(top) :]
    return Reranked(reordered, scored, ranker_label=serving.version.label)

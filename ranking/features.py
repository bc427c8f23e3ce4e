"""The one definition of every (query, image) feature, used at serve time and at training time.

At serve time ``candidate_features`` reads what it needs for all candidates in one SQL round trip
(CLIP cosine, image size, feedback priors from the summary views' trust-weighted counts,
``feedback.trust``) and builds the matrix with
``feature_matrix``; the rows are logged with the impressions, so training later sees exactly what
serving saw (no train/serve skew). Priors are smoothed toward the collection's mean (Bayesian
average with ``PRIOR_STRENGTH`` pseudo-observations), and click-through is position-debiased:
clicks over examinations, where an impression at position p counts the examination curve the summary
views were last refreshed with: the product's refresh (``ranking.summaries``, the beat task and
retraining) writes the swap-estimated curve that the training weights use (the power-law prior where
swaps are scarce); summaries never refreshed with a curve count 1/p (``feedback.summaries``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.core.cache import cache

from collection.index import vector_literal
from collection.models import Image, ImageEmbedding
from core.replicas import read_connection
from feedback.models import ImageFeedbackSummary
from feedback.summaries import QUERY_IMAGE_SUMMARY_VIEW
from ranking.personal import (
    PERSONAL_NAMES,
    TASTE_PRIOR,
    Personal,
    check_history_before,
    shrunk,
    taste_columns,
    taste_ctes,
    taste_params,
)

PRIOR_STRENGTH = 20.0  # pseudo-examinations (and pseudo-ratings) pulling small counts toward the mean
RATING_PRIOR = 0.5
COLLECTION_RATES_KEY = "loupe:collection-rates"


@dataclass(frozen=True)
class Feature:
    name: str
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("clip_cosine", "CLIP cosine between the query and the image (0 when the image has no vector)"),
    Feature("clip_rank_log", "log(1 + rank in the CLIP channel); depth + 1 when CLIP did not find it"),
    Feature("fts_rank_log", "log(1 + rank in the full-text channel); depth + 1 when not found"),
    Feature("caption_rank_log", "log(1 + rank in the caption-vector channel); depth + 1 when not found"),
    Feature("feedback_rank_log", "log(1 + rank in the feedback channel); its own depth + 1 when not found"),
    # The channel's similarity-weighted lift of the smoothed click rate over the collection's
    # (feedback.click_graph): how strongly people who asked this, or something near it, chose the image.
    Feature("feedback_score", "the feedback channel's score; 0 when it did not find the image"),
    # The scores reciprocal rank throws away (issue 18), normalised as the serving fusion normalises a channel's
    # list (``collection.fusion.NORMALISATIONS``: by default over the list's best), 0 when the channel did not
    # find the image: how far ahead of the rest a channel put it, which its rank alone does not say.
    *(
        Feature(
            f"{channel}_score_normalised",
            f"the {channel} channel's score as the fusion normalises it; 0 when not found",
        )
        for channel in ("clip", "fts", "caption", "feedback")
    ),
    Feature("first_stage_score", "the score the first stage (fusion, or CLIP alone) ranked by"),
    Feature("first_stage_rank_log", "log(1 + position in the first-stage order)"),
    Feature("impressions_log", "log(1 + times the image was shown)"),
    Feature("ctr_debiased", "clicks / examinations, smoothed toward the collection's rate"),
    Feature("rating", "mean rating (0-1), smoothed toward 0.5"),
    Feature("query_impressions_log", "log(1 + times shown for this exact normalised query)"),
    # Smoothed toward the collection's rate, not the image's own: for a query string with no history it
    # is then the same constant for every candidate and carries no signal, so a ranker cannot read
    # image popularity through it on a query nobody typed before. Smoothed toward the image's rate (as
    # before issue 17) it copied ``ctr_debiased`` for unseen strings, and the simulation's new-intent
    # queries fell below the embedding order (docs/ranking.md, "Measured").
    Feature("query_ctr", "clicks / examinations for this query, smoothed toward the collection's rate"),
    Feature("aspect_log", "log(width / height)"),
    Feature("pixels_log", "log(width x height)"),
    # Per-user (ranking.personal): 0 for a search not personalised, or a user with no history, so that such a
    # search gets the shared order byte for byte.
    Feature("taste_similarity", "cosine to the user's age-weighted recent choices, shrunk by their number"),
    Feature("taste_tags", "the user's smoothed share of recent choices carrying each image tag, mean over its tags"),
)
NAMES: list[str] = [feature.name for feature in FEATURES]
# The list searches were logged with before the per-user columns (issue 23): training computes those two
# columns for such searches, as of each search's time (``taste_rows``).
SHARED_NAMES: list[str] = [name for name in NAMES if name not in PERSONAL_NAMES]
CHANNELS = ("clip", "fts", "caption", "feedback")


@dataclass(frozen=True)
class Candidate:
    """One image in the first-stage order: its score, its 1-based position, and its rank in each channel."""

    image_id: int
    first_stage_score: float
    first_stage_rank: int
    channel_ranks: Mapping[str, int]
    clip_cosine: float | None = None
    feedback_score: float = 0.0  # the feedback channel's score (feedback.click_graph); 0 when it did not find it
    # channel -> its score normalised as the fusion normalises the channel's list; absent: not found
    channel_scores: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    clip_cosine: float | None
    # Trust-weighted (``feedback.trust``): fractions of an impression or a click.
    impressions: float = 0.0
    examinations: float = 0.0
    clicks: float = 0.0
    ratings: int = 0
    mean_rating: float | None = None
    query_impressions: float = 0.0
    query_examinations: float = 0.0
    query_clicks: float = 0.0
    # The searching user's taste (ranking.personal); all 0 when the search is not personalised.
    taste_cosine: float | None = None
    taste_tag_weight: float = 0.0
    taste_weight: float = 0.0  # the user's summed choice weights W, the same on every row


@dataclass(frozen=True)
class CollectionRates:
    ctr: float  # clicks per examination over the collection


def smoothed(successes: float, trials: float, prior: float, strength: float = PRIOR_STRENGTH) -> float:
    return (successes + strength * prior) / (trials + strength)


def feature_matrix(
    candidates: Sequence[Candidate], facts: Mapping[int, ImageFacts], depth: int, rates: CollectionRates
) -> np.ndarray:
    """Rows in candidate order, columns in ``NAMES`` order. Pure: the same inputs give the same matrix."""
    rows = np.zeros((len(candidates), len(FEATURES)), dtype=np.float64)
    # The feedback channel goes its own depth whatever the page: its "not found" must not move with the
    # candidate depth (a reranked search's 100 against a plain first page's 25), or the same image on the
    # same query would get two rows.
    missing = {c: math.log1p(depth + 1) for c in CHANNELS}
    missing["feedback"] = math.log1p(settings.LOUPE_FEEDBACK_CHANNEL_DEPTH + 1)
    for i, candidate in enumerate(candidates):
        fact = facts.get(candidate.image_id) or ImageFacts(width=1, height=1, clip_cosine=None)
        cosine = candidate.clip_cosine if candidate.clip_cosine is not None else fact.clip_cosine
        channel_rank = [
            math.log1p(candidate.channel_ranks[c]) if c in candidate.channel_ranks else missing[c] for c in CHANNELS
        ]
        image_ctr = smoothed(fact.clicks, fact.examinations, rates.ctr)
        rows[i] = [
            cosine if cosine is not None else 0.0,
            *channel_rank,
            candidate.feedback_score,
            *(candidate.channel_scores.get(c, 0.0) for c in CHANNELS),
            candidate.first_stage_score,
            math.log1p(candidate.first_stage_rank),
            math.log1p(fact.impressions),
            image_ctr,
            smoothed((fact.mean_rating or 0.0) * fact.ratings, fact.ratings, RATING_PRIOR),
            math.log1p(fact.query_impressions),
            smoothed(fact.query_clicks, fact.query_examinations, rates.ctr),
            math.log(max(fact.width, 1) / max(fact.height, 1)),
            math.log(max(fact.width * fact.height, 1)),
            *taste_values(fact),
        ]
    return rows


def taste_values(fact: ImageFacts) -> tuple[float, float]:
    """The two per-user columns (``ranking.personal``): both 0 without a taste."""
    tags = fact.taste_tag_weight / (fact.taste_weight + TASTE_PRIOR)
    return shrunk(fact.taste_cosine or 0.0, fact.taste_weight), tags


# Table names from the models (or, for the per-(query, image) view, the module) that own them.
TABLES = {
    "embeddings": ImageEmbedding._meta.db_table,
    "images": Image._meta.db_table,
    "image_summary": ImageFeedbackSummary._meta.db_table,
    "query_image_summary": QUERY_IMAGE_SUMMARY_VIEW,
}
FACTS_SQL = """{ctes}
SELECT c.id, i.width, i.height,
       CASE WHEN c.need AND %(vector)s::vector IS NOT NULL THEN (
           SELECT 1 - (e.vector::vector({d}) <=> %(vector)s::vector({d})) FROM {embeddings} e
           WHERE e.image_id = c.id AND e.encoder_version_id = %(version)s) END,
       coalesce(s.{counted}impressions, 0), coalesce(s.{counted}examinations, 0), coalesce(s.{counted}clicks, 0),
       coalesce(s.ratings, 0), s.mean_utility,
       coalesce(q.{counted}impressions, 0), coalesce(q.{counted}examinations, 0), coalesce(q.{counted}clicks, 0){taste}
FROM unnest(%(ids)s::bigint[], %(need)s::boolean[]) AS c(id, need)
JOIN {images} i ON i.id = c.id
LEFT JOIN {image_summary} s ON s.image_id = c.id
LEFT JOIN {query_image_summary} q ON q.query = %(query)s AND q.image_id = c.id{taste_join}
"""


def counted_prefix() -> str:
    """Which summary columns the feedback features read: the trust-weighted ones (``feedback.trust``).

    Trusted impressions are damped for bursts only (a flood of made-up searches would otherwise move
    ``impressions_log`` for every image it was shown); clicks and examinations weigh the full trust.

    ``LOUPE_FEEDBACK_TRUST = False`` reads the raw row counts instead: only to measure what the
    weighting buys (``bench/poisoning.py --no-trust``); never in production.
    """
    return "trusted_" if settings.LOUPE_FEEDBACK_TRUST else ""


def fetch_facts(
    version,
    vector: np.ndarray | None,
    image_ids: Sequence[int],
    query: str,
    need_cosine: Sequence[int] | None = None,
    personal: Personal | None = None,
) -> dict[int, ImageFacts]:
    """Everything the features need about these images, in one round trip.

    Cosines are computed only with a vector, and only for ``need_cosine`` when given: candidates the
    CLIP channel found carry theirs already, and reading a 2 KB vector per candidate is most of the cost.
    With ``personal`` the same statement reads that user's taste before ``personal.as_of``
    (``ranking.personal``); without it, the personal facts are 0 and the statement is the shared one.
    """
    if not image_ids:
        return {}
    d = int(version.dimension)
    needed = set(need_cosine or ())
    params = {
        "ids": list(image_ids),
        "vector": vector_literal(vector) if vector is not None else None,
        "version": version.pk,
        "query": query,
        # A cosine reads the image's 2 KB vector: only where asked (a scalar subquery runs only when needed).
        "need": [True] * len(image_ids) if need_cosine is None else [i in needed for i in image_ids],
    }
    parts = {"ctes": "", "taste": "", "taste_join": ""}
    if personal is not None:
        parts = {
            "ctes": taste_ctes(d, TABLES["embeddings"], TABLES["images"]),
            "taste": taste_columns(d, TABLES["embeddings"]),
            "taste_join": "\nCROSS JOIN taste t",
        }
        params.update(taste_params(personal))
    with read_connection().cursor() as cursor:
        cursor.execute(FACTS_SQL.format(d=d, counted=counted_prefix(), **parts, **TABLES), params)
        rows = cursor.fetchall()
    if personal is not None and rows:
        check_history_before(rows[0][15], personal.as_of)
    return {
        int(row[0]): ImageFacts(
            width=row[1],
            height=row[2],
            clip_cosine=None if row[3] is None else float(row[3]),
            impressions=float(row[4]),
            examinations=float(row[5]),
            clicks=float(row[6]),
            ratings=int(row[7]),
            mean_rating=None if row[8] is None else float(row[8]),
            query_impressions=float(row[9]),
            query_examinations=float(row[10]),
            query_clicks=float(row[11]),
            **(personal_facts(row) if personal is not None else {}),
        )
        for row in rows
    }


def personal_facts(row) -> dict:
    """The taste columns of a personalised facts row (``ranking.personal.taste_columns``)."""
    return {
        "taste_cosine": None if row[12] is None else float(row[12]),
        "taste_tag_weight": float(row[13]),
        "taste_weight": float(row[14]),
    }


def collection_rates() -> CollectionRates:
    """The collection-wide click rate the priors are smoothed toward (cached for 5 minutes)."""

    def compute() -> CollectionRates:
        with read_connection().cursor() as cursor:
            counted = counted_prefix()
            cursor.execute(f"SELECT sum({counted}clicks), sum({counted}examinations) FROM {TABLES['image_summary']}")
            clicks, examinations = cursor.fetchone()
        if not examinations:
            return CollectionRates(ctr=0.1)
        return CollectionRates(ctr=float(clicks or 0) / float(examinations))

    return cache.get_or_set(COLLECTION_RATES_KEY, compute, 300)


def candidate_features(
    version,
    vector: np.ndarray | None,
    candidates: Sequence[Candidate],
    query: str,
    depth: int,
    personal: Personal | None = None,
) -> tuple[np.ndarray, dict[int, ImageFacts]]:
    """The serve-time feature matrix of ``candidates`` (and the facts read for it); ``personal``: whose taste."""
    need = [c.image_id for c in candidates if c.clip_cosine is None]
    facts = fetch_facts(version, vector, [c.image_id for c in candidates], query, need_cosine=need, personal=personal)
    return feature_matrix(candidates, facts, depth, collection_rates()), facts


def taste_rows(version, image_ids: Sequence[int], personal: Personal) -> np.ndarray:
    """The per-user columns of ``image_ids`` for ``personal``'s taste before ``personal.as_of``, one row each.

    Training uses it for searches logged before these columns existed (``ranking.training_data``), with the
    search's own time as ``as_of``: the statement serving runs, so the values are what serving would have
    computed then, and the search's own click (dated after it) is not in them (``FutureLeak`` otherwise).
    """
    facts = fetch_facts(version, None, image_ids, "", need_cosine=[], personal=personal)
    empty = ImageFacts(width=1, height=1, clip_cosine=None)
    return np.asarray([taste_values(facts.get(i, empty)) for i in image_ids], dtype=np.float64).reshape(-1, 2)

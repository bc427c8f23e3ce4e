"""Per-user features for the reranker: how near a candidate is to what this user chose before (issue 23).

Nothing new is stored. A user's taste is computed, in the features' one SQL round trip
(``ranking.features.fetch_facts``), from their own last ``HISTORY`` clicks and good ratings dated before
the search (``as_of``), each weighed by its age (half-life ``HALF_LIFE_DAYS``):

- the taste vector is the age-weighted sum of the chosen images' CLIP vectors; ``taste_similarity`` is a
  candidate's cosine to it, shrunk toward 0 by the evidence, ``W / (W + TASTE_PRIOR)`` with W the summed
  weights;
- ``taste_tags`` is the user's smoothed share of choices carrying each of the candidate's tags,
  ``w_tag / (W + TASTE_PRIOR)``, averaged over the candidate's tags (an image with forty tags would
  otherwise match everyone's taste a little).

Why a decayed mean of the last N and not all history: tastes drift and one person's key is sometimes
shared (a family browser), so old choices should fade; the cap bounds the statement's cost (50 vectors
summed, whatever the history). Why the shrinkage: like the feedback priors (``PRIOR_STRENGTH``), one click
must not make a taste: with ``TASTE_PRIOR`` 5 pseudo-choices one click gives a sixth of the cosine and a
tag share of 0.17, ten recent clicks 0.67. The half-life (30 days), the cap (50) and the prior (5) are
chosen starting points, not measured optima (no real traffic here).

A user with no history, a search not personalised, and an erased user (the ``ErasedUser`` fence is read
in the same statement, so the marker alone is enough) all get the neutral 0 in both columns: the
shared order, byte for byte.

The ``as_of`` bound is what keeps the future out of training: the search's own click (and every later
one) is after its time. ``check_history_before`` asserts it on what the statement read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from feedback.erasure import not_erased_sql
from feedback.models import RATING_UTILITY_SQL, Click, Rating

HISTORY = 50  # the user's most recent choices read per search
HALF_LIFE_DAYS = 30.0  # a choice's weight halves every 30 days
TASTE_PRIOR = 5.0  # pseudo-choices of no taste: the shrinkage toward the neutral 0
GOOD_RATING = 0.75  # 4-5 stars or thumbs up, as ranking.training_data labels a good rating
PERSONAL_NAMES = ("taste_similarity", "taste_tags")
NEUTRAL = 0.0  # both columns, for a search that is not personalised or a user with no history


class FutureLeak(RuntimeError):
    """A personal feature read a choice made at or after the search it describes."""


@dataclass(frozen=True)
class Personal:
    """Whose taste a search's features read, and up to when (exclusive)."""

    user_key: str
    as_of: datetime


def taste_ctes(d: int, embeddings: str, images: str) -> str:
    """The statement's ``WITH`` part: the user's history, its weights, the taste vector and the tag weights."""
    clicks, ratings = Click._meta.db_table, Rating._meta.db_table
    return f"""
WITH history AS (
    SELECT image_id, at FROM (
        SELECT k.image_id, k.created_at AS at FROM {clicks} k
        WHERE k.user_key = %(user)s AND k.created_at < %(as_of)s AND k.image_id IS NOT NULL AND {not_erased_sql("k")}
        UNION ALL
        SELECT r.image_id, r.created_at FROM {ratings} r
        WHERE r.user_key = %(user)s AND r.created_at < %(as_of)s AND r.image_id IS NOT NULL
          AND ({RATING_UTILITY_SQL}) >= %(good)s AND {not_erased_sql("r")}
    ) chosen ORDER BY at DESC LIMIT %(history)s
), decayed AS (
    SELECT image_id, max(at) AS latest,
           sum(power(0.5, extract(epoch FROM (%(as_of)s - at)) / %(half_life)s)) AS w
    FROM history GROUP BY image_id
), taste AS (
    SELECT (SELECT sum(e.vector::vector({d}) * array_fill(h.w::real, ARRAY[{d}])::vector({d}))
            FROM decayed h JOIN {embeddings} e ON e.image_id = h.image_id AND e.encoder_version_id = %(version)s) AS v,
           (SELECT coalesce(sum(w), 0) FROM decayed) AS w,
           (SELECT max(latest) FROM decayed) AS latest
), tag_weights AS (
    SELECT tag, sum(h.w) AS w FROM decayed h JOIN {images} i ON i.id = h.image_id, unnest(i.tags) AS tag GROUP BY tag
)
"""


def taste_columns(d: int, embeddings: str) -> str:
    """Per candidate ``c`` (image ``i``): its cosine to the taste, its tags' mean weight, the user's W and latest."""
    return f""",
       CASE WHEN t.v IS NOT NULL THEN (
           SELECT 1 - (e.vector::vector({d}) <=> t.v) FROM {embeddings} e
           WHERE e.image_id = c.id AND e.encoder_version_id = %(version)s) END,
       (SELECT coalesce(sum(g.w), 0) / greatest(cardinality(i.tags), 1) FROM tag_weights g WHERE g.tag = ANY(i.tags)),
       t.w, t.latest"""


def taste_params(personal: Personal) -> dict:
    return {
        "user": personal.user_key,
        "as_of": personal.as_of,
        "good": GOOD_RATING,
        "history": HISTORY,
        "half_life": HALF_LIFE_DAYS * 86400.0,
    }


def check_history_before(latest: datetime | None, as_of: datetime) -> None:
    """Stop if the statement read a choice dated at or after the search: that would be the future."""
    if latest is not None and latest >= as_of:
        raise FutureLeak(f"A personal feature read a choice of {latest.isoformat()}, not before {as_of.isoformat()}.")


def shrunk(value: float, weight: float) -> float:
    """``value`` shrunk toward the neutral 0 by the evidence ``weight`` (summed choice weights)."""
    return value * weight / (weight + TASTE_PRIOR)

"""The feedback retrieval channel: images people chose for this query, or for past queries near it.

Reranking sees only what the first stage found; an image users keep choosing for a query but that CLIP
ranks at 300 could come up only through the exploration slice (issue 23, item 2). Web search engines use
the click graph as a retrieval source for the same reason (Craswell & Szummer, "Random walks on the
click graph", SIGIR 2007). This channel is that source, kept cheap and hard to game:

- **A precomputed top list per query.** ``feedback_querytopimage`` (migration 0018) is a materialised
  view refreshed with the summaries: per normalised query, its chosen images scored by the debiased
  click rate (trusted votes over trusted examinations under the examination curve), smoothed toward the
  collection's rate with ``PRIOR_STRENGTH`` pseudo-examinations as the ranking features' priors are.
- **A floor.** An image enters only when trusted users worth ``MIN_TRUSTED_USERS`` chose it (each
  identity votes at most once per query and image, with its ``feedback.trust`` weight: new identities
  0.25, bursts from one network damped) and its smoothed rate beats the collection's. One click, or a
  thousand from one identity, never makes a result.
- **Nearby past queries.** Each query in the view has its CLIP text vector in ``feedback_pastquery``
  (written at refresh, one partial HNSW index per encoder version); a search reads the top lists of its
  own string and of its ``NEIGHBOURS`` nearest past queries at cosine ``LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY``
  or more, each image scored by the sum over those queries of similarity x lift (rate - collection rate).
  One round trip, beside the CLIP channel.
- **Erasure.** The view leaves out every row the ``ErasedUser`` fence covers, and a refresh deletes the
  vectors of queries no longer in it, so an erased user's queries leave the table with their clicks.
  The floor also means a stored query string was chosen from by several people.

The numbers are frozen in the migration's SQL (as ``feedback.trust``'s are); they are repeated here for the
code and the docs, and ``tests/integration/feedback/test_click_graph.py`` pins them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.db import connection

from collection.encoders import Encoder
from collection.index import TEXT_FLAGS_SQL, Neighbour, fetch_with_knobs, hnsw_knobs, vector_literal
from collection.models import EncoderVersion

PRIOR_STRENGTH = 20.0  # pseudo-examinations at the collection's rate (ranking.features.PRIOR_STRENGTH)
MIN_TRUSTED_USERS = 3.0  # trusted identities' votes an image needs for a query before it is retrieved
TOP_PER_QUERY = 50  # images kept per query
GOOD_RATING = 0.75  # a rating of this utility or more on a search is a vote (4 or 5 stars, thumbs up)
NEIGHBOURS = 8  # nearest past queries read per search
HNSW_EF_SEARCH = 40  # pgvector's default: recall is ample for 8 neighbours

TOP_VIEW = "feedback_querytopimage"
PAST_QUERY_TABLE = "feedback_pastquery"
ENCODE_BATCH = 64


@dataclass(frozen=True)
class PastQueries:
    """What a refresh of the past-query vectors did."""

    encoded: int
    removed: int
    stored: int


def _index_name(version: EncoderVersion) -> str:
    return f"{PAST_QUERY_TABLE}_hnsw_v{int(version.pk)}"


def refresh_past_queries(encoder: Encoder, version: EncoderVersion) -> PastQueries:
    """Give every query in the top lists a vector under ``version``, and drop the vectors of queries that left.

    Run after the view's refresh (``feedback.summaries.refresh_summaries``); only new queries are encoded.
    """
    d = int(version.dimension)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {PAST_QUERY_TABLE} p WHERE p.encoder_version_id = %s"
            f" AND NOT EXISTS (SELECT 1 FROM {TOP_VIEW} t WHERE t.query = p.query)",
            [version.pk],
        )
        removed = cursor.rowcount
        cursor.execute(
            f"DELETE FROM {PAST_QUERY_TABLE} p WHERE NOT EXISTS"
            f" (SELECT 1 FROM {EncoderVersion._meta.db_table} v WHERE v.id = p.encoder_version_id)"
        )
        removed += cursor.rowcount
        cursor.execute(
            f"SELECT DISTINCT t.query FROM {TOP_VIEW} t WHERE NOT EXISTS (SELECT 1 FROM {PAST_QUERY_TABLE} p"
            " WHERE p.encoder_version_id = %s AND p.query = t.query) ORDER BY t.query",
            [version.pk],
        )
        missing = [row[0] for row in cursor.fetchall()]
        for start in range(0, len(missing), ENCODE_BATCH):
            batch = missing[start : start + ENCODE_BATCH]
            vectors = encoder.encode_texts(batch)
            cursor.executemany(
                f"INSERT INTO {PAST_QUERY_TABLE} (encoder_version_id, query, vector) VALUES (%s, %s, %s::vector)"
                " ON CONFLICT DO NOTHING",
                [(version.pk, query, vector_literal(vector)) for query, vector in zip(batch, vectors, strict=True)],
            )
        cursor.execute(
            f"CREATE INDEX IF NOT EXISTS {_index_name(version)} ON {PAST_QUERY_TABLE} "
            f"USING hnsw ((vector::vector({d})) vector_cosine_ops) "
            f"WITH (m = 16, ef_construction = 64) WHERE encoder_version_id = {int(version.pk)}"
        )
        cursor.execute(f"SELECT count(*) FROM {PAST_QUERY_TABLE} WHERE encoder_version_id = %s", [version.pk])
        stored = int(cursor.fetchone()[0])
    return PastQueries(encoded=len(missing), removed=removed, stored=stored)


# The nearest past queries come from the version's HNSW index (the ORDER BY ... LIMIT matches it); the
# search's own string always counts, at similarity 1, even before its vector is written.
CHANNEL_SQL = """
WITH near AS (
    SELECT query, 1 - (vector::vector({d}) <=> %(vector)s::vector({d})) AS similarity
    FROM {past} WHERE encoder_version_id = %(version)s
    ORDER BY vector::vector({d}) <=> %(vector)s::vector({d}) LIMIT %(neighbours)s
), asked AS (
    SELECT query, max(similarity) AS similarity FROM (
        SELECT query, similarity FROM near WHERE similarity >= %(min_similarity)s
        UNION ALL SELECT %(query)s, 1.0
    ) a GROUP BY query
)
SELECT c.image_id, c.score, {text_flags} FROM (
    SELECT t.image_id, sum(a.similarity * t.lift) AS score
    FROM asked a JOIN {top} t ON t.query = a.query
    GROUP BY t.image_id ORDER BY score DESC, t.image_id LIMIT %(depth)s
) c JOIN searchapp_image i ON i.id = c.image_id
ORDER BY c.score DESC, c.image_id
"""


def chosen_images(
    version: EncoderVersion, vector: np.ndarray, query: str, *, depth: int, min_similarity: float
) -> list[Neighbour]:
    """The images chosen for ``query`` (normalised) or for past queries near ``vector``, best first.

    A Neighbour's score is the similarity-weighted lift of the image's smoothed click rate over the
    collection's; an empty list when no past query is near or none of their images passed the floor.
    """
    params = {
        "vector": vector_literal(vector),
        "version": version.pk,
        "neighbours": NEIGHBOURS,
        "min_similarity": float(min_similarity),
        "query": query,
        "depth": int(depth),
    }
    sql = CHANNEL_SQL.format(d=int(version.dimension), past=PAST_QUERY_TABLE, top=TOP_VIEW, text_flags=TEXT_FLAGS_SQL)
    # The HNSW walk looks at no more past queries than it returns; without sorts the planner cannot scan them all.
    rows = fetch_with_knobs(hnsw_knobs(max(NEIGHBOURS, HNSW_EF_SEARCH)), sql, params)
    # Each row carries the image's text flags, so fusion knows which text channels could have found it.
    return [Neighbour(int(row[0]), float(row[1]), bool(row[2]), bool(row[3])) for row in rows]

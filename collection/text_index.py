"""Full-text search over captions and tags (PostgreSQL tsvector + GIN).

Each image has one document: its tags with weight A and its captions with weight B, in the
configured text search configuration (``LOUPE_FTS_CONFIG``, default ``english``). Queries match
any of their words (OR), ranked by cover density, so a long caption-like query still finds
images that share only some of its words.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings
from django.db import connection

from collection.index import Neighbour
from collection.metadata_filter import NO_FILTER, MetadataFilter
from core.replicas import read_connection

# An image's document from its current tags and captions (``i`` is the image row).
DOCUMENT_EXPRESSION = """
    setweight(to_tsvector(%(config)s::regconfig, array_to_string(i.tags, ' ')), 'A')
    || setweight(to_tsvector(%(config)s::regconfig, coalesce(
        (SELECT string_agg(c.text, ' ' ORDER BY c.position) FROM searchapp_caption c WHERE c.image_id = i.id), ''
    )), 'B')
"""

DOCUMENT_SQL = (
    "UPDATE searchapp_image AS i SET text_document = "
    + DOCUMENT_EXPRESSION
    + ", has_captions = EXISTS (SELECT 1 FROM searchapp_caption c WHERE c.image_id = i.id) WHERE {where}"
)


def refresh_text_documents(image_ids: Sequence[int]) -> None:
    """Recompute the documents of these images (after their captions or tags changed)."""
    if not image_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            DOCUMENT_SQL.format(where="i.id = ANY(%(ids)s)"),
            {"config": settings.LOUPE_FTS_CONFIG, "ids": list(image_ids)},
        )


def refresh_lexeme_stats() -> None:
    """Recount each lexeme's documents (the row with an empty word holds the number of documents).

    Concurrent refresh: searches keep reading the previous counts meanwhile. Counts only steer
    which words are too common to select candidates by, so slightly stale counts are harmless.
    """
    with connection.cursor() as cursor:
        cursor.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY searchapp_lexemestat")


def full_text_matches(
    text: str,
    *,
    k: int,
    tags: Sequence[str] = (),
    metadata: MetadataFilter = NO_FILTER,
    exclude_ids: Sequence[int] = (),
) -> list[Neighbour]:
    """Images whose captions or tags share words with ``text``, best first; score = ts_rank_cd.

    Candidates are the documents holding any of the query's informative words; words found in more
    than ``LOUPE_FTS_COMMON_FRACTION`` of the documents (and at least ``LOUPE_FTS_COMMON_MIN_DOCS``)
    select nothing on their own, since ranking ten thousand documents that share only "table" costs
    tens of milliseconds and tells little. They still count in the rank. A query of common words only
    needs all of them, and at most ``LOUPE_FTS_MAX_RANKED`` matches are ranked.
    """
    where = ["i.text_document @@ q.match_query"]
    params: dict = {
        "config": settings.LOUPE_FTS_CONFIG,
        "text": text,
        "k": int(k),
        "fraction": settings.LOUPE_FTS_COMMON_FRACTION,
        "min_docs": settings.LOUPE_FTS_COMMON_MIN_DOCS,
        "max_ranked": settings.LOUPE_FTS_MAX_RANKED,
    }
    if tags:
        where.append("i.tags @> %(tags)s::varchar[]")
        params["tags"] = list(tags)
    if metadata:
        # Before the LIMIT on matched documents, so a filter never leaves fewer matches than exist.
        condition, metadata_params = metadata.named_sql("i")
        where.append(condition)
        params.update(metadata_params)
    if exclude_ids:
        where.append("NOT (i.id = ANY(%(exclude)s))")
        params["exclude"] = list(exclude_ids)
    sql = f"""
        WITH words AS (
            SELECT w.word, coalesce(s.ndoc, 0) AS ndoc
            FROM unnest(tsvector_to_array(to_tsvector(%(config)s::regconfig, %(text)s))) AS w(word)
            LEFT JOIN searchapp_lexemestat s ON s.word = w.word
        ), common AS (
            SELECT greatest(%(min_docs)s, %(fraction)s * coalesce(
                (SELECT ndoc FROM searchapp_lexemestat WHERE word = ''), 0)) AS over
        ), q AS (
            SELECT
                (SELECT string_agg(quote_literal(word), ' | ') FROM words)::tsquery AS rank_query,
                coalesce(
                    (SELECT string_agg(quote_literal(word), ' | ') FROM words, common WHERE ndoc <= common.over),
                    (SELECT string_agg(quote_literal(word), ' & ') FROM words)
                )::tsquery AS match_query
        ), matched AS (
            SELECT i.id, i.text_document, i.has_captions FROM searchapp_image i, q
            WHERE q.match_query IS NOT NULL AND {" AND ".join(where)}
            LIMIT %(max_ranked)s
        )
        SELECT m.id, ts_rank_cd(m.text_document, q.rank_query, 1) AS rank, m.has_captions
        FROM matched m, q
        ORDER BY rank DESC, m.id
        LIMIT %(k)s
    """
    with read_connection().cursor() as cursor:
        cursor.execute(sql, params)
        return [
            Neighbour(int(image_id), float(rank), has_document=True, has_captions=has_captions)
            for image_id, rank, has_captions in cursor.fetchall()
        ]

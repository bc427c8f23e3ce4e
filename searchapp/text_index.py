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

from searchapp.index import Neighbour

DOCUMENT_SQL = """
UPDATE searchapp_image AS i SET text_document =
    setweight(to_tsvector(%(config)s::regconfig, array_to_string(i.tags, ' ')), 'A')
    || setweight(to_tsvector(%(config)s::regconfig, coalesce(
        (SELECT string_agg(c.text, ' ' ORDER BY c.position) FROM searchapp_caption c WHERE c.image_id = i.id), ''
    )), 'B')
WHERE {where}
"""


def refresh_text_documents(image_ids: Sequence[int]) -> None:
    """Recompute the documents of these images (after their captions or tags changed)."""
    if not image_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            DOCUMENT_SQL.format(where="i.id = ANY(%(ids)s)"),
            {"config": settings.LOUPE_FTS_CONFIG, "ids": list(image_ids)},
        )


def full_text_matches(
    text: str, *, k: int, tags: Sequence[str] = (), exclude_ids: Sequence[int] = ()
) -> list[Neighbour]:
    """Images whose captions or tags share words with ``text``, best first; score = ts_rank_cd."""
    where = ["i.text_document @@ q.query"]
    params: dict = {"config": settings.LOUPE_FTS_CONFIG, "text": text, "k": int(k)}
    if tags:
        where.append("i.tags @> %(tags)s::varchar[]")
        params["tags"] = list(tags)
    if exclude_ids:
        where.append("NOT (i.id = ANY(%(exclude)s))")
        params["exclude"] = list(exclude_ids)
    sql = f"""
        WITH q AS (
            SELECT nullif(replace(plainto_tsquery(%(config)s::regconfig, %(text)s)::text, '&', '|'), '')::tsquery
                AS query
        )
        SELECT i.id, ts_rank_cd(i.text_document, q.query, 1) AS rank
        FROM searchapp_image i, q
        WHERE q.query IS NOT NULL AND {" AND ".join(where)}
        ORDER BY rank DESC, i.id
        LIMIT %(k)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Neighbour(int(image_id), float(rank)) for image_id, rank in cursor.fetchall()]

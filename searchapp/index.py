"""Vector queries over pgvector: one partial HNSW (cosine) index per encoder version.

Vectors are stored without a fixed dimension; each version's index and queries cast to
``vector(d)`` so the planner matches the partial index ``WHERE encoder_version_id = v``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from searchapp.models import EncoderVersion


@dataclass(frozen=True)
class Neighbour:
    id: int
    score: float  # cosine similarity, in [-1, 1]


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in np.asarray(vector, dtype=np.float32).ravel()) + "]"


def _index_name(table: str, version: EncoderVersion) -> str:
    return f"{table}_hnsw_v{version.pk}"


def ensure_hnsw_indexes(version: EncoderVersion) -> None:
    """Create the version's HNSW indexes over image and caption vectors if they are missing."""
    d = int(version.dimension)
    with connection.cursor() as cursor:
        # Foreign keys are checked at commit; inside a caller's transaction CREATE INDEX refuses to
        # run while such checks are pending, so run them now.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in ("searchapp_imageembedding", "searchapp_captionembedding"):
            cursor.execute(
                f"CREATE INDEX IF NOT EXISTS {_index_name(table, version)} ON {table} "
                f"USING hnsw ((vector::vector({d})) vector_cosine_ops) "
                f"WITH (m = 16, ef_construction = 64) WHERE encoder_version_id = {int(version.pk)}"
            )


def drop_hnsw_indexes(version: EncoderVersion) -> None:
    with connection.cursor() as cursor:
        for table in ("searchapp_imageembedding", "searchapp_captionembedding"):
            cursor.execute(f"DROP INDEX IF EXISTS {_index_name(table, version)}")


def count_tagged(tags: Sequence[str]) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM searchapp_image WHERE tags @> %s::varchar[]", [list(tags)])
        return int(cursor.fetchone()[0])


def nearest_images(
    version: EncoderVersion,
    vector: np.ndarray,
    *,
    k: int,
    tags: Sequence[str] = (),
    exclude_ids: Sequence[int] = (),
    exact: bool = False,
) -> list[Neighbour]:
    """The ``k`` images nearest to ``vector``, best first, optionally restricted to images with all ``tags``.

    A tag filter keeps its recall: when few images carry the tags they are scanned exactly
    (through the GIN index on tags), otherwise the HNSW scan is iterative (pgvector 0.8), so
    it goes on past the first ``ef_search`` candidates until ``k`` rows pass the filter.
    """
    d = int(version.dimension)
    where = ["e.encoder_version_id = %s"]
    params: list = [version.pk]
    join = ""
    if tags:
        join = "JOIN searchapp_image i ON i.id = e.image_id"
        where.append("i.tags @> %s::varchar[]")
        params.append(list(tags))
        exact = exact or count_tagged(tags) <= settings.LOUPE_EXACT_FILTER_LIMIT
    if exclude_ids:
        where.append("NOT (e.image_id = ANY(%s))")
        params.append(list(exclude_ids))
    sql = (
        f"SELECT e.image_id, e.vector::vector({d}) <=> %s::vector({d}) AS distance "
        f"FROM searchapp_imageembedding e {join} WHERE {' AND '.join(where)} "
        f"ORDER BY distance LIMIT %s"
    )
    return _run_nearest(sql, [vector_literal(vector), *params, int(k)], k=k, exact=exact, filtered=bool(tags))


def nearest_captions(version: EncoderVersion, vector: np.ndarray, *, k: int) -> list[Neighbour]:
    """The ``k`` captions whose text vectors are nearest to ``vector`` (image-to-text search)."""
    d = int(version.dimension)
    sql = (
        f"SELECT caption_id, vector::vector({d}) <=> %s::vector({d}) AS distance "
        f"FROM searchapp_captionembedding WHERE encoder_version_id = %s ORDER BY distance LIMIT %s"
    )
    return _run_nearest(sql, [vector_literal(vector), version.pk, int(k)], k=k, exact=False, filtered=False)


def _run_nearest(sql: str, params: list, *, k: int, exact: bool, filtered: bool) -> list[Neighbour]:
    with transaction.atomic(), connection.cursor() as cursor:
        if exact:
            # Without plain index scans the planner scans (or bitmap-scans the tag index) and sorts.
            cursor.execute("SET LOCAL enable_indexscan = off")
        else:
            cursor.execute(
                "SELECT set_config('hnsw.ef_search', %s, true)", [str(max(settings.LOUPE_HNSW_EF_SEARCH, k))]
            )
            # The planner underestimates distance computations and may prefer scanning the version's
            # rows and sorting them (exact, but slow at scale); without sorts only the HNSW scan is left.
            cursor.execute("SET LOCAL enable_sort = off")
            if filtered:
                cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # relaxed_order may return near-ties slightly out of order: re-sort by the exact distance.
    rows.sort(key=lambda row: row[1])
    return [Neighbour(int(row_id), 1.0 - float(distance)) for row_id, distance in rows]


def nearest_caption_images(
    version: EncoderVersion,
    vector: np.ndarray,
    *,
    k: int,
    tags: Sequence[str] = (),
    exclude_ids: Sequence[int] = (),
    min_similarity: float = -1.0,
) -> list[Neighbour]:
    """Images ranked by their best-matching caption's vector (the caption-vector channel).

    Looks at the ``4k`` nearest captions (an image has several), keeps each image's best one.
    """
    d = int(version.dimension)
    where = ["e.encoder_version_id = %s"]
    params: list = [version.pk]
    if tags:
        where.append("i.tags @> %s::varchar[]")
        params.append(list(tags))
    if exclude_ids:
        where.append("NOT (c.image_id = ANY(%s))")
        params.append(list(exclude_ids))
    sql = (
        f"SELECT c.image_id, e.vector::vector({d}) <=> %s::vector({d}) AS distance "
        "FROM searchapp_captionembedding e JOIN searchapp_caption c ON c.id = e.caption_id "
        f"{'JOIN searchapp_image i ON i.id = c.image_id' if tags else ''} "
        f"WHERE {' AND '.join(where)} ORDER BY distance LIMIT %s"
    )
    rows = _run_nearest(sql, [vector_literal(vector), *params, 4 * int(k)], k=4 * k, exact=False, filtered=bool(tags))
    best: dict[int, float] = {}
    for row in rows:
        if row.score >= min_similarity and row.id not in best:
            best[row.id] = row.score
    return [Neighbour(image_id, score) for image_id, score in list(best.items())[:k]]


def candidate_facts(
    version: EncoderVersion, vector: np.ndarray, image_ids: Sequence[int]
) -> dict[int, tuple[float | None, bool, bool]]:
    """For each candidate, in one query: (CLIP cosine to ``vector`` or None, has full-text words, has captions)."""
    if not image_ids:
        return {}
    d = int(version.dimension)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT i.id, 1 - (e.vector::vector({d}) <=> %s::vector({d})), "
            "coalesce(length(i.text_document), 0) > 0, "
            "EXISTS (SELECT 1 FROM searchapp_caption c WHERE c.image_id = i.id) "
            "FROM searchapp_image i LEFT JOIN searchapp_imageembedding e "
            "ON e.image_id = i.id AND e.encoder_version_id = %s WHERE i.id = ANY(%s)",
            [vector_literal(vector), version.pk, list(image_ids)],
        )
        return {
            int(image_id): (None if cosine is None else float(cosine), bool(has_document), bool(has_captions))
            for image_id, cosine, has_document, has_captions in cursor.fetchall()
        }

"""Vector queries over pgvector: one partial HNSW (cosine) index per encoder version.

Vectors are stored without a fixed dimension; each version's index and queries cast to
``vector(d)`` so the planner matches the partial index ``WHERE encoder_version_id = v``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from collection.metadata_filter import NO_FILTER, MetadataFilter
from collection.models import EncoderVersion
from core.replicas import read_connection


@dataclass(frozen=True)
class Neighbour:
    id: int
    score: float  # cosine similarity, in [-1, 1] (ts_rank_cd for full-text matches)
    # Whether the image has full-text words and captions, when the query was asked for them (text_flags):
    # fusion needs them to know which channels could have found the image.
    has_document: bool | None = None
    has_captions: bool | None = None


# Columns appended to a query over images ``i``: does the image have full-text words, captions?
TEXT_FLAGS_SQL = "i.text_document IS NOT NULL AND length(i.text_document) > 0, i.has_captions"


def _with_text_flags(sql: str) -> str:
    """Wrap a nearest-neighbour query (first column: image id) so each row also carries the image's text flags.

    The inner query keeps its LIMIT, so the planner still answers it from the HNSW index; the join
    then costs one primary-key probe per row.
    """
    return f"SELECT n.*, {TEXT_FLAGS_SQL} FROM ({sql}) n JOIN searchapp_image i ON i.id = n.image_id"


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text form; 9 significant digits give every float32 back exactly."""
    return "[" + ",".join([f"{x:.9g}" for x in np.asarray(vector, dtype=np.float32).ravel().tolist()]) + "]"


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
    with read_connection().cursor() as cursor:
        cursor.execute("SELECT count(*) FROM searchapp_image WHERE tags @> %s::varchar[]", [list(tags)])
        return int(cursor.fetchone()[0])


def image_filter_sql(tags: Sequence[str], metadata: MetadataFilter) -> tuple[list[str], list]:
    """The WHERE conditions over images ``i`` that a search's tags and metadata filters make, and their parameters."""
    where, params = [], []
    if tags:
        where.append("i.tags @> %s::varchar[]")
        params.append(list(tags))
    if metadata:
        condition, metadata_params = metadata.sql("i")
        where.append(condition)
        params.extend(metadata_params)
    return where, params


def few_match(tags: Sequence[str], metadata: MetadataFilter) -> bool:
    """Whether at most ``LOUPE_EXACT_FILTER_LIMIT`` images pass the filters: then an exact scan of them is
    cheaper than the HNSW walk and finds every one. Counting stops one past the limit (the GIN and
    B-tree indexes give the matching rows, so a selective filter counts in well under a millisecond)."""
    where, params = image_filter_sql(tags, metadata)
    limit = int(settings.LOUPE_EXACT_FILTER_LIMIT)
    with read_connection().cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM searchapp_image i WHERE {' AND '.join(where)} LIMIT %s) m",
            [*params, limit + 1],
        )
        return int(cursor.fetchone()[0]) <= limit


def nearest_images(
    version: EncoderVersion,
    vector: np.ndarray,
    *,
    k: int,
    tags: Sequence[str] = (),
    metadata: MetadataFilter = NO_FILTER,
    exclude_ids: Sequence[int] = (),
    exact: bool = False,
    text_flags: bool = False,
) -> list[Neighbour]:
    """The ``k`` images nearest to ``vector``, best first, optionally restricted to images with all ``tags``
    and passing the ``metadata`` filter.

    A filter keeps its recall: when few images pass it they are scanned exactly (through the GIN
    indexes on tags and metadata, or a field's B-tree), otherwise the HNSW scan is iterative
    (pgvector 0.8), so it goes on past the first ``ef_search`` candidates until ``k`` rows pass.
    """
    d = int(version.dimension)
    where = ["e.encoder_version_id = %s"]
    params: list = [version.pk]
    join = ""
    filtered = bool(tags) or bool(metadata)
    if filtered:
        join = "JOIN searchapp_image i ON i.id = e.image_id"
        image_where, image_params = image_filter_sql(tags, metadata)
        where.extend(image_where)
        params.extend(image_params)
        exact = exact or few_match(tags, metadata)
    if exclude_ids:
        where.append("NOT (e.image_id = ANY(%s))")
        params.append(list(exclude_ids))
    sql = (
        f"SELECT e.image_id, e.vector::vector({d}) <=> %s::vector({d}) AS distance "
        f"FROM searchapp_imageembedding e {join} WHERE {' AND '.join(where)} "
        f"ORDER BY distance LIMIT %s"
    )
    if text_flags:
        sql = _with_text_flags(sql)
    ef_search = max(settings.LOUPE_HNSW_EF_SEARCH, settings.LOUPE_FILTERED_EF_SEARCH) if filtered else None
    # A filtered graph walk fetches more rows than it keeps: its recall@10 at 1% selectivity goes from
    # 0.9725 to 0.9925 fetching twice as many (LOUPE_FILTERED_OVERFETCH, config/settings.py).
    fetched = int(k) * max(1, settings.LOUPE_FILTERED_OVERFETCH) if filtered and not exact else int(k)
    return _run_nearest(
        sql, [vector_literal(vector), *params, fetched], k=k, exact=exact, filtered=filtered, ef_search=ef_search
    )[: int(k)]


def nearest_captions(version: EncoderVersion, vector: np.ndarray, *, k: int) -> list[Neighbour]:
    """The ``k`` captions whose text vectors are nearest to ``vector`` (image-to-text search)."""
    d = int(version.dimension)
    sql = (
        f"SELECT caption_id, vector::vector({d}) <=> %s::vector({d}) AS distance "
        f"FROM searchapp_captionembedding WHERE encoder_version_id = %s ORDER BY distance LIMIT %s"
    )
    return _run_nearest(sql, [vector_literal(vector), version.pk, int(k)], k=k, exact=False, filtered=False)


# pgvector refuses a larger hnsw.ef_search ("outside the valid range ... (1 .. 1000)"): a deep page
# whose scan asked for more answered 500 (issue 19, finding 5).
HNSW_MAX_EF_SEARCH = 1000


def hnsw_knobs(ef_search: int) -> str:
    """The planner settings of an approximate scan. The planner underestimates distance computations and
    may prefer scanning the version's rows and sorting them (exact, but slow at scale); without sorts
    only the HNSW scan is left."""
    return f"set_config('hnsw.ef_search', '{int(ef_search)}', true), set_config('enable_sort', 'off', true)"


def fetch_with_knobs(knobs: str, sql: str, params: Sequence | Mapping) -> list[tuple]:
    """Run ``sql`` with transaction-local planner settings ``knobs`` (``set_config`` calls), in one round trip."""
    reads = read_connection()  # a replica inside a search's on_replica scope (core.replicas), else the primary
    if reads.in_atomic_block:
        # Transaction-local knobs set inside a savepoint outlive its release, up to the caller's commit: an
        # exact scan would leave the caller's later index queries exact too. Rolling the savepoint back
        # (the query only read) undoes them.
        with transaction.atomic(using=reads.alias), reads.cursor() as cursor:
            cursor.execute(f"SELECT {knobs}")
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            transaction.set_rollback(True, using=reads.alias)
        return rows
    # Two statements in one simple-protocol message run as one implicit transaction, so the knobs
    # (transaction-local) apply to the query: one round trip instead of BEGIN, SET, query, COMMIT.
    with reads.cursor() as cursor:
        cursor.execute(f"SELECT {knobs}; {sql}", params)
        cursor.nextset()
        return cursor.fetchall()


def _run_nearest(
    sql: str, params: list, *, k: int, exact: bool, filtered: bool, ef_search: int | None = None
) -> list[Neighbour]:
    """Run a nearest-neighbour query with its planner settings, all set in one round trip.

    ``ef_search`` defaults to ``LOUPE_HNSW_EF_SEARCH``; it is never below ``k``, since an HNSW scan
    returns at most ``ef_search`` rows, and never above pgvector's maximum: deeper than that, the
    iterative scan goes on past the first ``ef_search`` candidates until ``k`` rows are found.
    """
    if exact:
        # Without plain index scans the planner scans (or bitmap-scans the tag index) and sorts.
        knobs = "set_config('enable_indexscan', 'off', true)"
    else:
        wanted = max(ef_search or settings.LOUPE_HNSW_EF_SEARCH, k)
        knobs = hnsw_knobs(min(wanted, HNSW_MAX_EF_SEARCH))
        if filtered or wanted > HNSW_MAX_EF_SEARCH:
            knobs += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
    rows = fetch_with_knobs(knobs, sql, params)
    # relaxed_order may return near-ties slightly out of order: re-sort by the exact distance.
    rows.sort(key=lambda row: row[1])
    return [Neighbour(int(row[0]), 1.0 - float(row[1]), *row[2:]) for row in rows]


# Nearest captions read per wanted image. An image's captions cluster, so its best one comes first
# and the rest are skipped. 1.5 captions per image, with ef_search equal to that, is the cheapest
# scan that still fills the channel on COCO-style collections (5 captions per image); at 100k
# captions it costs ~2.5 ms against 3.5 ms for 2 per image at ef_search 100 (docs/performance.md).
CAPTIONS_PER_IMAGE_SCANNED = 1.5


def nearest_caption_images(
    version: EncoderVersion,
    vector: np.ndarray,
    *,
    k: int,
    tags: Sequence[str] = (),
    metadata: MetadataFilter = NO_FILTER,
    exclude_ids: Sequence[int] = (),
    min_similarity: float = -1.0,
    text_flags: bool = False,
) -> list[Neighbour]:
    """Images ranked by their best-matching caption's vector (the caption-vector channel).

    Looks at the ``1.5k`` nearest captions (an image has several), keeps each image's best one.
    Filters keep their recall as in ``nearest_images``: exact over few matching images, else iterative.
    """
    d = int(version.dimension)
    where = ["e.encoder_version_id = %s"]
    params: list = [version.pk]
    filtered = bool(tags) or bool(metadata)
    if filtered:
        image_where, image_params = image_filter_sql(tags, metadata)
        where.extend(image_where)
        params.extend(image_params)
    if exclude_ids:
        where.append("NOT (c.image_id = ANY(%s))")
        params.append(list(exclude_ids))
    sql = (
        f"SELECT c.image_id AS image_id, e.vector::vector({d}) <=> %s::vector({d}) AS distance "
        "FROM searchapp_captionembedding e JOIN searchapp_caption c ON c.id = e.caption_id "
        f"{'JOIN searchapp_image i ON i.id = c.image_id' if filtered else ''} "
        f"WHERE {' AND '.join(where)} ORDER BY distance LIMIT %s"
    )
    if text_flags:
        sql = _with_text_flags(sql)
    depth = math.ceil(CAPTIONS_PER_IMAGE_SCANNED * int(k))
    exact = filtered and few_match(tags, metadata)
    rows = _run_nearest(
        sql, [vector_literal(vector), *params, depth], k=depth, exact=exact, filtered=filtered, ef_search=depth
    )
    best: dict[int, Neighbour] = {}
    for row in rows:
        if row.score >= min_similarity and row.id not in best:
            best[row.id] = row
    return list(best.values())[:k]

"""A committed copy of the collection without the held-out captions, seen by every connection that searches.

An evaluation that hides held-out captions inside a transaction it rolls back leaks: the served
search runs its text channels on pool threads, each on its own connection outside that transaction,
and a cached order remembers what an earlier search saw (issue 18 measured served fusion R@1 0.99 with
the leak against 0.77 without). Here the tables that hold caption text or anything derived from it
(images with their full-text documents, captions, caption vectors, the lexeme counts) are copied,
committed, into a schema of their own; the held-out captions are deleted from the copy and the
documents and counts rebuilt there. Every connection of this process searches through the copy: the
current thread's at once, the channel pool's by closing it (its threads reconnect) and a
``connection_created`` hook for any new one. Every per-process cache is emptied on the way in and out.
Leaving drops the schema; the live tables are never written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.backends.signals import connection_created

from collection.text_channels import POOL_THREADS, channel_pool, shutdown_pool
from collection.text_index import DOCUMENT_EXPRESSION, refresh_text_documents
from collection.versions import forget_other_encoders, sentence_version
from searchapp.result_cache import image_cache, result_cache

# Caption text, or something computed from it, lives in these tables (the lexeme counts are rebuilt).
COPIED_TABLES = ("searchapp_image", "searchapp_caption", "searchapp_captionembedding")


class HeldOutLeak(RuntimeError):
    """A held-out caption is visible to a connection that serves the evaluated search."""


_active_schema: list[str] = []


def _search_copy_first(sender, connection, **kwargs) -> None:
    if _active_schema:
        with connection.cursor() as cursor:
            cursor.execute(f"SET search_path TO {_active_schema[-1]}, public")


def forget_process_caches(*encoders) -> None:
    """Every per-process cache a search reads: served orders, page images, query vectors (of ``encoders``
    and the caption channel's), other encoder versions, Django's cache (page summaries)."""
    result_cache.forget()
    image_cache.forget()
    forget_other_encoders()
    cache.clear()  # summaries such as the popular tags
    sentence_encoder, _ = sentence_version()
    for encoder in (*encoders, sentence_encoder):
        if encoder is not None and hasattr(encoder, "queries"):
            encoder.queries.clear()


def _copy_schema(schema: str, held_caption_ids: Sequence[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        live = cursor.fetchone()[0]
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cursor.execute(f"CREATE SCHEMA {schema}")
        for table in COPIED_TABLES:
            cursor.execute(
                f"CREATE TABLE {schema}.{table} (LIKE {live}.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            held_filter = ""
            if table == "searchapp_caption":
                held_filter = " WHERE NOT (id = ANY(%s))"
            elif table == "searchapp_captionembedding":
                held_filter = " WHERE NOT (caption_id = ANY(%s))"
            cursor.execute(
                f"INSERT INTO {schema}.{table} SELECT * FROM {live}.{table}{held_filter}",
                [list(held_caption_ids)] if held_filter else [],
            )
            # Indexes after the rows (an HNSW index builds faster than it grows), same definitions.
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", [live, table])
            for (definition,) in cursor.fetchall():
                cursor.execute(definition.replace(f" ON {live}.{table} ", f" ON {schema}.{table} "))
            cursor.execute(f"ANALYZE {schema}.{table}")


def _rebuild_text(schema: str, image_ids: Sequence[int]) -> None:
    """Full-text documents and lexeme counts of the copy, without the held-out captions."""
    refresh_text_documents(list(image_ids))  # the current connection already searches the copy first
    with connection.cursor() as cursor:
        table = f"{schema}.searchapp_image"
        cursor.execute(
            f"CREATE TABLE {schema}.searchapp_lexemestat AS "
            f"SELECT word, ndoc FROM ts_stat('SELECT text_document FROM {table} WHERE text_document IS NOT NULL') "
            f"UNION ALL SELECT '', count(*) FROM {table} WHERE text_document IS NOT NULL"
        )
        cursor.execute(f"CREATE UNIQUE INDEX ON {schema}.searchapp_lexemestat (word)")


def _visible_held_out(held_caption_ids: Sequence[int], image_ids: Sequence[int]) -> int:
    """Held-out caption rows and vectors this connection sees, and documents of the held-out captions' images
    that are not what their visible captions and tags make (a document still holding a held-out caption)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM searchapp_caption WHERE id = ANY(%s)", [list(held_caption_ids)])
        captions = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM searchapp_captionembedding WHERE caption_id = ANY(%s)", [list(held_caption_ids)]
        )
        vectors = cursor.fetchone()[0]
        cursor.execute(
            "SELECT count(*) FROM searchapp_image AS i WHERE i.id = ANY(%(ids)s) "
            f"AND i.text_document IS DISTINCT FROM ({DOCUMENT_EXPRESSION})",
            {"ids": list(image_ids), "config": settings.LOUPE_FTS_CONFIG},
        )
        return captions + vectors + cursor.fetchone()[0]


def assert_held_out(held_caption_ids: Sequence[int], image_ids: Sequence[int] = ()) -> None:
    """Raise HeldOutLeak if this thread's connection or any channel pool thread's can see a held-out caption."""
    seen = {"this thread": _visible_held_out(held_caption_ids, image_ids)}
    pool = channel_pool()
    # One check per pool thread: a barrier holds each task until all threads have one.
    barrier = threading.Barrier(POOL_THREADS)

    def check() -> int:
        barrier.wait(timeout=30)
        return _visible_held_out(held_caption_ids, image_ids)

    futures = [pool.submit(check) for _ in range(POOL_THREADS)]
    for i, future in enumerate(futures):
        seen[f"channel thread {i}"] = future.result()
    leaking = {where: count for where, count in seen.items() if count}
    if leaking:
        raise HeldOutLeak(f"Held-out captions visible to {leaking}.")


@contextmanager
def collection_without(held_caption_ids: Sequence[int], image_ids: Sequence[int], *encoders) -> Iterator[str]:
    """Search, in this process, a committed copy of the collection without these captions; yields the schema."""
    if connection.in_atomic_block:
        raise HeldOutLeak("A held-out copy must be committed: run the evaluation outside a transaction.")
    schema = f"loupe_heldout_{os.getpid()}"
    shutdown_pool()
    forget_process_caches(*encoders)
    _active_schema.append(schema)
    connection_created.connect(_search_copy_first)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")  # copy from the live tables
        _copy_schema(schema, held_caption_ids)
        _search_copy_first(None, connection)
        _rebuild_text(schema, image_ids)
        assert_held_out(held_caption_ids, image_ids)
        yield schema
    finally:
        _active_schema.pop()
        connection_created.disconnect(_search_copy_first)
        shutdown_pool()
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        forget_process_caches(*encoders)

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
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.signals import connection_created

from collection.text_channels import POOL_THREADS, channel_pool, shutdown_pool
from collection.text_index import DOCUMENT_EXPRESSION, refresh_text_documents
from collection.versions import forget_other_encoders, sentence_version
from core.replicas import replica_aliases
from searchapp.result_cache import image_cache, result_cache

# Caption text, or something computed from it, lives in these tables (the lexeme counts are rebuilt).
COPIED_TABLES = ("searchapp_image", "searchapp_caption", "searchapp_captionembedding")


class HeldOutLeak(RuntimeError):
    """A held-out caption or tag is visible to a connection that serves the evaluated search."""


@dataclass(frozen=True)
class HeldOut:
    """What one rotation hides from every connection that serves the evaluated search.

    ``captions`` are hidden from everything: caption rows, caption vectors, full-text documents, lexeme
    counts. ``targets`` (image to text: some of ``captions``) stay in the copy only as answers: their rows
    detached from their images (``image_id = -id``: no document, caption channel or "has captions" flag
    reaches them) and their vectors under ``target_version`` (the CLIP version that describes an image) kept,
    while every other caption's vector under that version is dropped, so the served image-to-text search
    ranks the targets alone. ``tags_of`` are images whose tags are emptied (tag queries); ``images`` are the
    images whose documents change (the held-out captions' and tags' images)."""

    captions: Sequence[int] = ()
    images: Sequence[int] = ()
    tags_of: Sequence[int] = ()
    targets: Sequence[int] = ()
    target_version: int | None = None


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


def _copy_schema(schema: str, held: HeldOut) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        live = cursor.fetchone()[0]
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cursor.execute(f"CREATE SCHEMA {schema}")
        for table in COPIED_TABLES:
            cursor.execute(
                f"CREATE TABLE {schema}.{table} (LIKE {live}.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            cursor.execute(f"INSERT INTO {schema}.{table} SELECT * FROM {live}.{table}")
        _hide(schema, held, cursor)
        for table in COPIED_TABLES:
            # Indexes after the rows (an HNSW index builds faster than it grows), same definitions.
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", [live, table])
            for (definition,) in cursor.fetchall():
                cursor.execute(definition.replace(f" ON {live}.{table} ", f" ON {schema}.{table} "))
            cursor.execute(f"ANALYZE {schema}.{table}")


def _hide(schema: str, held: HeldOut, cursor) -> None:
    """Delete, detach and empty in the copy what ``held`` hides (the live tables are never written)."""
    params = {
        "hidden": list(held.captions),
        "targets": list(held.targets),
        "version": held.target_version,
        "tags_of": list(held.tags_of),
    }
    cursor.execute(
        f"DELETE FROM {schema}.searchapp_captionembedding WHERE caption_id = ANY(%(hidden)s) "
        "AND NOT (caption_id = ANY(%(targets)s) AND encoder_version_id IS NOT DISTINCT FROM %(version)s)",
        params,
    )
    cursor.execute(
        f"DELETE FROM {schema}.searchapp_caption WHERE id = ANY(%(hidden)s) AND NOT (id = ANY(%(targets)s))", params
    )
    if held.targets:
        cursor.execute(f"UPDATE {schema}.searchapp_caption SET image_id = -id WHERE id = ANY(%(targets)s)", params)
        cursor.execute(
            f"DELETE FROM {schema}.searchapp_captionembedding WHERE encoder_version_id = %(version)s "
            "AND NOT (caption_id = ANY(%(targets)s))",
            params,
        )
    if held.tags_of:
        cursor.execute(f"UPDATE {schema}.searchapp_image SET tags = '{{}}' WHERE id = ANY(%(tags_of)s)", params)


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


# Each counts what a held-out caption or tag leaves visible (see ``_visible_held_out``).
VISIBILITY_CHECKS = (
    "SELECT count(*) FROM searchapp_caption WHERE id = ANY(%(hidden)s) AND image_id > 0",
    "SELECT count(*) FROM searchapp_captionembedding WHERE caption_id = ANY(%(hidden)s) "
    "AND NOT (caption_id = ANY(%(targets)s) AND encoder_version_id IS NOT DISTINCT FROM %(version)s)",
    "SELECT count(*) FROM searchapp_image WHERE id = ANY(%(tags_of)s) AND tags <> '{}'",
    "SELECT count(*) FROM searchapp_image AS i WHERE i.id = ANY(%(ids)s) "
    f"AND i.text_document IS DISTINCT FROM ({DOCUMENT_EXPRESSION})",
    "SELECT count(*) FROM searchapp_image AS i WHERE i.id = ANY(%(ids)s) AND i.has_captions IS DISTINCT FROM "
    "EXISTS (SELECT 1 FROM searchapp_caption AS c WHERE c.image_id = i.id)",
    # The lexeme counts the full-text channel weighs words by, against ts_stat over the visible documents.
    "SELECT count(*) FROM (SELECT word, ndoc FROM ts_stat('SELECT text_document FROM searchapp_image "
    "WHERE text_document IS NOT NULL') UNION ALL SELECT '', count(*) FROM searchapp_image "
    "WHERE text_document IS NOT NULL) AS fresh FULL JOIN searchapp_lexemestat AS stored USING (word) "
    "WHERE fresh.ndoc IS DISTINCT FROM stored.ndoc",
)


def _visible_held_out(held: HeldOut, database=None) -> int:
    """Held-out caption rows attached to an image, their vectors (a target's under the target version
    aside), tags of images whose tags are held out, documents of the changed images that are not what
    their visible captions and tags make (a document still holding a held-out caption or tag), "has
    captions" flags that are not what the visible captions make, and lexeme counts that differ from
    ``ts_stat`` over the visible documents (audit finding 10), as ``database`` (default: this thread's
    default connection) sees them."""
    database = database or connection
    params = {
        "hidden": list(held.captions),
        "targets": list(held.targets),
        "version": held.target_version,
        "tags_of": list(held.tags_of),
        "ids": list(held.images),
        "config": settings.LOUPE_FTS_CONFIG,
    }
    visible = 0
    with database.cursor() as cursor:
        for check in VISIBILITY_CHECKS:
            cursor.execute(check, params)
            visible += cursor.fetchone()[0]
    return visible


def assert_held_out(held: HeldOut) -> None:
    """Raise HeldOutLeak if this thread's connection to any database alias, or any channel pool thread's,
    can see a held-out item."""
    seen = {"this thread": _visible_held_out(held)}
    for alias in connections:
        if alias != DEFAULT_DB_ALIAS:
            seen[f"this thread, {alias}"] = _visible_held_out(held, connections[alias])
    pool = channel_pool()
    # One check per pool thread: a barrier holds each task until all threads have one.
    barrier = threading.Barrier(POOL_THREADS)

    def check() -> int:
        barrier.wait(timeout=30)
        return _visible_held_out(held)

    futures = [pool.submit(check) for _ in range(POOL_THREADS)]
    for i, future in enumerate(futures):
        seen[f"channel thread {i}"] = future.result()
    leaking = {where: count for where, count in seen.items() if count}
    if leaking:
        raise HeldOutLeak(f"Held-out captions or tags visible to {leaking}.")


@contextmanager
def collection_without(held: HeldOut, *encoders) -> Iterator[str]:
    """Search, in this process, a committed copy of the collection without what ``held`` hides; yields the
    schema."""
    if connection.in_atomic_block:
        raise HeldOutLeak("A held-out copy must be committed: run the evaluation outside a transaction.")
    if replica_aliases():
        # A replica gets the copy only by WAL replay; a search_path naming a schema it does not have yet is
        # ignored there, so its reads would go to the live tables with the held-out captions (audit finding 1).
        raise HeldOutLeak(
            f"Streaming replicas are configured ({', '.join(replica_aliases())}): the served search would read "
            "held-out captions from them. Evaluate with DATABASE_REPLICA_URLS unset."
        )
    schema = f"loupe_heldout_{os.getpid()}"
    shutdown_pool()
    forget_process_caches(*encoders)
    _active_schema.append(schema)
    connection_created.connect(_search_copy_first)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")  # copy from the live tables
        _copy_schema(schema, held)
        _search_copy_first(None, connection)
        _rebuild_text(schema, held.images)
        assert_held_out(held)
        yield schema
    finally:
        _active_schema.pop()
        connection_created.disconnect(_search_copy_first)
        shutdown_pool()
        with connection.cursor() as cursor:
            cursor.execute("SET search_path TO public")
            cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        forget_process_caches(*encoders)

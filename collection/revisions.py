"""The catalogue's revision: a number that every change to stored images moves on, in its own transaction.

The result cache and the page's image cache are per process and keep entries for a minute
(``searchapp.result_cache``). Keying them by this number, read once per search, means an edit committed by
any process is never served stale by another: the next search reads the new number and misses. The bump
is an update of one row inside the edit's transaction, so the new number becomes visible exactly when the
edit does (a sequence would move before the commit, and a search in between would cache the old text under
the new number). Adding an image does not bump it: new images reach cached queries within the time to live.
"""

from __future__ import annotations

from django.db import connection

from collection.models import CatalogueRevision

TABLE = CatalogueRevision._meta.db_table


def bump_revision() -> None:
    """Move the revision on; call inside the transaction that changes stored images."""
    with connection.cursor() as cursor:
        # An upsert, so a flushed table (transactional tests) or a fresh database needs no seeded row.
        cursor.execute(
            f"INSERT INTO {TABLE} (id, number) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET number = {TABLE}.number + 1"
        )


def current_revision() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT number FROM {TABLE} WHERE id = 1")  # noqa: S608 - the table name is ours
        row = cursor.fetchone()
    return row[0] if row else 0

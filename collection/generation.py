"""The collection's generation: a counter that every takedown moves, watched by every web process.

Search orders and image rows are kept in memory per process (``searchapp.result_cache``), so a
removed image would otherwise be served from another process's cache for up to the cache's time to
live. The counter is one row, bumped inside the takedown's own transactions (it moves exactly when
the removal commits); a process reads it by primary key at most every
``LOUPE_COLLECTION_CHECK_SECONDS`` and drops its caches when it moved. No broker is involved: search
never depends on Redis (docs/architecture.md), and the database is what decides what exists.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import connection, transaction

from collection.models import CollectionGeneration

TABLE = CollectionGeneration._meta.db_table


def bump() -> int:
    """Move the generation on; call inside the transaction that changes what may be served."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TABLE} (id, value) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET value = {TABLE}.value + 1 "
            "RETURNING value"
        )
        value = cursor.fetchone()[0]
    # This process reads it on its first search after the commit, not after the interval.
    transaction.on_commit(watch.check_soon)
    return value


def current() -> int:
    """The committed generation (0 before the first takedown)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {TABLE} WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else 0


class GenerationWatch:
    """Tells a process, at most once per check interval, whether the generation moved since it last looked."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: int | None = None
        self._checked_at = -1e9

    def moved(self) -> bool:
        """True once after each change (and on the first look, when nothing is cached yet anyway)."""
        if time.monotonic() - self._checked_at < settings.LOUPE_COLLECTION_CHECK_SECONDS:
            return False
        with self._lock:
            value = current()
            self._checked_at = time.monotonic()
            changed, self._seen = value != self._seen, value
        return changed

    def check_soon(self) -> None:
        self._checked_at = -1e9


watch = GenerationWatch()

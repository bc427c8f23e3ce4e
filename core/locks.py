"""PostgreSQL advisory locks: one holder across every process and machine that shares the database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def advisory_lock(key: int) -> Iterator[bool]:
    """Try the session lock ``key``; yield whether this process holds it, and release it on the way out.

    A caller that did not get it should skip its work: someone else is doing it (a retraining, a fine-tune).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = cursor.fetchone()[0]
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])


def transaction_lock(name: str) -> None:
    """Wait for the lock named ``name`` until the current transaction ends (serialises writers per name)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 7))", [name])

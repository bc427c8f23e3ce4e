"""Search reads on PostgreSQL streaming replicas; writes, and everything that must read its own writes, on the primary.

``DATABASE_REPLICA_URLS`` adds one database alias per replica (``replica1``, ``replica2``…, marked
``LOUPE_REPLICA`` in their settings). Nothing is sent to a replica by guessing: the search service runs
its reads inside ``on_replica``, and the queries it makes (the index and text channels, the features,
the page rows) ask ``read_alias()`` / ``read_connection()`` which database to read. Outside that scope
the answer is always the primary, so feedback, the log, training and admin never read a replica.

A replica serves only while it is usable (``replica_health``): it answers, it is a standby, and it is
caught up or lags by at most ``LOUPE_REPLICA_MAX_LAG_SECONDS``. A search that fails on the replica
part-way (the server stopped, a recovery conflict cancelled the query) is run again on the primary.

``PrimaryRouter`` keeps the ORM honest: every write goes to the primary, even for a row read from a
replica, and migrations only run there (a replica gets its schema by replaying the primary's WAL).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections

from core.metrics import SEARCH_READS
from core.replica_health import replica_health

logger = logging.getLogger(__name__)

REPLICA_KEY = "LOUPE_REPLICA"  # set in a database's settings when it is a streaming replica of the primary

T = TypeVar("T")

# Where this search's reads go; contextvars.copy_context() carries it into the text channels' pool threads.
_search_reads: ContextVar[str] = ContextVar("loupe_search_reads", default=DEFAULT_DB_ALIAS)


def replica_aliases() -> list[str]:
    """The database aliases that are streaming replicas of the primary, in settings order."""
    return [alias for alias, database in connections.settings.items() if database.get(REPLICA_KEY)]


def read_alias() -> str:
    """The database the current search reads from: a replica inside ``on_replica``, else the primary."""
    return _search_reads.get()


def read_connection():
    """The connection for a search read (see ``read_alias``)."""
    return connections[read_alias()]


def choose_replica() -> str:
    """A usable replica's alias for a new search, else the primary's (counted by why)."""
    aliases = replica_aliases()
    if not aliases:
        return DEFAULT_DB_ALIAS
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        # The caller holds a transaction on the primary: what it wrote is visible only there.
        SEARCH_READS.labels(DEFAULT_DB_ALIAS, "in_transaction").inc()
        return DEFAULT_DB_ALIAS
    usable = [alias for alias in aliases if replica_health.state(alias).usable]
    if not usable:
        SEARCH_READS.labels(DEFAULT_DB_ALIAS, "replicas_unusable").inc()
        return DEFAULT_DB_ALIAS
    alias = random.choice(usable)  # noqa: S311 - spreading load, not a secret
    SEARCH_READS.labels(alias, "replica").inc()
    return alias


def on_replica(read: Callable[[], T]) -> T:
    """Run ``read`` with its search reads on a usable replica; if it fails there, run it once more on the primary.

    ``read`` must only read (its queries go wherever ``read_alias`` says), so running it twice is safe.
    """
    alias = choose_replica()
    if alias == DEFAULT_DB_ALIAS:
        return read()
    token = _search_reads.set(alias)
    try:
        return read()
    except (OperationalError, InterfaceError) as exc:
        failure = exc
    finally:
        _search_reads.reset(token)
    logger.warning("A search failed on replica %s (%s); answering it from the primary.", alias, failure)
    replica_health.mark_down(alias, f"{type(failure).__name__}: {failure}")
    discard_connection(alias)
    SEARCH_READS.labels(DEFAULT_DB_ALIAS, "replica_failed").inc()
    return read()


def discard_connection(alias: str) -> None:
    """Close this thread's connection to ``alias`` (broken, most likely), so its next use reconnects."""
    with contextlib.suppress(DatabaseError):
        connections[alias].close()


class PrimaryRouter:
    """Writes go to the primary; reads go where the query says (``using=``), else to the primary.

    Reads are not routed by guessing: ``db_for_read`` gives no opinion, so Django reads where the
    query names, or where the instance was read from (a page's image from a replica fetches its related
    rows there too), else the primary. A row read from a replica is still saved to the primary.
    """

    def db_for_read(self, model, **hints) -> str | None:
        return None

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # a replica holds the primary's rows: a row from either may point at a row from the other

    def allow_migrate(self, db: str, app_label: str, **hints) -> bool:
        return db == DEFAULT_DB_ALIAS

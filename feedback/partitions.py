"""The search log partitioned by day: ``SearchEvent`` by its id, ``Impression`` by its event's id.

Event ids are UUIDv7 (``core.ids``): their first 48 bits are the Unix time in milliseconds, so a range of
ids is a range of time and a day of the log is one range partition of each table (migration 0021). The
bound of a day is the id made at its first millisecond with every other bit zero, below every real id of
that millisecond. Impressions are partitioned by ``event_id`` on the same bounds, so a search and its list
always share a day; their primary key in the database is ``(event_id, id)`` (a partitioned table's keys
must hold the partition key), while Django keeps ``id`` as the model's key.

Each table has a DEFAULT partition, so no row is ever refused: ids made before UUIDv7 (version 4,
random, so their first bits name no time) and any id outside the days created stay there. Days are
created ahead (``LOUPE_LOG_PARTITION_DAYS_AHEAD``) on every migrate and by the beat task; a new day is
made as a plain table and then attached, which locks the parent only in SHARE UPDATE EXCLUSIVE mode
(reads and writes go on); ids of the default that fall in a new day's range stay where they are and the
day is made of the ranges around them (``create_day``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import connection, transaction

from core.locks import transaction_lock

# (table, partition key): events first, since the impressions' foreign key points at them.
LOG_TABLES = (("feedback_searchevent", "id"), ("feedback_impression", "event_id"))


def time_floor(moment: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond: every id made at or after it sorts at or above."""
    ms = int(moment.timestamp() * 1000)
    return uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80)


def day_floor(day: date) -> uuid.UUID:
    return time_floor(datetime.combine(day, time(), tzinfo=UTC))


def event_ids_between(start: datetime, end: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    """Bounds on the ids of events made in ``[start, end)``: a filter on them lets the planner skip the
    other days (``id >= low AND id < high``; version 4 ids made before the partitions are not in it)."""
    return time_floor(start), time_floor(end)


@dataclass(frozen=True)
class LogDay:
    """One day's partition of one log table."""

    table: str
    day: date

    @property
    def name(self) -> str:
        return f"{self.table}_p{self.day:%Y%m%d}"

    @property
    def bounds(self) -> tuple[uuid.UUID, uuid.UUID]:
        return day_floor(self.day), day_floor(self.day + timedelta(days=1))


def default_partition(table: str) -> str:
    return f"{table}_default"


def partition_key(table: str) -> str:
    return dict(LOG_TABLES)[table]


def is_partitioned(cursor, table: str) -> bool:
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))", [table])
    return cursor.fetchone()[0]


def day_partitions(cursor, table: str) -> list[LogDay]:
    """The day partitions of ``table`` that exist, oldest first (the default is not among them)."""
    cursor.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass(%s) AND c.relname ~ '_p[0-9]{8}$' ORDER BY c.relname""",
        [table],
    )
    days = []
    for (name,) in cursor.fetchall():
        days.append(LogDay(table, datetime.strptime(name[-8:], "%Y%m%d").date()))
    return days


def pieces(low: uuid.UUID, high: uuid.UUID, taken: list[uuid.UUID]) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """``[low, high)`` less the ids already in the default partition: the ranges around them, in order."""
    ranges, start = [], low
    for held in sorted(taken):
        if start < held:
            ranges.append((start, held))
        start = uuid.UUID(int=held.int + 1)
    if start < high:
        ranges.append((start, high))
    return ranges


def create_day(cursor, day: date, *, concurrent: bool = True) -> bool:
    """Create ``day``'s partition of each log table (events first); False if they already exist.

    A row cannot move out of the default partition while clicks reference it (the foreign key to a
    partitioned table is checked per partition), so a day whose range holds ids already in the default
    (version 4 ids whose random first bits read as that day: one in ~3 million per day) is made of the
    ranges around them, ``_p20261203``, ``_p20261203_2``..., and those rows stay in the default.

    ``concurrent``: the new table is made plain and attached, which locks the parent only in SHARE UPDATE
    EXCLUSIVE mode; the default is proved free of the range by a CHECK validated under the same weak lock,
    so ATTACH need not scan it holding its ACCESS EXCLUSIVE lock. Without it (inside a migration, with the
    tables to itself), ``CREATE TABLE ... PARTITION OF``.
    """
    events = LogDay("feedback_searchevent", day)
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [events.name])
    if cursor.fetchone()[0]:
        return False
    low, high = events.bounds
    taken: set[uuid.UUID] = set()
    for table, key in LOG_TABLES:
        cursor.execute(
            f"SELECT DISTINCT {key} FROM {default_partition(table)} WHERE {key} >= %s AND {key} < %s", [low, high]
        )
        taken.update(row[0] for row in cursor.fetchall())
    for table, key in LOG_TABLES:
        for n, (start, end) in enumerate(pieces(low, high, list(taken)), start=1):
            name = LogDay(table, day).name + ("" if n == 1 else f"_{n}")
            if not concurrent:
                cursor.execute(f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM (%s) TO (%s)", [start, end])
                continue
            attach(cursor, table, key, name, start, end)
    return True


def attach(cursor, table: str, key: str, name: str, start: uuid.UUID, end: uuid.UUID) -> None:
    default = default_partition(table)
    within = f"{key} >= '{start}' AND {key} < '{end}'"
    cursor.execute(f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    # The bound as a CHECK on the new table and its negation on the default: ATTACH scans neither.
    cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bound CHECK ({within})")
    cursor.execute(f"ALTER TABLE {default} ADD CONSTRAINT {name}_elsewhere CHECK (NOT ({within})) NOT VALID")
    cursor.execute(f"ALTER TABLE {default} VALIDATE CONSTRAINT {name}_elsewhere")
    cursor.execute(f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')")
    cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bound")
    cursor.execute(f"ALTER TABLE {default} DROP CONSTRAINT {name}_elsewhere")


@dataclass(frozen=True)
class PartitionsAhead:
    """What one run of the partition task did."""

    created: list[date]
    through: date


def create_partitions_ahead(today: date | None = None, days_ahead: int | None = None) -> PartitionsAhead:
    """Make sure the log has a partition for today and each of the next ``days_ahead`` days."""
    today = today or datetime.now(UTC).date()
    days_ahead = settings.LOUPE_LOG_PARTITION_DAYS_AHEAD if days_ahead is None else days_ahead
    with connection.cursor() as cursor:
        if not is_partitioned(cursor, "feedback_searchevent"):
            return PartitionsAhead([], today)
    created = []
    for offset in range(days_ahead + 1):
        day = today + timedelta(days=offset)
        # One day a transaction: ATTACH holds the default's ACCESS EXCLUSIVE lock until commit, so commit soon;
        # and give up rather than queue searches behind a long reader of the default (the next run retries).
        with transaction.atomic(), connection.cursor() as cursor:
            transaction_lock("feedback.partitions")  # two runs would both try to create the same table
            cursor.execute("SET LOCAL lock_timeout = '5s'")
            # A table with deferred foreign-key checks pending cannot be altered: check them now (inside a
            # caller's transaction; a transaction of its own has none).
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            if create_day(cursor, day):
                created.append(day)
    return PartitionsAhead(created, today + timedelta(days=days_ahead))


@dataclass(frozen=True)
class PartitionSize:
    """One partition of a log table as the catalogue sees it (rows are the planner's estimate)."""

    table: str
    partition: str
    bounds: str
    rows: int
    bytes: int


def partition_sizes() -> list[PartitionSize]:
    """Every partition of the log tables, the default first, then by day."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT p.relname, c.relname, pg_get_expr(c.relpartbound, c.oid), greatest(c.reltuples, 0)::bigint,
                      pg_total_relation_size(c.oid)
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = ANY(%s)
            ORDER BY p.relname DESC, c.relname NOT LIKE '%%_default', c.relname""",
            [[table for table, _ in LOG_TABLES]],
        )
        return [PartitionSize(*row) for row in cursor.fetchall()]

"""The search log becomes partitioned by day: SearchEvent by id, Impression by event_id (issue 21, item 1).

Both tables grow with traffic (~24 impressions a search). A table cannot be turned into a partitioned one
in place, so each is rebuilt: a new partitioned table with the same columns, defaults and checks gets a
DEFAULT partition and one partition per day from the oldest UUIDv7 event to ``LOUPE_LOG_PARTITION_DAYS_AHEAD``
days ahead (``feedback.partitions``); every row is copied into it (each lands in its day; version 4 ids,
made before events were UUIDv7, land in the default), the old table is dropped and the new one takes its
name; then what pointed at the old table is made again exactly as the catalogue described it before:
its indexes and foreign keys (those of clicks and ratings to events included), its triggers (the summary
and analytics stale marks) and the views over it (trust, bursts, the feedback channel's top lists, whose
materialised rows are recomputed from the same log, so they are equal).

The impressions' primary key in the database becomes ``(event_id, id)``: a partitioned table's unique
keys must hold its partition key. Django keeps ``id`` as the model's primary key (state unchanged).
Going back rebuilds plain tables the same way.

The copy runs inside the migration's transaction with the log locked: on a large log run it in a
maintenance window (docs/deploy.md: "Partitioning an existing log").
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import migrations, models

import core.ids
from feedback.partitions import create_day, default_partition, partition_key

TABLES = ("feedback_searchevent", "feedback_impression")

DEPENDENT_VIEWS = """
WITH RECURSIVE deps AS (
    SELECT DISTINCT r.ev_class AS oid FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
    WHERE d.refobjid = ANY(%(tables)s::regclass[]) AND r.ev_class <> d.refobjid
    UNION
    SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN deps ON d.refobjid = deps.oid
    WHERE r.ev_class <> d.refobjid
)
SELECT c.relname, c.relkind, pg_get_viewdef(c.oid) FROM deps JOIN pg_class c ON c.oid = deps.oid ORDER BY c.oid
"""


def _fetch(cursor, sql: str, params=None) -> list[tuple]:
    cursor.execute(sql, params or {})
    return cursor.fetchall()


def _describe(cursor) -> dict:
    """What must be made again after the tables are swapped: read from the catalogue, not restated here."""
    tables = list(TABLES)
    views = _fetch(cursor, DEPENDENT_VIEWS, {"tables": tables})
    view_names = [name for name, _, _ in views]
    return {
        "views": views,
        "view_indexes": _fetch(
            cursor, "SELECT indexdef FROM pg_indexes WHERE tablename = ANY(%(v)s) ORDER BY indexname", {"v": view_names}
        ),
        # Foreign keys from these tables and to them (clicks' and ratings' included), but not the primary keys.
        "foreign_keys": _fetch(
            cursor,
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE contype = 'f' AND conparentid = 0
              AND (conrelid = ANY(%(t)s::regclass[]) OR confrelid = ANY(%(t)s::regclass[]))
            ORDER BY conname""",
            {"t": tables},
        ),
        "unique": _fetch(
            cursor,
            """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE contype = 'u' AND conparentid = 0 AND conrelid = ANY(%(t)s::regclass[]) ORDER BY conname""",
            {"t": tables},
        ),
        "indexes": _fetch(
            cursor,
            """SELECT indexdef FROM pg_indexes i
            WHERE i.tablename = ANY(%(t)s) AND NOT EXISTS (
                SELECT 1 FROM pg_constraint c WHERE c.conindid = to_regclass(i.schemaname || '.' || i.indexname))
            ORDER BY indexname""",
            {"t": tables},
        ),
        "triggers": _fetch(
            cursor,
            """SELECT pg_get_triggerdef(oid) FROM pg_trigger
            WHERE NOT tgisinternal AND tgparentid = 0 AND tgrelid = ANY(%(t)s::regclass[]) ORDER BY tgname""",
            {"t": tables},
        ),
    }


def _first_day(cursor):
    """The day of the oldest version 7 event id (None when there is none)."""
    cursor.execute("SELECT id FROM feedback_searchevent WHERE substr(id::text, 15, 1) = '7' ORDER BY id LIMIT 1")
    row = cursor.fetchone()
    if row is None:
        return None
    (oldest,) = row
    return datetime.fromtimestamp((oldest.int >> 80) / 1000, tz=UTC).date()


def rebuild(cursor, partitioned: bool) -> None:
    described = _describe(cursor)
    today = datetime.now(UTC).date()
    first = min(filter(None, [_first_day(cursor), today]))
    for name, kind, _ in reversed(described["views"]):
        cursor.execute(f"DROP {'MATERIALIZED VIEW' if kind == 'm' else 'VIEW'} IF EXISTS {name}")
    for table in TABLES:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    for table in TABLES:
        identity = " INCLUDING IDENTITY" if table == "feedback_impression" else ""
        by = f" PARTITION BY RANGE ({partition_key(table)})" if partitioned else ""
        cursor.execute(f"CREATE TABLE {table} (LIKE {table}_old INCLUDING DEFAULTS INCLUDING CONSTRAINTS{identity}){by}")
        if partitioned:
            cursor.execute(f"CREATE TABLE {default_partition(table)} PARTITION OF {table} DEFAULT")
    if partitioned:
        day = first
        while day <= today + timedelta(days=settings.LOUPE_LOG_PARTITION_DAYS_AHEAD):
            create_day(cursor, day, concurrent=False)
            day += timedelta(days=1)
    for table in TABLES:
        cursor.execute(f"INSERT INTO {table} SELECT * FROM {table}_old")
    cursor.execute("DROP TABLE feedback_impression_old")
    cursor.execute("DROP TABLE feedback_searchevent_old CASCADE")  # the clicks' and ratings' foreign keys go too
    # The impression ids go on from where they were, from a sequence of the old name.
    cursor.execute("SELECT pg_get_serial_sequence('feedback_impression', 'id')")
    (sequence,) = cursor.fetchone()
    cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO feedback_impression_id_seq")
    cursor.execute(
        "SELECT setval('feedback_impression_id_seq', coalesce(max(id), 0) + 1, false) FROM feedback_impression"
    )
    cursor.execute("ALTER TABLE feedback_searchevent ADD CONSTRAINT feedback_searchevent_pkey PRIMARY KEY (id)")
    impression_key = "(event_id, id)" if partitioned else "(id)"
    cursor.execute(f"ALTER TABLE feedback_impression ADD CONSTRAINT feedback_impression_pkey PRIMARY KEY {impression_key}")
    for table, name, definition in described["unique"]:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    for (definition,) in described["indexes"]:
        cursor.execute(definition)
    for table, name, definition in described["foreign_keys"]:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
    for (definition,) in described["triggers"]:
        cursor.execute(definition)
    for name, kind, query in described["views"]:
        cursor.execute(f"CREATE {'MATERIALIZED VIEW' if kind == 'm' else 'VIEW'} {name} AS {query}")
    for (definition,) in described["view_indexes"]:
        cursor.execute(definition)


# A row trigger on a partitioned table fires with TG_TABLE_NAME naming the partition the row is in, so the
# stale-mark functions (0014, 0017) must know a search by the start of the name.
MARK_FUNCTIONS = ("feedback_mark_search_hour", "feedback_mark_summary_stale")
BY_NAME = "TG_TABLE_NAME = 'feedback_searchevent'"
BY_PREFIX = "TG_TABLE_NAME LIKE 'feedback_searchevent%'"


def recognise_partitions(cursor, old: str, new: str) -> None:
    for function in MARK_FUNCTIONS:
        cursor.execute("SELECT pg_get_functiondef(%s::regproc)", [function])
        (definition,) = cursor.fetchone()
        if old not in definition:
            raise ValueError(f"{function} no longer tells a search by {old!r}: say again how it knows one")
        cursor.execute(definition.replace(old, new))


def forwards(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        rebuild(cursor, partitioned=True)
        recognise_partitions(cursor, BY_NAME, BY_PREFIX)


def backwards(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        rebuild(cursor, partitioned=False)
        recognise_partitions(cursor, BY_PREFIX, BY_NAME)


class Migration(migrations.Migration):
    dependencies = [("feedback", "0021_event_layout")]

    operations = [
        migrations.RunPython(forwards, backwards),
        # New events made through the ORM (tests, simulations) get time-ordered ids too, so they land in their day.
        migrations.AlterField(
            model_name="searchevent",
            name="id",
            field=models.UUIDField(default=core.ids.uuid7, editable=False, primary_key=True, serialize=False),
        ),
    ]

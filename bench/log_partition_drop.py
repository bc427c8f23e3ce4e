"""What dropping one day of the search log costs: a day partition dropped against a bulk DELETE of the same day.

Builds ``--impressions`` impressions (24 a search, 8 serve-time features each) spread over ``--days`` days,
written by ``INSERT ... SELECT`` on the server (the fastest load PostgreSQL has for generated rows; COPY
from a client would only add the transfer), with UUIDv7 event ids of their time (``uuidv7(shift)``), into
the partitioned log of migration 0021; and the same rows into plain (unpartitioned) copies of the two
tables with the same keys and indexes, the baseline. No clicks or ratings: a click referencing an event of
the day would stop the drop (the foreign key; docs/deploy.md says what retention must do about that).

For the oldest day it times, while a reader thread looks impressions up by event id in a loop:

- partitions: detach and drop that day's impression partition, then its event partition, each statement
  in its own transaction (``ACCESS EXCLUSIVE`` on the parent until that commit: the lock time is the
  longest transaction);
- baseline: ``DELETE`` of the same day's impressions, then events, from the plain copies (row locks
  only, but the rows' I/O, WAL and the foreign-key checks at commit).

and reports each one's seconds, the reader's slowest lookup during it, and the rows left (checked equal).
Prints and saves docs/bench/log_partition_drop.json and .png.

Run (from the repo root, after bin/setup dev; a fresh var folder of its own):
    .venv/bin/python bench/log_partition_drop.py --impressions 2000000 --days 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench" / "log_partition_drop.json"
PER_SEARCH = 24


def setup() -> None:
    os.environ["LOUPE_VAR_DIR"] = tempfile.mkdtemp(prefix="loupe-partition-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


EVENTS = """
INSERT INTO feedback_searchevent (id, user_key, session, network, surface, kind, query_text, normalised_query,
    tags, page, page_size, arm, ranker, encoder_version_id, feature_names, result_count, created_at)
SELECT uuidv7(at - now()), 'anon:user-' || (n %% 5000), '', 'net' || (n %% 50), 'web', 'text', 'q' || (n %% 997),
    'q' || (n %% 997), '{}', 1, 24, '', 'embedding', %(version)s, '{a,b,c,d,e,f,g,h}', 24, at
FROM (SELECT n, %(start)s::timestamptz + (n::float8 / %(searches)s) * %(span)s::interval AS at
      FROM generate_series(0, %(searches)s - 1) n) drawn
"""
IMPRESSIONS = """
INSERT INTO feedback_impression (event_id, image_id, position, score, features, team)
SELECT e.id, %(first)s + (abs(hashtext(e.id::text)) + p) %% %(images)s, p, 1.0 / p,
    ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, p::float8], ''
FROM feedback_searchevent e, generate_series(1, 24) p
"""
BASELINE = """
CREATE TABLE bench_event_flat (LIKE feedback_searchevent INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench_event_flat ADD PRIMARY KEY (id);
CREATE INDEX ON bench_event_flat (created_at);
INSERT INTO bench_event_flat SELECT * FROM feedback_searchevent;
CREATE TABLE bench_impression_flat (LIKE feedback_impression INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench_impression_flat ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ON bench_impression_flat (event_id, position);
CREATE UNIQUE INDEX ON bench_impression_flat (event_id, image_id);
CREATE INDEX ON bench_impression_flat (image_id);
INSERT INTO bench_impression_flat SELECT * FROM feedback_impression;
ALTER TABLE bench_impression_flat ADD FOREIGN KEY (event_id) REFERENCES bench_event_flat (id)
    DEFERRABLE INITIALLY DEFERRED;
ANALYZE bench_event_flat;
ANALYZE bench_impression_flat;
ANALYZE feedback_searchevent;
ANALYZE feedback_impression
"""


def build(impressions: int, days: int, images: int) -> dict:
    from django.db import connection

    from collection.models import EncoderVersion, Image

    Image.objects.bulk_create(
        Image(sha256=f"{n:064x}", file=f"bench/{n}.jpg", thumbnail="", width=64, height=48, format="JPEG", byte_size=1)
        for n in range(images)
    )
    version = EncoderVersion.objects.create(model_ref="bench/partitions", fingerprint="0" * 64, name="b", dimension=8)
    searches = impressions // PER_SEARCH
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days - 1)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Loaded without triggers or foreign-key checks (the stale marks and the checks would be most of the
        # load); the drop and the DELETE below run with all of them on.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("SELECT min(id) FROM searchapp_image")
        first_image = cursor.fetchone()[0]
        # The days before today must have partitions for the rows to land in them: made as the task makes them.
        from feedback.partitions import create_day

        for offset in range(days):
            create_day(cursor, (start + timedelta(days=offset)).date())
        span = timedelta(days=days) - timedelta(minutes=1) if days > 1 else timedelta(hours=12)
        cursor.execute(EVENTS, {"version": version.pk, "start": start, "searches": searches, "span": span})
        cursor.execute(IMPRESSIONS, {"images": images, "first": first_image})
        cursor.execute("SET session_replication_role = DEFAULT")
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for statement in BASELINE.split(";\n"):
            cursor.execute(statement)
    return {
        "searches": searches,
        "load_seconds": round(loaded, 1),
        "baseline_copy_seconds": round(time.perf_counter() - started, 1),
    }


class Reader(threading.Thread):
    """Looks impressions up by event id in a loop, on its own connection; keeps each lookup's seconds."""

    def __init__(self, table: str, ids: list):
        super().__init__(daemon=True)
        self.table, self.ids, self.stop, self.times = table, ids, threading.Event(), []

    def run(self) -> None:
        import psycopg
        from django.db import connection

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        with psycopg.connect(**params, autocommit=True) as conn, conn.cursor() as cursor:
            n = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                cursor.execute(f"SELECT count(*) FROM {self.table} WHERE event_id = %s", [self.ids[n % len(self.ids)]])
                cursor.fetchone()
                self.times.append((started, time.perf_counter() - started))
                n += 1
                time.sleep(0.005)


def timed(statements: list[tuple[str, list]], reader_table: str, ids: list) -> dict:
    from django.db import connection, transaction

    reader = Reader(reader_table, ids)
    reader.start()
    time.sleep(1.0)
    started = time.perf_counter()
    # Each statement in its own transaction, timed to the end of its commit: a lock is held until then, so a
    # transaction's seconds are its lock's (in one transaction the first DETACH's lock would last them all).
    steps = []
    for sql, params in statements:
        step = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
        steps.append(
            {"statement": sql.split(" WHERE ")[0], "seconds_with_commit": round(time.perf_counter() - step, 4)}
        )
    ended = time.perf_counter()
    time.sleep(1.0)
    reader.stop.set()
    reader.join()
    during = [seconds for at, seconds in reader.times if at + seconds >= started and at <= ended]
    before = sorted(seconds for at, seconds in reader.times if at + seconds < started)
    return {
        "seconds": round(ended - started, 4),
        "longest_transaction_seconds": max(step["seconds_with_commit"] for step in steps),
        "steps": steps,
        "reader_lookups_during": len(during),
        "reader_slowest_during_ms": round(1000 * max(during, default=0.0), 1),
        "reader_median_before_ms": round(1000 * before[len(before) // 2], 2) if before else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=2_000_000)
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    if args.days < 2:
        parser.error("--days must be at least 2 (one day is dropped, the rest stay)")
    setup()
    from django.db import connection

    from feedback.partitions import LogDay

    built = build(args.impressions, args.days, args.images)
    day = (datetime.now(UTC) - timedelta(days=args.days - 1)).date()
    events, impressions = LogDay("feedback_searchevent", day), LogDay("feedback_impression", day)
    low, high = events.bounds
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {impressions.name}")
        day_impressions = cursor.fetchone()[0]
        cursor.execute(f"SELECT count(*) FROM {events.name}")
        day_events = cursor.fetchone()[0]
        cursor.execute("SELECT id FROM feedback_searchevent ORDER BY random() LIMIT 500")
        ids = [row[0] for row in cursor.fetchall()]
        cursor.execute(
            "SELECT pg_total_relation_size('bench_impression_flat') + pg_total_relation_size('bench_event_flat')"
        )
        flat_bytes = cursor.fetchone()[0]

    baseline = timed(
        [
            ("DELETE FROM bench_impression_flat WHERE event_id >= %s AND event_id < %s", [low, high]),
            ("DELETE FROM bench_event_flat WHERE id >= %s AND id < %s", [low, high]),
        ],
        "bench_impression_flat",
        ids,
    )
    partitions = timed(
        [
            (f"ALTER TABLE feedback_impression DETACH PARTITION {impressions.name}", []),
            (f"DROP TABLE {impressions.name}", []),
            (f"ALTER TABLE feedback_searchevent DETACH PARTITION {events.name}", []),
            (f"DROP TABLE {events.name}", []),
        ],
        "feedback_impression",
        ids,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM feedback_impression), (SELECT count(*) FROM bench_impression_flat)"
        )
        left, left_flat = cursor.fetchone()
    assert left == left_flat == args.impressions // PER_SEARCH * PER_SEARCH - day_impressions, (left, left_flat)

    result = {
        "command": "bench/log_partition_drop.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.machine()}",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "impressions": args.impressions // PER_SEARCH * PER_SEARCH,
        "days": args.days,
        "dropped_day": day.isoformat(),
        "dropped_impressions": day_impressions,
        "dropped_searches": day_events,
        "log_bytes_unpartitioned": flat_bytes,
        **built,
        "partition_drop": partitions,
        "bulk_delete": baseline,
    }
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.output.with_suffix(".png"))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["drop the day's partitions", "DELETE the day's rows"]
    seconds = [result["partition_drop"]["seconds"], result["bulk_delete"]["seconds"]]
    stalls = [
        result["partition_drop"]["reader_slowest_during_ms"] / 1000,
        result["bulk_delete"]["reader_slowest_during_ms"] / 1000,
    ]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([0, 1], seconds, width=0.4, label="statement seconds")
    ax.bar([0.4, 1.4], stalls, width=0.4, label="slowest concurrent lookup (s)")
    ax.set_xticks([0.2, 1.2], names)
    ax.set_yscale("log")
    ax.set_ylabel("seconds (log)")
    ax.set_title(f"One day ({result['dropped_impressions']:,} impressions) of {result['impressions']:,}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

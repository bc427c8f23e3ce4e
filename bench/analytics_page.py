"""The search analytics page's load time with rollups equivalent to 1 million logged searches.

Seeds the rollups directly (``SearchHour`` per hour x surface, ``QueryDay``, ``AnalyticsUser`` and
``DayUsers`` written with COPY) as the fold would leave them after ``--searches`` searches over ``--days``
days on three surfaces (queries Zipf-distributed over ``--queries`` distinct ones, ``--users`` users),
then times the page (Django test client, a signed-in superuser, the whole range, per day and per hour
over the last two days, one surface). Two baselines in the same run: the same page over rollups of 1%
of the traffic, and the distinct-user counts as the page computed them before ``DayUsers``
(count(DISTINCT) over one row per user, day and surface, seeded into a temporary table) against the
union of the day arrays, which must give the same numbers. Prints and saves docs/bench/analytics_page.json
and its plot.

Run (from the repo root, after bin/setup dev; a fresh var folder of its own):
    .venv/bin/python bench/analytics_page.py --searches 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench" / "analytics_page.json"
PLOT = OUT.with_suffix(".png")
SURFACES = ["page", "api", "partner"]


def setup() -> None:
    os.environ["LOUPE_VAR_DIR"] = tempfile.mkdtemp(prefix="loupe-analytics-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(searches: int, days: int, queries: int, users: int, start: date, seed: int = 0) -> dict:
    """Rollup rows as the fold leaves them for ``searches`` searches; returns the row counts."""
    from django.db import connection

    from feedback.analytics.latency import bucket_of
    from feedback.erasure import key_digest
    from feedback.models import AnalyticsUser, DayUsers, QueryDay, SearchHour

    rng = np.random.default_rng(seed)
    for model in (SearchHour, QueryDay, DayUsers, AnalyticsUser):
        model.objects.all().delete()
    hours = days * 24
    day_of = rng.integers(0, days, searches)
    surface_of = rng.choice(3, searches, p=[0.6, 0.1, 0.3])
    query_of = np.minimum(rng.zipf(1.2, searches), queries) - 1
    user_of = rng.integers(0, users, searches)
    hour_of = day_of * 24 + rng.integers(0, 24, searches)
    now = datetime.now(UTC)
    base = datetime.combine(start, datetime.min.time(), tzinfo=UTC)
    rows = []
    per_hour = np.bincount(hour_of * 3 + surface_of, minlength=hours * 3).reshape(hours, 3)
    for h in range(hours):
        for s, name in [(None, ""), *enumerate(SURFACES)]:
            n = int(per_hour[h].sum() if s is None else per_hour[h, s])
            if not n:
                continue
            latency = rng.lognormal(np.log(60), 0.5, min(n, 400))
            buckets: dict[str, int] = {}
            for value in latency:
                key = str(bucket_of(float(value)))
                buckets[key] = buckets.get(key, 0) + round(n / len(latency))
            clicked = int(n * 0.42)
            rows.append(
                SearchHour(
                    hour=base + timedelta(hours=h), surface=name, searches=n, users=int(n * 0.8),
                    clicked_searches=clicked, clicks=int(clicked * 1.3), abandoned=int(n * 0.5),
                    no_results=int(n * 0.03), ratings=int(n * 0.1), rating_sum=n * 0.07, latency_buckets=buckets,
                    clicks_by_channel={"clip": clicked // 2, "full_text": clicked // 3, "caption": clicked // 6},
                    explored=n // 50, swapped=n // 50, folded_at=now,
                )
            )  # fmt: skip
    SearchHour.objects.bulk_create(rows, batch_size=2000)
    query_keys, query_counts = np.unique(np.stack([day_of, surface_of, query_of]), axis=1, return_counts=True)
    user_keys = np.unique(np.stack([day_of, surface_of, user_of]), axis=1)
    with connection.cursor() as cursor:
        copy(cursor, QueryDay._meta.db_table, "day, surface, query, searches, no_results, clicked_searches",
             (f"{start + timedelta(days=int(d))}\t{SURFACES[s]}\tquery {q}\t{c}\t{c // 30}\t{int(c * 0.42)}\n"
              for (d, s, q), c in zip(query_keys.T, query_counts, strict=True)))  # fmt: skip
        # the dictionary's ids are the bench's user numbers + 1; the digests are those of their keys
        copy(cursor, AnalyticsUser._meta.db_table, "id, key_digest",
             (f"{u + 1}\t{key_digest(f'anon:user-{u}')}\n" for u in np.unique(user_of)))  # fmt: skip
        copy(cursor, DayUsers._meta.db_table, "day, surface, users, user_ids", day_user_rows(user_keys, start))
        # the previous layout, one row per user, day and surface: the "before" of the distinct-user counts
        cursor.execute("DROP TABLE IF EXISTS bench_user_day")
        cursor.execute("CREATE TEMP TABLE bench_user_day (day date, surface varchar(8), user_key varchar(200), "
                       "UNIQUE (day, surface, user_key))")  # fmt: skip
        old_rows = (f"{start + timedelta(days=int(d))}\t{SURFACES[s]}\tanon:user-{u}\n" for d, s, u in user_keys.T)
        copy(cursor, "bench_user_day", "day, surface, user_key", old_rows)
        cursor.execute("ANALYZE")
    return {"search_hours": len(rows), "query_days": int(query_keys.shape[1]), "user_days": int(user_keys.shape[1]),
            "day_users": DayUsers.objects.count()}  # fmt: skip


def day_user_rows(user_keys: np.ndarray, start: date):
    """One row per day and surface ('' = all surfaces), the users' ids sorted and packed, as the fold writes them."""
    for d in np.unique(user_keys[0]):
        of_day = user_keys[:, user_keys[0] == d]
        for s, name in [(None, ""), *enumerate(SURFACES)]:
            ids = np.unique(of_day[2] if s is None else of_day[2, of_day[1] == s]) + 1
            if ids.size:
                packed = ids.astype(">i4").tobytes().hex()  # bytea in COPY's text form: \\x and hex
                yield f"{start + timedelta(days=int(d))}\t{name}\t{ids.size}\t\\\\x{packed}\n"


def distinct_users_both_ways(chosen, repeat: int) -> dict:
    """The range's and each day's distinct users, by the previous count(DISTINCT) and by the day arrays."""
    from django.db import connection

    from feedback.analytics.report import _distinct_users, _users_per_bucket

    where, params = "day >= %s AND day <= %s", [chosen.start, chosen.end]
    if chosen.surface:
        where, params = where + " AND surface = %s", params + [chosen.surface]

    def before():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT day, count(DISTINCT user_key) FROM bench_user_day WHERE {where} GROUP BY day",
                           params)  # fmt: skip
            per_day = sorted(cursor.fetchall())
            cursor.execute(f"SELECT count(DISTINCT user_key) FROM bench_user_day WHERE {where}", params)
            return cursor.fetchone()[0], per_day

    def after():
        per_day = _users_per_bucket(chosen, {})
        return _distinct_users(chosen), sorted((at.date(), n) for at, n in per_day.items())

    timings, counted = {}, {}
    for name, count in [("count_distinct_user_days_ms", before), ("day_user_arrays_ms", after)]:
        took = []
        for _ in range(repeat):
            started = time.perf_counter()
            counted[name] = count()
            took.append(time.perf_counter() - started)
        timings[name] = round(float(np.median(took)) * 1000, 1)
    if counted["day_user_arrays_ms"] != counted["count_distinct_user_days_ms"]:
        raise AssertionError(f"the day arrays count {counted['day_user_arrays_ms'][0]} users, "
                             f"count(DISTINCT) {counted['count_distinct_user_days_ms'][0]}")  # fmt: skip
    return {**timings, "users": counted["day_user_arrays_ms"][0], "days": len(counted["day_user_arrays_ms"][1])}


def copy(cursor, table: str, columns: str, lines) -> None:
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as writer:
        buffer = io.StringIO()
        for line in lines:
            buffer.write(line)
            if buffer.tell() > 1 << 20:
                writer.write(buffer.getvalue())
                buffer = io.StringIO()
        writer.write(buffer.getvalue())


def time_page(client, url: str, repeat: int) -> dict:
    client.get(url)  # warm: template compilation, first connection
    took = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        took.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
    return {"median_ms": round(float(np.median(took)) * 1000, 1), "max_ms": round(max(took) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    from bench.search_latency import machine
    from feedback.analytics.report import AnalyticsFilter

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "a-long-bench-password")
    client = Client()
    client.force_login(user)
    start = date(2026, 10, 1)
    end = start + timedelta(days=args.days - 1)
    pages = {
        f"{args.days} days, per day, all surfaces": f"/admin/analytics/?start={start}&end={end}&bucket=day",
        "2 days, per hour, all surfaces": f"/admin/analytics/?start={end - timedelta(days=1)}&end={end}&bucket=hour",
        f"{args.days} days, per day, page only": f"/admin/analytics/?start={start}&end={end}&surface=page",
    }
    results = {}
    for label, searches in [("baseline (1% of the traffic)", args.searches // 100), ("full", args.searches)]:
        started = time.perf_counter()
        rows = seed(searches, args.days, args.queries, args.users, start)
        seeded = round(time.perf_counter() - started, 1)
        results[label] = {
            "searches": searches, "rows": rows, "seed_s": seeded,
            "pages": {name: time_page(client, url, args.repeat) for name, url in pages.items()},
            "distinct_users": {
                f"{args.days} days, {surface or 'all surfaces'}": distinct_users_both_ways(
                    AnalyticsFilter(start, end, surface=surface), args.repeat)
                for surface in ["", "page"]
            },
        }  # fmt: skip
        print(label, json.dumps(results[label], indent=1))
    report = {
        "command": " ".join(["bench/analytics_page.py", *sys.argv[1:]]),
        "machine": machine(),
        "settings": vars(args),
        "results": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, PLOT)
    print(f"saved {OUT} and {PLOT}")


def plot(results: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - plotting only when saving

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    labels = list(next(iter(results.values()))["pages"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(results)
    for n, (label, found) in enumerate(results.items()):
        ax.barh([i + n * width for i in range(len(labels))], [found["pages"][p]["median_ms"] for p in labels],
                height=width, label=f"{label}: {found['searches']:,} searches")  # fmt: skip
    ax.axvline(1000, color="crimson", linestyle="--", label="target: 1 s")
    ax.set_yticks([i + width / 2 for i in range(len(labels))], labels)
    ax.set_xlabel("page load, median ms (Django test client)")
    ax.set_title("Search analytics page over the rollups")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""What a feedback summary refresh costs: today's full refresh of the views against the incremental fold.

Builds a search log in SQL (24 impressions per search over ``--images`` images, queries Zipf-distributed
over ``--queries`` strings, returning users sharing ``--networks`` networks, a click on about half the searches at a
geometric position, a rating on 2%) spread over the last 30 days, up to each ``--sizes`` impressions.
At each size it folds the whole log once (the first fold), then, for each ``--new`` count, logs that
many new searches in the next hour (returning and new users alike) and times

- the baseline: ``REFRESH MATERIALIZED VIEW CONCURRENTLY`` of the three views of migrations 0012/0002
  (``feedback.summary_recomputation``), what the beat task ran until now, over the same log;
- the fold (``feedback.summary_fold.fold_summaries``): the hours those searches changed.

and checks that the folded tables equal the views' numbers. Prints and saves
docs/bench/summary_refresh.json and .png.

Run (from the repo root, after bin/setup dev; a fresh var folder of its own):
    .venv/bin/python bench/summary_refresh.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "bench" / "summary_refresh.json"
IMPRESSIONS_PER_SEARCH = 24
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def setup() -> None:
    os.environ["LOUPE_VAR_DIR"] = tempfile.mkdtemp(prefix="loupe-summary-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed_collection(images: int) -> int:
    """``images`` image rows (no files: the summaries never read them) and an encoder version; its id."""
    from collection.models import EncoderVersion, Image

    Image.objects.bulk_create(
        Image(
            sha256=f"{n:064x}", file=f"bench/{n}.jpg", thumbnail="", width=640, height=480, format="JPEG", byte_size=1
        )
        for n in range(images)
    )
    version, _ = EncoderVersion.objects.get_or_create(
        model_ref="bench/summaries", fingerprint="0" * 64, defaults={"name": "summary bench", "dimension": 8}
    )
    return version.pk


# One statement per table; %(…)s are the batch's parameters. Users and queries are skewed by powers of
# uniform draws (a few heavy users and head queries, a long tail); a query's results are a window of the
# collection that starts at a place fixed by the query, so repeated queries show the same images.
LOG_BATCH = """
CREATE TEMP TABLE bench_new AS
WITH drawn AS (
    SELECT floor(%(users)s * power(random(), 2))::int AS u, floor(%(queries)s * power(random(), 3))::int AS q,
           %(start)s::timestamptz + random() * %(span)s::interval AS at
    FROM generate_series(1, %(n)s)
), logged AS (
    INSERT INTO feedback_searchevent (id, user_key, session, network, surface, kind, query_text, normalised_query,
        tags, page, page_size, arm, ranker, encoder_version_id, feature_names, result_count, created_at)
    SELECT gen_random_uuid(), 'anon:user-' || u, '', 'net' || (u %% %(networks)s), 'web', 'text', 'q' || q, 'q' || q,
        '{}', 1, 24, '', 'embedding', %(version)s, '{}', 24, at
    FROM drawn
    RETURNING id, user_key, normalised_query, created_at
)
SELECT * FROM logged;
INSERT INTO feedback_impression (event_id, image_id, position, score, features, team)
SELECT n.id, %(first_image)s + (abs(hashtext(n.normalised_query)) + p) %% %(images)s, p, 1.0 / p, '{}', ''
FROM bench_new n CROSS JOIN generate_series(1, 24) p;
INSERT INTO feedback_click (event_id, image_id, position, user_key, client_id, created_at)
SELECT n.id, %(first_image)s + (abs(hashtext(n.normalised_query)) + c.p) %% %(images)s, c.p, n.user_key,
       n.id::text, n.created_at + interval '20 seconds'
FROM bench_new n CROSS JOIN LATERAL (SELECT least(24, 1 + floor(ln(1 - random()) / ln(0.7)))::int AS p) c
WHERE random() < 0.5;
INSERT INTO feedback_rating (user_key, image_id, event_id, query_text, scale, value, client_id, created_at)
SELECT n.user_key, %(first_image)s + (abs(hashtext(n.normalised_query)) + 1) %% %(images)s, n.id, n.normalised_query,
       'stars', 1 + floor(random() * 5)::int, n.id::text, n.created_at + interval '40 seconds'
FROM bench_new n WHERE random() < 0.02;
DROP TABLE bench_new
"""


def log_searches(n: int, start: datetime, span: timedelta, shape: dict) -> None:
    from django.db import connection

    from feedback.summary_fold import run

    with connection.cursor() as cursor:
        run(cursor, LOG_BATCH, {"n": n, "start": start, "span": span, **shape})
        cursor.execute("ANALYZE")


def build_to(impressions: int, shape: dict) -> int:
    """Log searches over the 30 days before NOW until the log holds ``impressions``; searches logged."""
    from feedback.models import Impression

    missing = max(0, impressions - Impression.objects.count()) // IMPRESSIONS_PER_SEARCH
    for batch in range(0, missing, 20_000):
        log_searches(min(20_000, missing - batch), NOW - timedelta(days=30), timedelta(days=30), shape)
    return missing


def summaries_equal() -> bool:
    """The folded tables hold the views' numbers (counts exactly, trust-weighted sums to 1e-9 relative)."""
    from django.db import connection

    checks = {
        "feedback_imagesummary": (["image_id"], ["impressions", "clicks", "ratings"], ["trusted_examinations"]),
        "feedback_queryimagesummary": (["query", "image_id"], ["impressions", "clicks"], ["trusted_clicks"]),
        "feedback_querysummary": (["query"], ["searches", "users", "impressions", "searches_with_click"], []),
    }
    with connection.cursor() as cursor:
        for table, (key, counts, weighted) in checks.items():
            differs = [f"a.{key[0]} IS NULL", f"b.{key[0]} IS NULL"]
            differs += [f"a.{c} IS DISTINCT FROM b.{c}" for c in counts]
            differs += [f"abs(a.{c} - b.{c}) > 1e-9 * greatest(1, abs(b.{c}))" for c in weighted]
            on = " AND ".join(f"a.{k} = b.{k}" for k in key)
            cursor.execute(
                f"SELECT count(*) FROM {table} a FULL JOIN {table}_full b ON {on} WHERE {' OR '.join(differs)}"
            )
            if cursor.fetchone()[0]:
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="impressions logged")
    parser.add_argument("--new", type=int, nargs="+", default=[100, 1_000, 10_000], help="new searches per fold")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument(
        "--networks", type=int, default=10_000, help="users share networks round robin (500 puts 40 on one)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    setup()

    from django.db import connection

    from collection.models import Image
    from feedback.models import Impression, SearchEvent
    from feedback.summary_fold import fold_summaries
    from feedback.summary_recomputation import create_full_views, refresh_full_views

    version = seed_collection(args.images)
    shape = {
        "version": version,
        "images": args.images,
        "first_image": Image.objects.order_by("pk").values_list("pk", flat=True).first(),
        "queries": args.queries,
        "users": args.users,
        "networks": args.networks,
    }
    create_full_views()
    results = []
    hour = NOW
    for size in sorted(args.sizes):
        started = time.perf_counter()
        build_to(size, shape)
        built = time.perf_counter() - started
        first = fold_summaries(everything=True)
        for new in args.new:
            log_searches(new, hour, timedelta(hours=1), {**shape, "users": int(args.users * 1.05)})
            hour += timedelta(hours=1)
            fold = fold_summaries()
            full = refresh_full_views()
            row = {
                "impressions": Impression.objects.count(),
                "searches": SearchEvent.objects.count(),
                "new_searches": new,
                "full_refresh_s": round(full, 3),
                "fold_s": fold.seconds,
                "fold_hours": fold.hours,
                "fold_searches_recounted": fold.searches,
                "first_fold_s": first.seconds,
                "equal": summaries_equal(),
                "log_build_s": round(built, 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    report = {
        "command": " ".join(["bench/summary_refresh.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "postgres": server},
        "shape": {k: v for k, v in vars(args).items() if k in ("images", "queries", "users", "networks")},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    if not all(row["equal"] for row in results):
        raise SystemExit("The folded summaries differ from the full recomputation (see 'equal').")


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for size in sorted({r["impressions"] // 100_000 * 100_000 for r in results}):
        rows = [r for r in results if r["impressions"] // 100_000 * 100_000 == size]
        news = [r["new_searches"] for r in rows]
        ax.plot(news, [r["full_refresh_s"] for r in rows], "o--", label=f"full refresh, ~{size:,} impressions")
        ax.plot(news, [r["fold_s"] for r in rows], "o-", label=f"fold, ~{size:,} impressions")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("new searches since the last refresh")
    ax.set_ylabel("seconds")
    ax.set_title("Feedback summary refresh: full recomputation vs incremental fold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

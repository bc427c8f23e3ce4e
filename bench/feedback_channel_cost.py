"""What the feedback retrieval channel (feedback.click_graph) adds to a search, over 100k images.

The channel adds one SQL round trip after CLIP (the nearest past queries from their HNSW index, their top
lists, the images' text flags) and one more list to fuse. This bench builds, in its own var folder
(var/benchfeedback, its own embedded PostgreSQL):

- ``--images`` image rows (100,000; the channel reads an image by primary key, never its vector);
- ``--past-queries`` distinct past queries (20,000), each searched by three established accounts whose
  searches show 10 images and who each click the same 5 of them, so every query has 5 images over the
  floor: 60,000 searches, 600,000 impressions, 300,000 clicks;
- the real summaries and the channel's materialised view refreshed over that log (timed), and one random
  512-d vector per past query (ViT-B/32's width), drawn around 2,000 "intents" so that paraphrases exist.

Then, per search, it times (median of ``--repeats``) the channel's query for ``--queries`` searches, half a
past query's own string with a vector near it (a repeat), half a new string whose vector is near a past
query's (a paraphrase), and the fusion stage with and without the channel's list over synthetic CLIP (100),
full-text (50) and caption (50) lists. The baseline is the fusion stage without the channel, in the same run;
what the channel adds to a search's p50 is its query's p50 plus the fusion difference.

Run:
    .venv/bin/python bench/feedback_channel_cost.py
It writes docs/bench/feedback_channel_cost.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_latency as base  # noqa: E402  (setup, percentiles and the machine description are shared)

DIMENSION = 512
INTENTS = 2000
SHOWN, CLICKED, USERS = 10, 5, 3


def build(images: int, past_queries: int, seed: int) -> dict:
    """The collection's rows and the feedback log, once per var folder; returns what it took."""
    from django.db import connection

    from collection.models import EncoderVersion, Image
    from feedback.models import Click, Impression, SearchEvent

    version, _ = EncoderVersion.objects.get_or_create(
        model_ref="bench:random-512", fingerprint="0" * 64, defaults={"name": "random-512", "dimension": DIMENSION}
    )
    took: dict = {}
    if Image.objects.count() < images:
        started = time.perf_counter()
        Image.objects.bulk_create(
            (
                Image(
                    sha256=f"{n:064x}", file=f"b/{n}", thumbnail=f"t/{n}", width=4, height=3, format="PNG", byte_size=1
                )
                for n in range(Image.objects.count(), images)
            ),
            batch_size=5000,
        )
        took["images_s"] = round(time.perf_counter() - started, 1)
    ids = np.asarray(Image.objects.order_by("pk").values_list("pk", flat=True)[:images])
    if SearchEvent.objects.count() < past_queries * USERS:
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        with connection.cursor() as cursor:
            # The analytics' per-row triggers (migration 0014) would mark 900k stale hours; the bench measures
            # search, not them. The log's rows are made consistent here, so the skipped FK checks lose nothing.
            cursor.execute("SET session_replication_role = replica")
        for start in range(0, past_queries, 1000):
            events, impressions, clicks = [], [], []
            for q in range(start, min(start + 1000, past_queries)):
                shown = rng.choice(ids, SHOWN, replace=False)
                for u in range(USERS):
                    user = f"account:{q % 997}-{u}"
                    event = SearchEvent(
                        user_key=user, kind="text", query_text=f"past query {q}", normalised_query=f"past query {q}",
                        page_size=SHOWN, encoder_version=version, result_count=SHOWN,
                    )  # fmt: skip
                    events.append(event)
                    impressions += [
                        Impression(event=event, image_id=int(i), position=p, score=0.5) for p, i in enumerate(shown, 1)
                    ]
                    clicks += [
                        Click(event=event, image_id=int(i), position=p, user_key=user, client_id=f"{q}-{p}")
                        for p, i in enumerate(shown[:CLICKED], 1)
                    ]
            SearchEvent.objects.bulk_create(events, batch_size=5000)
            Impression.objects.bulk_create(impressions, batch_size=10000)
            Click.objects.bulk_create(clicks, batch_size=10000)
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
            cursor.execute("ANALYZE")
        took["feedback_log_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for view in ("feedback_imagesummary", "feedback_querytopimage"):
            cursor.execute(f"REFRESH MATERIALIZED VIEW {view}")
    took["refresh_views_s"] = round(time.perf_counter() - started, 1)
    return {"version": version, "took": took}


def intent_vectors(past_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Past queries' vectors around INTENTS centres (cosine ~0.93 to their centre), and the centres."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(INTENTS, DIMENSION)))
    vectors = unit(
        centres[np.arange(past_queries) % INTENTS]
        + 0.4 / np.sqrt(DIMENSION) * rng.normal(size=(past_queries, DIMENSION))
    )
    return vectors, centres


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def write_vectors(version, vectors: np.ndarray) -> float:
    """The past queries' vectors and the version's HNSW index (what feedback.click_graph's refresh writes)."""
    from django.db import connection

    from collection.index import vector_literal
    from feedback.click_graph import PAST_QUERY_TABLE, _index_name

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {PAST_QUERY_TABLE} WHERE encoder_version_id = %s", [version.pk])
        cursor.executemany(
            f"INSERT INTO {PAST_QUERY_TABLE} (encoder_version_id, query, vector) VALUES (%s, %s, %s::vector)",
            [(version.pk, f"past query {q}", vector_literal(v)) for q, v in enumerate(vectors)],
        )
        cursor.execute(f"DROP INDEX IF EXISTS {_index_name(version)}")
        cursor.execute(
            f"CREATE INDEX {_index_name(version)} ON {PAST_QUERY_TABLE} "
            f"USING hnsw ((vector::vector({DIMENSION})) vector_cosine_ops) "
            f"WITH (m = 16, ef_construction = 64) WHERE encoder_version_id = {int(version.pk)}"
        )
        cursor.execute("ANALYZE")
    return round(time.perf_counter() - started, 1)


def synthetic_lists(rng, ids: np.ndarray) -> dict[str, list]:
    from collection.index import Neighbour

    def ranking(n: int) -> list:
        chosen = rng.choice(ids, n, replace=False)
        scores = np.sort(rng.uniform(0.2, 0.4, n))[::-1]
        return [Neighbour(int(i), float(s), True, True) for i, s in zip(chosen, scores, strict=True)]

    return {"clip": ranking(100), "fts": ranking(50), "caption": ranking(50)}


TIMED = (
    "channel query",
    "server: planning + execution",
    "round trip with a vector (yardstick)",
    "fusion without",
    "fusion with",
)


def server_seconds(version, vector: np.ndarray, text: str, min_similarity: float) -> float:
    """The channel query's planning + execution time as PostgreSQL reports it (EXPLAIN ANALYZE): what is
    left of the cost when the client's share of a loaded machine is taken out."""
    from django.db import connection

    from collection.index import TEXT_FLAGS_SQL, fetch_with_knobs, hnsw_knobs, vector_literal
    from feedback.click_graph import CHANNEL_SQL, HNSW_EF_SEARCH, NEIGHBOURS, PAST_QUERY_TABLE, TOP_VIEW

    sql = CHANNEL_SQL.format(d=DIMENSION, past=PAST_QUERY_TABLE, top=TOP_VIEW, text_flags=TEXT_FLAGS_SQL)
    params = {
        "vector": vector_literal(vector),
        "version": version.pk,
        "neighbours": NEIGHBOURS,
        "min_similarity": min_similarity,
        "query": text,
        "depth": 50,
    }
    assert not connection.in_atomic_block
    rows = fetch_with_knobs(hnsw_knobs(max(NEIGHBOURS, HNSW_EF_SEARCH)), "EXPLAIN (ANALYZE, SUMMARY) " + sql, params)
    times = [
        float(line.split(":")[1].split()[0]) for (line,) in rows if line.startswith(("Planning Time", "Execution Time"))
    ]
    return sum(times) / 1000


def vector_round_trip(vector: np.ndarray, repeats: int) -> float:
    """What any query that sends a 512-d vector pays on this machine now (SELECT of the literal)."""
    from django.db import connection

    from collection.index import vector_literal

    runs = []
    with connection.cursor() as cursor:
        for _ in range(repeats):
            started = time.perf_counter()
            cursor.execute(f"SELECT %s::vector({DIMENSION})", [vector_literal(vector)])
            cursor.fetchall()
            runs.append(time.perf_counter() - started)
    return float(np.median(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=base.ROOT / "var" / "benchfeedback")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--past-queries", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=base.OUT_DIR / "feedback_channel_cost.json")
    args = parser.parse_args()
    base.setup_django(args.var_dir, args.var_dir / "models" / "unused")  # no encoder: vectors are drawn here

    from django.conf import settings

    from collection.fusion import RRF
    from collection.fusion_setting import Fusion
    from collection.models import Image
    from feedback.click_graph import TOP_VIEW, chosen_images
    from searchapp.pipeline.fuse import first_stage
    from searchapp.pipeline.retrieve import FEEDBACK, Retrieved

    built = build(args.images, args.past_queries, args.seed)
    version = built["version"]
    vectors, _ = intent_vectors(args.past_queries, args.seed)
    built["took"]["past_query_vectors_and_index_s"] = write_vectors(version, vectors)
    rng = np.random.default_rng(args.seed + 1)
    ids = np.asarray(Image.objects.values_list("pk", flat=True)[: args.images])
    min_similarity = settings.LOUPE_FEEDBACK_CHANNEL_MIN_SIMILARITY
    samples: dict[str, list[float]] = {name: [] for name in TIMED}
    load_before = os.getloadavg()
    found = {"repeat": [], "paraphrase": []}
    for n in range(args.queries):
        q = int(rng.integers(args.past_queries))
        kind = "repeat" if n % 2 == 0 else "paraphrase"
        noise = (0.15 if kind == "repeat" else 0.3) / np.sqrt(DIMENSION) * rng.normal(size=DIMENSION)
        vector = unit((vectors[q] + noise)[None])[0]
        text = f"past query {q}" if kind == "repeat" else f"new phrasing {n}"
        runs, chosen = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            chosen = chosen_images(version, vector, text, depth=50, min_similarity=min_similarity)
            runs.append(time.perf_counter() - started)
        samples["channel query"].append(float(np.median(runs)))
        found[kind].append(len(chosen))
        samples["server: planning + execution"].append(server_seconds(version, vector, text, min_similarity))
        samples["round trip with a vector (yardstick)"].append(vector_round_trip(vector, args.repeats))
        lists = synthetic_lists(rng, ids)
        weights = {name: 1.0 for name in lists}
        without = Retrieved(vector, lists, weights, 0, 0)
        with_channel = Retrieved(vector, {**lists, FEEDBACK: chosen}, {**weights, FEEDBACK: 1.0}, 0, 0)
        for name, retrieved in (("fusion without", without), ("fusion with", with_channel)):
            runs = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                first_stage(retrieved, Fusion(RRF))
                runs.append(time.perf_counter() - started)
            samples[name].append(float(np.median(runs)))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), count(DISTINCT query) FROM {TOP_VIEW}")
        rows, queries = cursor.fetchone()
    timings = {
        name: {"p50": base.percentile_ms(v, 50), "p99": base.percentile_ms(v, 99)} for name, v in samples.items()
    }
    added = timings["channel query"]["p50"] + timings["fusion with"]["p50"] - timings["fusion without"]["p50"]
    results = {
        "machine": base.machine(),
        "command": " ".join(sys.argv),
        "images": int(Image.objects.count()),
        "past_queries_with_vectors": args.past_queries,
        "top_list_rows": int(rows),
        "top_list_queries": int(queries),
        "searches_timed": args.queries,
        "min_similarity": min_similarity,
        "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "images_found_mean": {kind: round(float(np.mean(v)), 2) for kind, v in found.items()},
        "build_seconds": built["took"],
        "timings_ms": timings,
        "baseline": "the fusion stage without the channel (same lists, same run)",
        "added_p50_ms": round(added, 3),
        "target_added_p50_ms": 2.0,
    }
    print(json.dumps(results, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timings = results["timings_ms"]
    names = list(TIMED)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.bar(names, [timings[n]["p50"] for n in names], color=["#47a", "#6ac", "#bbb", "#999", "#4a7"], label="p50")
    ax.scatter(names, [timings[n]["p99"] for n in names], color="#a44", zorder=3, label="p99")
    ax.axhline(results["target_added_p50_ms"], color="#a44", linestyle=":", label="2 ms target (added p50)")
    ax.set_ylabel("ms per search")
    ax.set_title(
        f"Feedback channel at {results['images']:,} images, {results['past_queries_with_vectors']:,} past queries:"
        f" +{results['added_p50_ms']:.2f} ms p50",
        fontsize=9,
    )
    ax.set_xticks(range(len(names)), [n.replace(" (", "\n(").replace(": ", ":\n") for n in names], fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

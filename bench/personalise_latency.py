"""What personalisation (ranking.personal) adds to a search: the same searches by users with history, personalised
and not, in one run.

Builds, in its own var folder (var/benchpersonal, its own embedded PostgreSQL), a collection of ``--images``
synthetic image rows with random unit vectors in the demo encoder's dimension (the tiny random-weight CLIP the
tests use: a speed measurement, no retrieval quality), three tags each from a vocabulary of 300, an HNSW index,
an active LightGBM ranker over the current feature list (synthetic training data: what it learned is
irrelevant to speed), and ``--users`` users with ``--history`` clicks each (the personal statement reads the
last 50).

Then each user searches (text encoding cached first, result cache off, the search logged as the product logs
it) in four passes: shared (``LOUPE_PERSONALISE`` off), personalised, shared again, personalised again. The
baseline is the shared passes of the same run; the added cost is the personalised p50 minus the shared p50
(the better of each pair). It also times the features statement alone for the reranked candidates.

Run:
    nice -n 5 .venv/bin/python bench/personalise_latency.py --images 20000 --users 200
It writes docs/bench/personalise_latency.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
OUT = ROOT / "docs" / "bench"
TAGS = 300


def setup(var_dir: Path, model_dir: Path) -> None:
    os.environ["LOUPE_VAR_DIR"] = str(var_dir)
    os.environ["LOUPE_CLIP_MODEL"] = str(model_dir)
    os.environ["LOUPE_ENCODER_FALLBACK"] = "false"
    os.environ["LOUPE_RESULT_CACHE_SECONDS"] = "0"  # every search computes its order
    os.environ["LOUPE_TEXT_CHANNEL"] = "false"
    os.environ["LOUPE_FEEDBACK_CHANNEL"] = "false"
    os.environ["LOUPE_SWAP_SHARE"] = "0"
    os.environ["LOUPE_EXPLORE_SHARE"] = "0"
    os.environ["LOUPE_DEFER_SEARCH_LOG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build(images: int, users: int, history: int, seed: int) -> dict:
    """Image rows, vectors, the index, the ranker and the users' clicks, once per var folder."""
    from django.db import connection

    from collection.index import ensure_hnsw_indexes
    from collection.models import Image, ImageEmbedding
    from collection.versions import serving_version
    from feedback.models import Click, SearchEvent

    _, version = serving_version()
    rng = np.random.default_rng(seed)
    took = {}
    if ImageEmbedding.objects.filter(encoder_version=version).count() < images:
        started = time.perf_counter()
        have = Image.objects.count()
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY searchapp_image (sha256, file, thumbnail, width, height, format, byte_size, tags, source, "
                "licence, attribution, created_at, has_captions, catalogue, metadata, updated_at) FROM STDIN"
            ) as copy,
        ):
            for n in range(have, images):
                tags = "{" + ",".join(f"t{t}" for t in rng.choice(TAGS, 3, replace=False)) + "}"
                copy.write_row(
                    (f"p{n:063d}", f"b/{n}", f"t/{n}", 4, 3, "png", 1, tags, "bench-synthetic", "", "",
                     "2026-01-01T00:00:00Z", False, "", "{}", "2026-01-01T00:00:00Z")
                )  # fmt: skip
        ids = list(Image.objects.order_by("pk").values_list("pk", flat=True)[:images])
        vectors = rng.normal(size=(len(ids), version.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY searchapp_imageembedding (image_id, encoder_version_id, vector) FROM STDIN") as copy,
        ):
            for image_id, vector in zip(ids, vectors, strict=True):
                copy.write_row((image_id, version.pk, "[" + ",".join(f"{x:.6g}" for x in vector) + "]"))
        ensure_hnsw_indexes(version)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        took["collection_s"] = round(time.perf_counter() - started, 1)
    if SearchEvent.objects.filter(user_key__startswith="account:bench-").count() < users:
        started = time.perf_counter()
        ids = np.asarray(Image.objects.order_by("pk").values_list("pk", flat=True)[:images])
        events, clicks = [], []
        for u in range(users):
            user = f"account:bench-{u}"
            for h in range(history):
                event = SearchEvent(
                    user_key=user, kind="text", query_text=f"past {h}", normalised_query=f"past {h}",
                    page_size=24, encoder_version=version, result_count=24,
                )  # fmt: skip
                events.append(event)
                clicks.append(Click(event=event, image_id=int(rng.choice(ids)), position=1, user_key=user,
                                    client_id=f"{u}-{h}"))  # fmt: skip
        SearchEvent.objects.bulk_create(events, batch_size=5000)
        Click.objects.bulk_create(clicks, batch_size=5000)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        took["history_s"] = round(time.perf_counter() - started, 1)
    return {"version": version, "took": took}


def ensure_ranker() -> str:
    """An active LightGBM ranker over the current features (synthetic data: its cost, not its quality)."""
    from django.utils import timezone

    from ranking.features import NAMES
    from ranking.ltr import RankingData, train_ranker
    from ranking.models import RankerVersion
    from ranking.registry import promote, save_candidate

    active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE, feature_names=NAMES).first()
    if active is not None:
        return active.label
    rng = np.random.default_rng(0)

    def searches(n: int) -> RankingData:
        X = rng.normal(size=(n * 50, len(NAMES)))
        y = ((X[:, 0] + 0.5 * X[:, -2] + rng.normal(scale=0.5, size=len(X))) > 1.5).astype(float)
        return RankingData(X, y, np.full(n, 50), feature_names=list(NAMES))

    trained = train_ranker(searches(2000), searches(300))
    now = timezone.now()
    version = save_candidate(
        trained, trained_from=now, trained_until=now, train_searches=2000, validation_searches=300, metrics={}
    )
    return promote(version).label


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)) * 1000, 2)


def measure(users: int, repeats: int) -> dict:
    from django.conf import settings

    from feedback.identity import Viewer
    from ranking.features import fetch_facts
    from ranking.personal import Personal
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    texts = [f"a photo of a thing number {u}" for u in range(users)]
    for text in texts:
        service.encoder.encode_query(text)
    viewers = [Viewer(user_key=f"account:bench-{u}", network=f"net-{u}") for u in range(users)]
    passes: dict[str, list[float]] = {}
    labels = []
    for label, personalise in (("shared", False), ("personalised", True)) * repeats:
        settings.LOUPE_PERSONALISE = personalise
        samples = []
        for text, viewer in zip(texts, viewers, strict=True):
            started = time.perf_counter()
            response = service.search(SearchRequest(text=text, page_size=24), viewer)
            samples.append(time.perf_counter() - started)
        assert response.ranker != "embedding", "the ranker must serve (feature names of the active ranker)"
        passes.setdefault(label, []).append(percentile_ms(samples, 50))
        labels.append({"pass": label, "p50": percentile_ms(samples, 50), "p99": percentile_ms(samples, 99)})
    # The features statement alone, for the top 100 of a search: the part personalisation changes.
    ids = [h.image.pk for h in service.search(SearchRequest(text=texts[0], page_size=100)).hits]
    statement = {"shared": [], "personalised": []}
    for _ in range(3):
        for viewer in viewers:
            for label in statement:
                personal = Personal(viewer.user_key, _now()) if label == "personalised" else None
                started = time.perf_counter()
                fetch_facts(service.version, None, ids, "", need_cosine=[], personal=personal)
                statement[label].append(time.perf_counter() - started)
    shared, personalised = min(passes["shared"]), min(passes["personalised"])
    return {
        "passes": labels,
        "search_p50_ms": {"shared": shared, "personalised": personalised},
        "added_p50_ms": round(personalised - shared, 2),
        "features_statement_ms": {
            label: {"p50": percentile_ms(s, 50), "p99": percentile_ms(s, 99)} for label, s in statement.items()
        },
        "statement_candidates": len(ids),
    }


def _now():
    from django.utils import timezone

    return timezone.now()


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    labels = ["shared", "personalised"]
    axes[0].bar(labels, [result["search_p50_ms"][k] for k in labels], color=["#888", "#2a6"])
    axes[0].set_ylabel("search p50 (ms)")
    axes[0].set_title(f"search, {result['images']:,} images")
    statement = result["features_statement_ms"]
    axes[1].bar(labels, [statement[k]["p50"] for k in labels], color=["#888", "#2a6"])
    axes[1].set_ylabel("p50 (ms)")
    axes[1].set_title(f"features statement, {result['statement_candidates']} candidates")
    fig.suptitle("Personalisation cost (same run; 2 cores, no GPU; tiny random-weight CLIP)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "benchpersonal")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "test" / "models" / "tiny-clip")
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--history", type=int, default=60, help="clicks per user (the statement reads the last 50)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=OUT / "personalise_latency.json")
    args = parser.parse_args()
    setup(args.var_dir, args.model_dir)
    from django.conf import settings

    settings.LOUPE_RANKER_CHECK_SECONDS = 3600
    built = build(args.images, args.users, args.history, seed=0)
    ranker = ensure_ranker()
    measured = measure(args.users, args.repeats)
    from search_latency import machine

    result = {
        "command": " ".join(["bench/personalise_latency.py", *sys.argv[1:]]),
        "machine": machine(),
        "images": args.images,
        "users": args.users,
        "clicks_per_user": args.history,
        "rerank_depth": settings.LOUPE_RERANK_DEPTH,
        "ranker": ranker,
        "build": built["took"],
        **measured,
    }
    print(json.dumps(result, indent=2))
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.output.with_suffix(".png"))


if __name__ == "__main__":
    main()

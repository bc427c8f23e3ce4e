"""A takedown while searches run: seconds, the longest batch transaction, search p50/p99 before and during.

Two collections:

- ``--caltech`` (the issue's bench: ``--caltech --images 2000 --remove 1000``): that many Caltech 101
  photos ingested the product's way (``ingest_items``, one pass with the serving encoder): real files and
  thumbnails on disk, a vector and a cached tower output each, the class name as tag and caption (with
  full-text documents and caption vectors), and the product's result cache on (LOUPE_RESULT_CACHE_SECONDS
  as configured), so a takedown must reach cached pages too. After it, every removed image's file and
  thumbnail is gone from disk and a search for each class returns none of them (checked, the run stops
  otherwise). The encoder is the tiny demo CLIP: its vectors are real tower outputs but not CLIP quality,
  and its text tower is cheaper than ViT-B/32's (the latencies are the pipeline's, not a full-size model's).
- synthetic (default): ``--images`` rows with two captions each, random vectors, 1-byte files and
  thumbnails, the result cache off.

Both seed ``--searches`` logged searches of 20 impressions each with a click, so a takedown detaches real
feedback rows. Then, in the same run and on the same machine:

- baseline: text searches (the real pipeline: encode, retrieve, fuse, page, log inline) for
  ``--seconds`` with nothing else running;
- during: the same searches while another thread takes ``--remove`` images down in batches of 500.

Reports the takedown's wall time (the fence, the batches, the files), each batch's transaction time from
begin to commit (the longest is how long any row lock is held), and search latency p50/p99 for both
phases. Saves docs/bench/takedown.json and takedown.png.

Run (from the repo root, after bin/setup dev; a fresh var folder of its own, deleted afterwards):
    .venv/bin/python bench/takedown.py --caltech --images 2000 --remove 1000 --searches 2000
    .venv/bin/python bench/takedown.py --images 20000 --remove 10000
Writes docs/bench/takedown_caltech.json/.png (with --caltech) or docs/bench/takedown.json/.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "bench"
WORDS = [
    "dog",
    "cat",
    "beach",
    "city",
    "night",
    "red",
    "car",
    "tree",
    "river",
    "mountain",
    "street",
    "child",
    "food",
    "market",
    "bridge",
    "snow",
]


def setup(var_dir: Path, *, result_cache: bool) -> None:
    os.environ["LOUPE_VAR_DIR"] = str(var_dir)
    os.environ["LOUPE_CLIP_MODEL"] = str(var_dir / "models" / "tiny-clip")
    os.environ["LOUPE_ENCODER_FALLBACK"] = "false"
    if not result_cache:
        os.environ["LOUPE_RESULT_CACHE_SECONDS"] = "0"  # every search does the real work, before and during
    os.environ["LOUPE_DEFER_SEARCH_LOG"] = "false"  # the log's insert is in the measured time (and its FK waits)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    from collection.demo_model import build_demo_model

    build_demo_model(Path(os.environ["LOUPE_CLIP_MODEL"]))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed_caltech(count: int) -> tuple[list[int], list[str]]:
    """``count`` Caltech photos ingested in one pass with the serving encoder; (ids, class names)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bulk_ingest import chosen_files

    from collection.embedding import ImageVectorBatches, embed_everything_missing
    from collection.ingestion.one_pass import ingest_items
    from collection.ingestion.sources import IngestItem
    from collection.models import Image
    from collection.versions import serving_version

    choice, version = serving_version()
    files = chosen_files(count)
    items = [IngestItem(f, captions=[f"a photo of a {f.parent.name}"], tags=[f.parent.name]) for f in files]
    report = ingest_items(items, embed=ImageVectorBatches(choice.encoder, version))
    embed_everything_missing()  # the captions, with both text models; the indexes
    if report.failed:
        sys.exit(f"{len(report.failed)} Caltech files were refused, e.g. {report.failed[0]}")
    ids = list(Image.objects.order_by("pk").values_list("pk", flat=True))
    return ids, sorted({f.parent.name.lower() for f in files})


def seed_synthetic(images: int, rng: np.random.Generator) -> list[int]:
    """Images with captions, vectors, tower outputs and 1-byte files; returns the ids."""
    from django.conf import settings

    from collection.index import ensure_hnsw_indexes
    from collection.models import Caption, Image, ImageEmbedding, ImageTowerOutput
    from collection.text_index import refresh_text_documents
    from collection.versions import serving_version

    _, version = serving_version()
    media = Path(settings.MEDIA_ROOT)
    rows = []
    for n in range(images):
        sha = f"{n:064x}"
        name, thumb = f"images/{sha[:2]}/{sha}.png", f"thumbs/{sha[:2]}/{sha}.jpg"
        for path in (media / name, media / thumb):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        tags = list(rng.choice(WORDS, 2, replace=False))
        rows.append(
            Image(sha256=sha, file=name, thumbnail=thumb, width=64, height=48, format="png", byte_size=1, tags=tags)
        )
    Image.objects.bulk_create(rows, batch_size=2000)
    ids = list(Image.objects.order_by("pk").values_list("pk", flat=True))
    captions = []
    for image_id in ids:
        for position in range(2):
            words = " ".join(rng.choice(WORDS, 4))
            captions.append(Caption(image_id=image_id, text=f"a photo of {words} {image_id}", position=position))
    Caption.objects.bulk_create(captions, batch_size=5000)
    for start in range(0, len(ids), 2000):
        refresh_text_documents(ids[start : start + 2000])
    vectors = rng.normal(size=(len(ids), version.dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ImageEmbedding.objects.bulk_create(
        [ImageEmbedding(image_id=i, encoder_version=version, vector=v) for i, v in zip(ids, vectors, strict=True)],
        batch_size=2000,
    )
    ImageTowerOutput.objects.bulk_create(
        [ImageTowerOutput(image_id=i, tower="t" * 64, pooled=v[:16]) for i, v in zip(ids, vectors, strict=True)],
        batch_size=2000,
    )
    ensure_hnsw_indexes(version)
    return ids


def seed_feedback(ids: list[int], searches: int, rng: np.random.Generator) -> None:
    """Logged searches of 20 impressions each over ``ids``, one click each, so a takedown detaches feedback."""
    from django.db import connection

    from collection.versions import serving_version
    from feedback.models import Click, Impression, SearchEvent

    _, version = serving_version()
    events = [
        SearchEvent(
            user_key=f"anon:bench-{n % 500:022d}",
            kind="text",
            query_text="q",
            normalised_query="q",
            page_size=20,
            encoder_version=version,
            result_count=20,
        )
        for n in range(searches)
    ]
    SearchEvent.objects.bulk_create(events, batch_size=2000)
    shown, clicks = [], []
    for n, event in enumerate(events):
        for position, image_id in enumerate(rng.choice(ids, 20, replace=False), 1):
            shown.append(Impression(event=event, image_id=int(image_id), position=position, score=1.0 / position))
            if position == 1 + n % 5:
                clicks.append(
                    Click(
                        event=event,
                        image_id=int(image_id),
                        position=position,
                        user_key=event.user_key,
                        client_id=f"c{n}",
                    )
                )
    Impression.objects.bulk_create(shown, batch_size=5000)
    Click.objects.bulk_create(clicks, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def search_for(
    seconds: float, stop: threading.Event | None, rng: np.random.Generator, words: list[str]
) -> list[tuple[float, float]]:
    """(start offset s, latency ms) of back-to-back text searches of two ``words`` for ``seconds`` (or until
    ``stop``)."""
    from django.db import connection

    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    viewer = Viewer(user_key="anon:bench-searcher-000000000", session="s")
    samples = []
    began = time.perf_counter()
    while time.perf_counter() - began < seconds and not (stop is not None and stop.is_set()):
        text = " ".join(rng.choice(words, 2))
        started = time.perf_counter()
        service.search(SearchRequest(text=text, page_size=20), viewer)
        samples.append((started - began, (time.perf_counter() - started) * 1000))
    connection.close()
    return samples


def percentiles(samples: list[tuple[float, float]]) -> dict:
    values = np.asarray([ms for _, ms in samples])
    return {
        "n": len(values),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p99": round(float(np.percentile(values, 99)), 1),
        "max": round(float(values.max()), 1),
    }


def still_found(removed: set[int], words: list[str]) -> list[int]:
    """Removed images that a search for any of ``words`` still returns (first page of 50)."""
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    viewer = Viewer(user_key="anon:bench-checker-0000000000", session="s")
    found = set()
    for word in words:
        hits = service.search(SearchRequest(text=word, page_size=50), viewer).hits
        found |= {hit.image.pk for hit in hits} & removed
    return sorted(found)


def take_down(ids: list[int], batches: list[tuple[float, float]], began: float, done: threading.Event) -> None:
    from django.db import connection

    from collection import takedown

    original = takedown._delete_batch

    def timed(batch_ids):
        started = time.perf_counter()
        held = original(batch_ids)  # begin to commit: how long the batch's row locks were held
        batches.append((started - began, held))
        return held

    takedown._delete_batch = timed
    try:
        takedown.remove_images(ids, requested_by="bench/takedown.py")
    finally:
        takedown._delete_batch = original
        connection.close()
        done.set()


def machine() -> dict:
    cpu = "unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def plot(results: dict, baseline: list, during: list, batches: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for start, took in batches:
        ax.axvspan(start, start + took, color="tab:red", alpha=0.15, lw=0)
    ax.plot([t for t, _ in during], [ms for _, ms in during], ".", ms=3, label="search during the takedown")
    ax.axhline(results["baseline_ms"]["p50"], color="tab:green", ls="--", label="baseline p50 (no takedown)")
    ax.axhline(results["baseline_ms"]["p99"], color="tab:green", ls=":", label="baseline p99")
    ax.set_xlabel("seconds since the takedown started (red: a batch's transaction)")
    ax.set_ylabel("search latency, ms")
    ax.set_title(f"Taking down {results['removed']:,} of {results['images']:,} images in batches of {results['batch']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--caltech", action="store_true", help="real Caltech 101 photos instead of synthetic rows")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--remove", type=int, default=10_000)
    parser.add_argument("--searches", type=int, default=5_000, help="logged searches (20 impressions each) to seed")
    parser.add_argument("--seconds", type=float, default=20.0, help="baseline search time")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="loupe-takedown-bench-"))
    try:
        setup(var_dir, result_cache=args.caltech)
        from django.conf import settings

        from collection import takedown
        from collection.models import Image
        from feedback.models import Impression

        rng = np.random.default_rng(0)
        seeded = time.perf_counter()
        if args.caltech:
            ids, words = seed_caltech(args.images)
        else:
            ids, words = seed_synthetic(args.images, rng), WORDS
        seed_feedback(ids, args.searches, rng)
        print(f"seeded {len(ids):,} images and {args.searches:,} searches in {time.perf_counter() - seeded:.0f} s")
        search_for(3, None, rng, words)  # warm: the text tower, the connection, the plan cache
        baseline = search_for(args.seconds, None, rng, words)
        chosen = sorted(int(i) for i in rng.choice(ids, args.remove, replace=False))
        files = [
            Path(settings.MEDIA_ROOT) / name
            for pair in Image.objects.filter(pk__in=chosen).values_list("file", "thumbnail")
            for name in pair
        ]
        batches: list[tuple[float, float]] = []
        done = threading.Event()
        began = time.perf_counter()
        worker = threading.Thread(target=take_down, args=(chosen, batches, began, done))
        worker.start()
        during = search_for(3600, done, rng, words)
        worker.join()
        wall = time.perf_counter() - began
        assert not Image.objects.filter(pk__in=chosen).exists()
        left_on_disk = [str(f) for f in files if f.exists()]
        found = still_found(set(chosen), words) if args.caltech else []
        if left_on_disk or found:
            sys.exit(f"The takedown left {len(left_on_disk)} files on disk and {len(found)} images in results.")
        longest = max(took for _, took in batches)
        results = {
            "command": " ".join(["bench/takedown.py", *sys.argv[1:]]),
            "machine": machine(),
            "load_average_at_end": [round(v, 1) for v in os.getloadavg()],
            "collection": "caltech101 (real files, demo CLIP vectors)" if args.caltech else "synthetic (1-byte files)",
            "result_cache_seconds": settings.LOUPE_RESULT_CACHE_SECONDS,
            "images": len(ids),
            "removed": len(chosen),
            "files_removed": len(files),
            "batch": takedown.BATCH,
            "batches": len(batches),
            "takedown_seconds": round(wall, 2),
            "longest_batch_ms": round(longest * 1000, 1),
            "batch_ms": {"p50": round(float(np.median([t for _, t in batches])) * 1000, 1)},
            "detached_impressions": Impression.objects.filter(image__isnull=True).count(),
            "baseline_ms": percentiles(baseline),
            "during_ms": percentiles(during),
        }
        print(json.dumps(results, indent=2))
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        name = "takedown_caltech" if args.caltech else "takedown"
        (OUT_DIR / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, baseline, during, batches, OUT_DIR / f"{name}.png")
    finally:
        from core.embedded import stop_postgres

        stop_postgres(var_dir)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

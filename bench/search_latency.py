"""Search speed with a full-size ViT-B/32 (random weights: real compute, no semantic quality).

Builds CLIP ViT-B/32 from ../shared/models/clip-vit-base-patch32-config (config, tokenizer and
preprocessor, no weights), ingests real Caltech 101 images and embeds them with the image tower,
then measures the search service (text encoding included and excluded), ANN recall@10 against an
exact scan, and two baselines over the same vectors in the same run: an exact NumPy scan and FAISS
HNSW. Larger collections are made of synthetic vectors drawn around the real ones.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/search_latency.py --images 10000 --sizes 10000 100000
It uses its own var folder (var/bench) so it never touches the product's data, and writes
docs/bench/search_latency.json and docs/bench/search_latency.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CONFIG_DIR = SHARED / "models" / "clip-vit-base-patch32-config"
CALTECH = SHARED / "datasets" / "caltech101" / "101_ObjectCategories"
OUT_DIR = ROOT / "docs" / "bench"


def setup_django(var_dir: Path, model_dir: Path) -> None:
    os.environ.setdefault("LOUPE_VAR_DIR", str(var_dir))
    os.environ["LOUPE_CLIP_MODEL"] = str(model_dir)
    os.environ["LOUPE_ENCODER_FALLBACK"] = "false"
    # This benchmark measures the search pipeline itself: no whole-order reuse between its passes.
    os.environ["LOUPE_RESULT_CACHE_SECONDS"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def build_full_size_model(model_dir: Path) -> None:
    """CLIP ViT-B/32 with random weights, saved with the real tokenizer and preprocessor files."""
    if (model_dir / "loupe_model.json").exists():
        return
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig.from_pretrained(CONFIG_DIR))
    model.save_pretrained(model_dir, safe_serialization=True)
    for name in os.listdir(CONFIG_DIR):
        if name != "config.json":
            shutil.copy(CONFIG_DIR / name, model_dir / name)
    card = {"name": "clip-vit-b32-random", "demo": True, "description": "Full-size ViT-B/32, random weights."}
    (model_dir / "loupe_model.json").write_text(json.dumps(card))


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 2)


def ingest_real_images(count: int) -> dict:
    from collection.ingestion.one_pass import ingest_items
    from collection.ingestion.sources import folder_items
    from collection.models import Image

    have = Image.objects.count()
    if have >= count:
        return {"images": have, "ingest_images_per_s": None, "note": "already ingested"}
    items = list(folder_items(CALTECH, folder_tags=False))
    random.Random(0).shuffle(items)
    items = items[:count]
    started = time.perf_counter()
    report = ingest_items(items)
    seconds = time.perf_counter() - started
    return {
        "images": Image.objects.count(),
        "added": report.added,
        "skipped": len(report.failed),
        "ingest_seconds": round(seconds, 1),
        "ingest_images_per_s": round(report.added / seconds, 1),
    }


def embed_real_images(encoder, version) -> dict:
    from collection.embedding import embed_images, images_to_embed
    from collection.models import Image

    real = Image.objects.exclude(source="bench-synthetic")
    pending = images_to_embed(version, images=real).count()
    started = time.perf_counter()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 640 < n:
            rate = done[0] / (time.perf_counter() - started)
            print(f"  embedded {done[0]}/{pending} ({rate:.1f} img/s)", flush=True)

    report = embed_images(encoder, version, progress=progress, images=real)
    seconds = time.perf_counter() - started
    return {
        "embedded": report.images,
        "embed_seconds": round(seconds, 1),
        "embed_images_per_s": round(report.images / seconds, 1) if report.images else None,
    }


class ClipLikeMixture:
    """Synthetic unit vectors with CLIP-like geometry: many clusters, neighbours at cosine ~0.75.

    Random-weight ViT-B/32 image vectors are degenerate (two principal components hold 90% of their
    variance; every pair sits at cosine ~0.9), which no trained CLIP produces and which makes any ANN
    index look bad. Retrieval-quality numbers for the index therefore use this mixture; the cost of
    encoding uses the real architecture.
    """

    def __init__(self, dimension: int, clusters: int = 2000, spread: float = 0.6, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(clusters, dimension))
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        self.dimension, self.spread = dimension, spread

    def sample(self, count: int, rng: np.random.Generator, spread: float | None = None) -> np.ndarray:
        spread = self.spread if spread is None else spread
        base = self.centres[rng.integers(0, len(self.centres), count)]
        noise = rng.normal(size=base.shape).astype(np.float32) * spread / np.sqrt(self.dimension)
        vectors = base + noise
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    def queries(self, count: int, seed: int = 1) -> np.ndarray:
        """Queries near a cluster but looser than its members (cosine ~0.55 to them), like text queries."""
        return self.sample(count, np.random.default_rng(seed), spread=1.2)


def synthetic_version(real_version, mixture: ClipLikeMixture, size: int, seed: int = 0, *, fill=None):
    """A version of ``size`` vectors from the CLIP-like mixture, attached to real and synthetic image rows.

    With ``fill`` (a version, e.g. the serving one), that version's vectors are replaced instead, so the
    product itself (the web server) serves the synthetic collection.
    """
    from django.db import connection

    from collection.index import ensure_hnsw_indexes
    from collection.models import EncoderVersion, Image, ImageEmbedding

    name = f"bench-mixture-{size}"
    if fill is not None:
        version, created = fill, False
    else:
        version, created = EncoderVersion.objects.get_or_create(
            model_ref=name,
            fingerprint=real_version.fingerprint,
            defaults={"name": name, "dimension": real_version.dimension, "is_demo": True},
        )
    if not created and ImageEmbedding.objects.filter(encoder_version=version).count() == size:
        return version
    ImageEmbedding.objects.filter(encoder_version=version).delete()
    rng = np.random.default_rng(seed)
    real_ids = list(Image.objects.exclude(source="bench-synthetic").order_by("pk").values_list("pk", flat=True))
    extra = size - len(real_ids)
    template = Image.objects.order_by("pk").first()
    existing_synthetic = Image.objects.filter(source="bench-synthetic").count()
    if extra > existing_synthetic:
        print(f"  creating {extra - existing_synthetic} synthetic image rows", flush=True)
        with (
            connection.cursor() as cursor,
            cursor.copy(
                "COPY searchapp_image (sha256, file, thumbnail, width, height, format, byte_size, tags, source, "
                "licence, attribution, created_at, has_captions) FROM STDIN"
            ) as copy,
        ):
            for i in range(existing_synthetic, extra):
                copy.write_row(
                    (
                        f"s{i:063d}",
                        template.file.name,
                        template.thumbnail.name,
                        1,
                        1,
                        "jpeg",
                        1,
                        "{}",
                        "bench-synthetic",
                        "",
                        "",
                        "2026-01-01T00:00:00Z",
                        False,
                    )
                )
    synthetic_ids = list(
        Image.objects.filter(source="bench-synthetic").order_by("pk").values_list("pk", flat=True)[:extra]
    )
    ids = real_ids[: min(size, len(real_ids))] + synthetic_ids
    print(f"  writing {len(ids)} vectors for {name}", flush=True)
    with (
        connection.cursor() as cursor,
        cursor.copy("COPY searchapp_imageembedding (image_id, encoder_version_id, vector) FROM STDIN") as copy,
    ):
        for start in range(0, len(ids), 10_000):
            chunk_ids = ids[start : start + 10_000]
            vectors = mixture.sample(len(chunk_ids), rng)
            for image_id, vector in zip(chunk_ids, vectors, strict=True):
                copy.write_row((image_id, version.pk, "[" + ",".join(f"{x:.6g}" for x in vector) + "]"))
    print("  building the HNSW index", flush=True)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '4GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 1")
    ensure_hnsw_indexes(version)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE searchapp_imageembedding")
    print(f"  index built in {time.perf_counter() - started:.0f} s", flush=True)
    return version


def load_vectors(version) -> tuple[np.ndarray, np.ndarray]:
    """All of a version's vectors, streamed into one preallocated array (1M x 512 is 2 GB)."""
    from collection.models import ImageEmbedding

    rows = ImageEmbedding.objects.filter(encoder_version=version)
    count = rows.count()
    ids = np.empty(count, dtype=np.int64)
    vectors = np.empty((count, version.dimension), dtype=np.float32)
    stream = rows.order_by("image_id").values_list("image_id", "vector").iterator(chunk_size=5_000)
    for i, (image_id, vector) in enumerate(stream):
        ids[i], vectors[i] = image_id, vector
    return ids, vectors


def queries(count: int) -> list[str]:
    classes = sorted(p.name.replace("_", " ") for p in CALTECH.iterdir() if p.is_dir())
    templates = [
        "a photo of a {}",
        "a {} in the wild",
        "close-up of a {}",
        "a drawing of a {}",
        "my {} at home",
        "a blurry photo of a {}",
        "the {} on a table",
        "a small {}",
    ]
    phrases = [t.format(c) for t in templates for c in classes]
    random.Random(1).shuffle(phrases)
    return phrases[:count]


def measure_size(
    choice, version, texts: list[str], query_vectors: np.ndarray, recall_queries: int = 100, warmup: int = 10
) -> dict:
    """The CLIP path of search (the text channel is measured on its own in measure_text_channel)."""
    from django.conf import settings

    from collection.index import nearest_images
    from searchapp.search import SearchRequest, SearchService

    settings.LOUPE_TEXT_CHANNEL = False
    service = SearchService(choice, version)
    encoder = service.encoder
    for text in texts[:warmup]:
        service.search(SearchRequest(text=text + " warmup", page_size=24))
    encoder.queries.clear()

    uncached, encode_only = [], []
    for text in texts:
        started = time.perf_counter()
        service.search(SearchRequest(text=text, page_size=24))
        uncached.append(time.perf_counter() - started)
    for text in texts[:100]:
        started = time.perf_counter()
        encoder.encode_texts([text])
        encode_only.append(time.perf_counter() - started)
    cached = []
    for text in texts:
        started = time.perf_counter()
        service.search(SearchRequest(text=text, page_size=24))  # the vector is in the LRU cache now
        cached.append(time.perf_counter() - started)

    ids, vectors = load_vectors(version)
    text_query_vectors = encoder.encode_texts(texts[:recall_queries])
    text_recall = []
    for vector in text_query_vectors:
        ann = [n.id for n in nearest_images(version, vector, k=10)]
        exact = [n.id for n in nearest_images(version, vector, k=10, exact=True)]
        text_recall.append(len(set(ann) & set(exact)) / 10)
    recalls, exact_times, numpy_times = [], [], []
    query_vectors = query_vectors[:recall_queries]
    for vector in query_vectors:
        ann = [n.id for n in nearest_images(version, vector, k=10)]
        started = time.perf_counter()
        exact = [n.id for n in nearest_images(version, vector, k=10, exact=True)]
        exact_times.append(time.perf_counter() - started)
        recalls.append(len(set(ann) & set(exact)) / 10)
        started = time.perf_counter()
        scores = vectors @ vector
        top = np.argpartition(-scores, 10)[:10]
        numpy_top = ids[top[np.argsort(-scores[top])]]
        numpy_times.append(time.perf_counter() - started)
        assert len(set(numpy_top) & set(exact)) >= 9  # the baseline answers the same question

    faiss_result = faiss_baseline(vectors, query_vectors, ids, exact_sets=None)
    return {
        "vectors": int(len(ids)),
        "queries": len(texts),
        "search_uncached_ms": {"p50": percentile_ms(uncached, 50), "p99": percentile_ms(uncached, 99)},
        "search_cached_ms": {"p50": percentile_ms(cached, 50), "p99": percentile_ms(cached, 99)},
        "text_encode_ms": {"p50": percentile_ms(encode_only, 50), "p99": percentile_ms(encode_only, 99)},
        "ann_recall_at_10": round(float(np.mean(recalls)), 4),
        "ann_recall_at_10_random_text_tower_queries": round(float(np.mean(text_recall)), 4),
        "pg_exact_scan_ms": {"p50": percentile_ms(exact_times, 50), "p99": percentile_ms(exact_times, 99)},
        "numpy_exact_ms": {"p50": percentile_ms(numpy_times, 50), "p99": percentile_ms(numpy_times, 99)},
        **faiss_result,
    }


def add_captions_everywhere(seed: int = 0) -> dict:
    """Give every image one real COCO caption (drawn at random) with full-text and sentence vectors.

    Only the text channel's cost is measured with them; their content is realistic text, not truth.
    """
    from django.conf import settings
    from django.db import connection

    from collection.index import ensure_hnsw_indexes
    from collection.models import Caption, CaptionEmbedding, Image
    from collection.text_index import refresh_lexeme_stats
    from collection.versions import sentence_version

    settings.LOUPE_TEXT_CHANNEL = True
    sentence_encoder, text_version = sentence_version()
    pool = []
    for split in ("train2017", "val2017"):
        data = json.loads((SHARED / "datasets" / "coco_mini" / "annotations" / f"captions_{split}.json").read_text())
        pool += [" ".join(a["caption"].split()) for a in data["annotations"]]
    pool = sorted(set(pool))
    rng = random.Random(seed)
    started = time.perf_counter()
    missing = list(Image.objects.filter(captions__isnull=True).values_list("pk", flat=True))
    if missing:
        print(f"  captioning {len(missing)} images", flush=True)
        with (
            connection.cursor() as cursor,
            cursor.copy("COPY searchapp_caption (image_id, text, position) FROM STDIN") as copy,
        ):
            for image_id in missing:
                copy.write_row((image_id, rng.choice(pool), 0))
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE searchapp_image AS i SET text_document = "
                "setweight(to_tsvector('english', array_to_string(i.tags, ' ')), 'A') || "
                "setweight(to_tsvector('english', c.text), 'B'), has_captions = true "
                "FROM searchapp_caption c WHERE c.image_id = i.id"
            )
    vectors = dict(zip(pool, sentence_encoder.encode_texts(pool), strict=True))
    # Read before COPY starts: the connection cannot run a query while it streams a COPY.
    pending = list(Caption.objects.exclude(embeddings__encoder_version=text_version).values_list("pk", "text"))
    with (
        connection.cursor() as cursor,
        cursor.copy("COPY searchapp_captionembedding (caption_id, encoder_version_id, vector) FROM STDIN") as copy,
    ):
        for caption_id, text in pending:
            vector = vectors.get(text)
            if vector is None:
                vector = sentence_encoder.encode_texts([text])[0]
            copy.write_row((caption_id, text_version.pk, "[" + ",".join(f"{x:.6g}" for x in vector) + "]"))
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '4GB'")
    ensure_hnsw_indexes(text_version)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE searchapp_caption")
        cursor.execute("ANALYZE searchapp_captionembedding")
        cursor.execute("ANALYZE searchapp_image")
    refresh_lexeme_stats()
    return {
        "captions": Caption.objects.count(),
        "caption_vectors": CaptionEmbedding.objects.filter(encoder_version=text_version).count(),
        "setup_seconds": round(time.perf_counter() - started, 1),
    }


def measure_text_channel(choice, version, texts: list[str]) -> dict:
    """What the text channel adds to a search: the same queries with the channel off, then on.

    Two cases: CLIP query vectors cached (only the text channel's own cost differs) and nothing
    cached (what a new query costs: there the channels run beside the CLIP text tower).
    """
    from django.conf import settings

    from collection.versions import sentence_version
    from searchapp.search import SearchRequest, SearchService

    service = SearchService(choice, version)
    sentence_encoder, _ = sentence_version()
    result = {"parallel_channels": settings.LOUPE_PARALLEL_CHANNELS, "channel_depth": settings.LOUPE_CHANNEL_DEPTH}
    for case in ("clip_cached", "uncached"):
        timings = {}
        for label, enabled in (("off", False), ("on", True)):
            settings.LOUPE_TEXT_CHANNEL = enabled
            sentence_encoder.queries.clear()
            service.encoder.queries.clear()
            if case == "clip_cached":
                for text in texts:
                    service.encoder.encode_query(text)
            for text in texts[:10]:
                service.search(SearchRequest(text=text + " warmup", page_size=24))
            samples = []
            for text in texts:
                started = time.perf_counter()
                service.search(SearchRequest(text=text, page_size=24))
                samples.append(time.perf_counter() - started)
            timings[label] = {"p50": percentile_ms(samples, 50), "p99": percentile_ms(samples, 99)}
        result[case] = {
            "search_text_channel_off_ms": timings["off"],
            "search_text_channel_on_ms": timings["on"],
            "text_channel_added_p50_ms": round(timings["on"]["p50"] - timings["off"]["p50"], 2),
        }
    settings.LOUPE_TEXT_CHANNEL = True
    encode = []
    for text in texts[:100]:
        started = time.perf_counter()
        sentence_encoder.encode_texts([text + " again"])
        encode.append(time.perf_counter() - started)
    result["sentence_encode_ms"] = {"p50": percentile_ms(encode, 50), "p99": percentile_ms(encode, 99)}
    result["text_runtime"] = sentence_encoder.text_runtime
    return result


def faiss_baseline(vectors: np.ndarray, query_vectors: np.ndarray, ids: np.ndarray, exact_sets=None) -> dict:
    try:
        import faiss
    except ImportError:
        return {"faiss": "not installed"}
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(vectors.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    index.add(vectors)
    build = time.perf_counter() - started
    # One thread per query, like the service; idle OpenMP threads would otherwise spin and steal
    # the cores from torch in the measurements that follow.
    faiss.omp_set_num_threads(1)
    index.hnsw.efSearch = 100
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(query_vectors, 10)
    times, recalls = [], []
    for i, vector in enumerate(query_vectors):
        started = time.perf_counter()
        _, found = index.search(vector[None, :], 10)
        times.append(time.perf_counter() - started)
        recalls.append(len(set(found[0]) & set(truth[i])) / 10)
    return {
        "faiss_hnsw_ms": {"p50": percentile_ms(times, 50), "p99": percentile_ms(times, 99)},
        "faiss_hnsw_recall_at_10": round(float(np.mean(recalls)), 4),
        "faiss_hnsw_build_s": round(build, 1),
    }


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["vectors"] for r in results["sizes"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    series = [
        ("search, uncached query (p50)", "search_uncached_ms", "p50"),
        ("search, uncached query (p99)", "search_uncached_ms", "p99"),
        ("search, cached query (p50)", "search_cached_ms", "p50"),
        ("pgvector exact scan (p50)", "pg_exact_scan_ms", "p50"),
        ("NumPy exact scan (p50)", "numpy_exact_ms", "p50"),
        ("FAISS HNSW (p50)", "faiss_hnsw_ms", "p50"),
    ]
    for label, key, q in series:
        values = [r[key][q] for r in results["sizes"] if key in r]
        if len(values) == len(sizes):
            ax.plot(sizes, values, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vectors in the collection")
    ax.set_ylabel("milliseconds")
    ax.set_title("Loupe search latency, ViT-B/32 text tower, 2 CPU cores")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000, help="real Caltech images to ingest and embed")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--recall-queries", type=int, default=100, help="queries for recall (exact scans are slow)")
    parser.add_argument(
        "--text-channel-only", action="store_true", help="measure only the text channel at the last size"
    )
    parser.add_argument("--no-text-channel", action="store_true", help="skip the text channel's measurement")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument("--output", type=Path, default=OUT_DIR / "search_latency.json")
    args = parser.parse_args()
    if not CONFIG_DIR.is_dir() or not CALTECH.is_dir():
        sys.exit(f"This benchmark needs {CONFIG_DIR} and {CALTECH} (the shared folder beside the repo).")

    model_dir = args.var_dir / "models" / "clip-vit-b32-random"
    args.var_dir.mkdir(parents=True, exist_ok=True)
    build_full_size_model(model_dir)
    setup_django(args.var_dir, model_dir)
    from collection.versions import serving_version

    choice, version = serving_version()
    print(f"Model: {choice.encoder.name} ({choice.encoder.dimension}-d), version {version.pk}", flush=True)
    results: dict = {"machine": machine(), "model": "CLIP ViT-B/32 architecture, random weights"}
    print("Ingesting real images...", flush=True)
    results["ingest"] = ingest_real_images(args.images)
    print(f"  {results['ingest']}", flush=True)
    print("Embedding them with the image tower...", flush=True)
    results["embed"] = embed_real_images(choice.encoder, version)
    print(f"  {results['embed']}", flush=True)

    texts = queries(args.queries)
    mixture = ClipLikeMixture(version.dimension)
    query_vectors = mixture.queries(100)
    results["vectors"] = (
        "Index recall, pgvector exact scan, NumPy and FAISS baselines use CLIP-like synthetic vectors "
        "(ClipLikeMixture: 2,000 clusters, neighbour cosine ~0.75) and queries drawn near them; "
        "search latency encodes real text with the full-size text tower."
    )
    results["sizes"] = []
    if args.text_channel_only:
        target = synthetic_version(version, mixture, args.sizes[-1])
        results["text_channel_setup"] = add_captions_everywhere()
        results["text_channel"] = {**measure_text_channel(choice, target, texts), "vectors": args.sizes[-1]}
        print(json.dumps(results["text_channel"], indent=2), flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
        return
    for size in args.sizes:
        print(f"Collection of {size} vectors:", flush=True)
        target = synthetic_version(version, mixture, size)
        measured = measure_size(choice, target, texts, query_vectors, recall_queries=args.recall_queries)
        print(json.dumps(measured, indent=2), flush=True)
        results["sizes"].append(measured)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    if not args.no_text_channel:
        print(f"Text channel at {args.sizes[-1]} images:", flush=True)
        results["text_channel_setup"] = add_captions_everywhere()
        results["text_channel"] = measure_text_channel(choice, target, texts)
        results["text_channel"]["vectors"] = args.sizes[-1]
        print(json.dumps(results["text_channel"], indent=2), flush=True)
        args.output.write_text(json.dumps(results, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()

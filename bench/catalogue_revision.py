"""What keying the result caches by the catalogue revision costs a cached search (collection.revisions).

Every search now reads one row (the revision) before it looks in the result cache, so that an edit in any
process is never served stale. This measures, in one run on one machine:

- a cached text search (result cache and image cache hits) with the revision read: what serves now;
- the same search with the read replaced by a constant: the baseline, as before the revision existed;
- the read alone (``current_revision()``);
- a search right after an edit (``apply_changes``): the price of a miss, which is what an edit costs the next
  search of each cached query.

Run: .venv/bin/python bench/catalogue_revision.py [--images 300] [--searches 2000]
It writes docs/bench/catalogue_revision.json and .png. Uses its own var folder (var/benchrevision) and the
tiny demo model: the cost measured is the read, not the encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))


def setup(var_dir: Path) -> None:
    os.environ.setdefault("LOUPE_VAR_DIR", str(var_dir))
    os.environ.setdefault("LOUPE_CLIP_MODEL", str(var_dir / "models" / "tiny-clip"))
    os.environ.setdefault("LOUPE_DEMO_MODEL_DIR", os.environ["LOUPE_CLIP_MODEL"])
    os.environ["LOUPE_RESULT_CACHE_SECONDS"] = "600"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from collection.demo_model import build_demo_model

    if not (Path(os.environ["LOUPE_CLIP_MODEL"]) / "loupe_model.json").exists():
        build_demo_model(Path(os.environ["LOUPE_CLIP_MODEL"]))
    call_command("migrate", verbosity=0)


def build_collection(count: int) -> None:
    import io
    import random

    from PIL import Image as PILImage

    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from collection.models import Image

    rng = random.Random(0)
    for seed in range(Image.objects.count(), count):
        picture = PILImage.new("RGB", (64, 48), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        picture.putpixel((seed % 64, seed % 48), (seed % 256, 0, 0))
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        add_image(read_image(buffer.getvalue()), captions=[f"picture {seed} of a harbour at dusk"], tags=["bench"])
    embed_everything_missing()


def timed_ms(call, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 4),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1], 4),
        "mean": round(statistics.fmean(ordered), 4),
        "n": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "benchrevision")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench" / "catalogue_revision.json")
    args = parser.parse_args()
    setup(args.var_dir)
    build_collection(args.images)

    from search_latency import machine

    from collection.image_changes import ImageChanges, apply_changes
    from collection.models import Image
    from collection.revisions import current_revision
    from searchapp.pipeline import order
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    request = SearchRequest(text="a harbour at dusk", page_size=24)

    def cached_search() -> None:
        assert service.search(request).cached

    # Interleaved, one search of each a round, so drift in a shared machine's load falls on both alike.
    with_read, without_read = [], []
    service.search(request)  # fills both caches under the current revision
    baseline = current_revision()
    for _ in range(args.searches):
        with_read += timed_ms(cached_search, 1)
        order.current_revision = lambda: baseline  # the baseline: no read (as before the revision existed)
        without_read += timed_ms(cached_search, 1)
        order.current_revision = current_revision
    read_alone = timed_ms(current_revision, args.searches)

    image = Image.objects.order_by("pk").first()
    after_edit = []
    for n in range(min(50, args.searches)):
        apply_changes(image, ImageChanges(captions=(f"picture of a harbour at dusk, edit {n}",)))
        started = time.perf_counter()
        assert not service.search(request).cached
        after_edit.append((time.perf_counter() - started) * 1000)

    results = {
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": machine(),
        "images": Image.objects.count(),
        "cached_search_with_revision_ms": summary(with_read),
        "cached_search_without_revision_ms (baseline)": summary(without_read),
        "revision_read_ms": summary(read_alone),
        "first_search_after_an_edit_ms": summary(after_edit),
    }
    results["added_p50_ms"] = round(
        results["cached_search_with_revision_ms"]["p50"]
        - results["cached_search_without_revision_ms (baseline)"]["p50"],
        4,
    )
    print(json.dumps(results, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, args.output.with_suffix(".png"))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "cached search,\nno revision (baseline)": results["cached_search_without_revision_ms (baseline)"],
        "cached search,\nrevision read": results["cached_search_with_revision_ms"],
        "revision read\nalone": results["revision_read_ms"],
        "first search\nafter an edit": results["first_search_after_an_edit_ms"],
    }
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(series)
    ax.bar([i - 0.2 for i in range(len(names))], [s["p50"] for s in series.values()], width=0.4, label="p50")
    ax.bar([i + 0.2 for i in range(len(names))], [s["p99"] for s in series.values()], width=0.4, label="p99")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds")
    ax.set_title(f"Catalogue revision in the result cache key ({results['images']} images)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

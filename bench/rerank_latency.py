"""What reranking adds to a search: the same queries with the active ranker on and off.

Runs against a collection that has an active ranker, by default the simulation's
(``bench/simulate_learning.py`` leaves one in var/sim). Query vectors are cached first, so the
difference is the rerank step alone: features for the top LOUPE_RERANK_DEPTH candidates (one SQL
round trip) and the LightGBM prediction. Prints and saves docs/bench/rerank_latency.json.

Run: .venv/bin/python bench/rerank_latency.py [--var-dir var/sim]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "sim")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench" / "rerank_latency.json")
    args = parser.parse_args()
    os.environ["LOUPE_VAR_DIR"] = str(args.var_dir)
    os.environ["LOUPE_CLIP_MODEL"] = str(args.var_dir / "models" / "tiny-clip")
    os.environ["LOUPE_TEXT_CHANNEL"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings

    from collection.models import Image
    from ranking.models import RankerVersion
    from ranking.registry import active_ranker, promote
    from searchapp.search import SearchRequest, SearchService

    settings.LOUPE_RANKER_CHECK_SECONDS = 3600
    borrowed = None
    if not RankerVersion.objects.filter(status="active").exists():
        # Latency does not depend on the ranker's quality: serve the newest trained one for the measurement.
        borrowed = RankerVersion.objects.order_by("-created_at").first()
        if borrowed is None:
            sys.exit("No trained ranker in this collection; run bench/simulate_learning.py first.")
        previous_status = borrowed.status
        promote(borrowed)
    serving = active_ranker.get()
    service = SearchService()
    texts = [f"a photo of a thing number {i}" for i in range(args.queries)]
    for text in texts:
        service.encoder.encode_query(text)
    timings = {}
    for label, rerank in (("off", False), ("on", True), ("off_again", False)):
        settings.LOUPE_RERANK = rerank
        samples = []
        for text in texts:
            started = time.perf_counter()
            response = service.search(SearchRequest(text=text, page_size=24))
            samples.append(time.perf_counter() - started)
        assert (response.ranker != "embedding") == rerank
        timings[label] = {
            "p50": round(float(np.percentile(samples, 50)) * 1000, 2),
            "p99": round(float(np.percentile(samples, 99)) * 1000, 2),
        }
    off = min(timings["off"]["p50"], timings["off_again"]["p50"])
    result = {
        "images": Image.objects.count(),
        "ranker": serving.version.label,
        "rerank_depth": settings.LOUPE_RERANK_DEPTH,
        "search_ms": timings,
        "added_p50_ms": round(timings["on"]["p50"] - off, 2),
    }
    if borrowed is not None:
        RankerVersion.objects.filter(pk=borrowed.pk).update(status=previous_status, promoted_at=None)
    print(json.dumps(result, indent=2))
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

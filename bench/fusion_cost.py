"""What fusing the channels costs a search, per fusion method, over a collection of N images.

The channels' lists are retrieved once per query through the served pipeline (CLIP HNSW, full text,
caption vectors; ``searchapp.pipeline.retrieve``); the fusion stage (``searchapp.pipeline.fuse``) is then
timed alone on those lists: CLIP only (the baseline: no fusion), reciprocal rank, and convex. The
difference to the baseline is what fusion adds to a search's p50.

Run (on the data bench/search_api.py builds: 100k images, every one captioned):
    .venv/bin/python bench/fusion_cost.py --var-dir var/benchapi100k
It writes docs/bench/fusion_cost_<size>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_latency as base  # noqa: E402  (the data builders and helpers are shared)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=base.ROOT / "var" / "benchapi100k")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=20, help="timings of the fusion per query (the median is kept)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.var_dir / "models" / "clip-vit-b32-random"
    if not model_dir.is_dir():
        sys.exit(f"No benchmark data in {args.var_dir}: run bench/search_api.py --var-dir {args.var_dir} first.")
    base.setup_django(args.var_dir, model_dir)

    from collection.fusion import CONVEX, RRF
    from collection.fusion_setting import Fusion
    from collection.models import Image
    from ranking.experiments.serving import ServingPlan
    from searchapp.pipeline.fuse import first_stage
    from searchapp.pipeline.plan import plan_depths
    from searchapp.pipeline.request import SearchRequest, validate
    from searchapp.pipeline.retrieve import Retrieved, retrieve
    from searchapp.search import SearchService

    service = SearchService()
    size = Image.objects.count()
    plan = ServingPlan()
    weights = {"clip": 0.4, "fts": 0.2, "caption": 0.4}
    methods = {
        "clip only (no fusion)": None,
        "rrf": Fusion(RRF),
        "convex": Fusion(CONVEX, weights),
    }
    samples: dict[str, list[float]] = {name: [] for name in methods}
    lengths = []
    for text in base.queries(args.queries):
        search = validate(SearchRequest(text=text, page_size=24))
        retrieved = retrieve(service.encoder, service.version, search, plan_depths(search, plan, logged=False), plan)
        lengths.append({name: len(ranking) for name, ranking in retrieved.rankings.items()})
        for name, fusion in methods.items():
            lists = retrieved if fusion is not None else Retrieved(retrieved.vector, {"clip": retrieved.clip}, {}, 0, 0)
            runs = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                first_stage(lists, fusion or Fusion(RRF))
                runs.append(time.perf_counter() - started)
            samples[name].append(float(np.median(runs)))
    baseline = base.percentile_ms(samples["clip only (no fusion)"], 50)
    results = {
        "machine": base.machine(),
        "command": " ".join(sys.argv),
        "images": size,
        "queries": args.queries,
        "list_lengths_mean": {k: round(float(np.mean([x.get(k, 0) for x in lengths])), 1) for k in lengths[0]},
        "fusion_ms": {
            name: {"p50": base.percentile_ms(values, 50), "p99": base.percentile_ms(values, 99)}
            for name, values in samples.items()
        },
    }
    results["added_p50_ms"] = {
        name: round(results["fusion_ms"][name]["p50"] - baseline, 3) for name in methods if methods[name] is not None
    }
    print(json.dumps(results, indent=1))
    output = args.output or base.OUT_DIR / f"fusion_cost_{size}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    plot(results, output.with_suffix(".png"))
    print(f"Saved {output} and {output.with_suffix('.png')}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["fusion_ms"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, [results["fusion_ms"][n]["p50"] for n in names], color=["#999", "#4a7", "#47a"])
    ax.set_ylabel("fusion stage p50 (ms)")
    ax.set_title(f"Fusing the channels at {results['images']:,} images ({results['queries']} queries)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

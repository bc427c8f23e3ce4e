"""Print the markdown table of docs/performance.md from the benchmark JSON files.

.venv/bin/python bench/performance_table.py docs/bench/search_latency.json docs/bench/search_latency_1m.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [
    ("search, uncached query p50 / p99 (ms)", "search_uncached_ms"),
    ("search, cached query p50 / p99 (ms)", "search_cached_ms"),
    ("text encoding p50 / p99 (ms)", "text_encode_ms"),
    ("pgvector exact scan p50 / p99 (ms)", "pg_exact_scan_ms"),
    ("NumPy exact p50 / p99 (ms)", "numpy_exact_ms"),
    ("FAISS HNSW p50 / p99 (ms)", "faiss_hnsw_ms"),
]


def rows(paths: list[Path]) -> list[dict]:
    sizes = []
    for path in paths:
        sizes += json.loads(path.read_text())["sizes"]
    return sorted(sizes, key=lambda size: size["vectors"])


def main() -> None:
    sizes = rows([Path(p) for p in sys.argv[1:]])
    header = ["measure"] + [f"{size['vectors']:,} vectors" for size in sizes]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for label, key in COLUMNS:
        cells = [f"{s[key]['p50']} / {s[key]['p99']}" if key in s else "n/a" for s in sizes]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(
        "| pgvector HNSW recall@10 vs exact (CLIP-like queries) | "
        + " | ".join(str(s["ann_recall_at_10"]) for s in sizes)
        + " |"
    )
    print(
        "| pgvector HNSW recall@10 vs exact (random text-tower queries) | "
        + " | ".join(str(s.get("ann_recall_at_10_random_text_tower_queries", "n/a")) for s in sizes)
        + " |"
    )
    print(
        "| FAISS HNSW recall@10 (same queries, M=16, efSearch=100) | "
        + " | ".join(str(s.get("faiss_hnsw_recall_at_10", "n/a")) for s in sizes)
        + " |"
    )


if __name__ == "__main__":
    main()

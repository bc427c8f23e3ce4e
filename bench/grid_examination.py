"""How well examination is recovered per grid cell: the layout-aware estimate against the list curve.

Synthetic position-based users on two layouts, half the searches each: a desktop grid of 4 cards a row
examined in an F shape (rows 1 / 0.7 / 0.45 times columns 1 / 0.85 / 0.75 / 0.6) and a phone of 1 card a
row examined 0.8 per row. Each search shows 10 items whose click probability (relevance) is drawn
uniformly in 0.05..0.9 and sorted (the ranker is good); a click happens with examination(cell) x
relevance. The swap slice is the product's (``searchapp.slices.swap_pair``: half adjacent, half 2..6
apart). Both estimates read the same logs, through the product's code:

- **list** (the baseline, what training used before layouts were logged): ``ranking.propensity.
  propensity_from_swaps`` on the adjacent swaps, one curve for every layout;
- **grid**: ``ranking.grid_propensity`` per layout class and cell, shrunk toward that list curve.

Reported: the mean absolute error against the simulated examination over the cells of the top 10 ranks
of each layout, per seed, and its mean over seeds. Synthetic clicks only: no held-out ranking metric.

Run: nice -n 5 .venv/bin/python bench/grid_examination.py [--searches 20000] [--swap-share 0.05 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MAX_POSITION, MAX_OFFSET = 10, 6


def desktop(cell: tuple[int, int]) -> float:
    row, column = cell
    return [1.0, 0.7, 0.45][min(row, 3) - 1] * [1.0, 0.85, 0.75, 0.6][column - 1]


def phone(cell: tuple[int, int]) -> float:
    return 0.8 ** (cell[0] - 1)


def simulate(layouts, searches: int, swap_share: float, seed: int):
    from ranking.grid_propensity import LoggedPage
    from searchapp.slices import swap_pair

    rng, generator = random.Random(seed), np.random.default_rng(seed)
    pages = []
    for n in range(searches):
        layout, examination = layouts[n % len(layouts)]
        relevance = np.sort(generator.uniform(0.05, 0.9, MAX_POSITION))[::-1].tolist()
        swapped = None
        if rng.random() < swap_share:
            relevance, upper, lower = swap_pair(relevance, MAX_POSITION, MAX_OFFSET, rng)
            swapped = (upper, lower)
        draws = generator.random(MAX_POSITION)
        clicked = frozenset(
            p for p in range(1, MAX_POSITION + 1) if draws[p - 1] < examination(layout.cell(p)) * relevance[p - 1]
        )
        pages.append(LoggedPage(layout, MAX_POSITION, clicked, swapped))
    return pages


def list_curve(pages, depth: int):
    """The list estimate from the adjacent swaps of every layout pooled, as the product computes it."""
    from ranking.propensity import SwapCounts, power_law, propensity_from_swaps

    counts = {k: SwapCounts() for k in range(1, MAX_POSITION)}
    for page in pages:
        if page.swapped is not None:
            upper, lower = page.swapped
            if lower != upper + 1:
                continue  # a grid pair: not an adjacent swap, not a normal page
            c = counts[upper]
            c.swapped_searches += 1
            c.swapped_upper_clicks += upper in page.clicked
            c.swapped_lower_clicks += lower in page.clicked
            continue
        for k, c in counts.items():
            c.normal_searches += 1
            c.normal_upper_clicks += k in page.clicked
            c.normal_lower_clicks += (k + 1) in page.clicked
    curve = propensity_from_swaps(counts, MAX_POSITION)
    values = power_law(depth).values.copy()
    values[:MAX_POSITION] = curve.values
    return type(curve)(values, curve.estimated_positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=20_000)
    parser.add_argument("--swap-share", type=float, nargs="+", default=[0.05, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "bench" / "grid_examination.json")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from feedback.layout import Layout
    from ranking.grid_propensity import count_pairs, grid_propensity

    layouts = [(Layout((4,)), desktop), (Layout((1,)), phone)]
    results = []
    for share in args.swap_share:
        for seed in args.seeds:
            started = time.perf_counter()
            pages = simulate(layouts, args.searches, share, seed)
            curve = list_curve(pages, 100)
            grid = grid_propensity(count_pairs(pages, MAX_POSITION, MAX_OFFSET), curve, prior_clicks=20)
            row = {"swap_share": share, "seed": seed, "searches": args.searches}
            for layout, truth in layouts:
                cells = [layout.cell(p) for p in range(1, MAX_POSITION + 1)]
                true = np.array([truth(c) for c in cells])
                listed = np.array([curve.at(p) for p in range(1, MAX_POSITION + 1)])
                gridded = np.array([grid.at(layout, p) for p in range(1, MAX_POSITION + 1)])
                name = f"{layout.width}_columns"
                row[name] = {
                    "truth": true.round(4).tolist(),
                    "list": listed.round(4).tolist(),
                    "grid": gridded.round(4).tolist(),
                    "list_mae": round(float(np.abs(listed - true).mean()), 4),
                    "grid_mae": round(float(np.abs(gridded - true).mean()), 4),
                }
            row["seconds"] = round(time.perf_counter() - started, 1)
            results.append(row)
            print(
                f"swap share {share:.2f} seed {seed}: MAE list / grid  4 columns "
                f"{row['4_columns']['list_mae']:.4f} / {row['4_columns']['grid_mae']:.4f}  1 column "
                f"{row['1_columns']['list_mae']:.4f} / {row['1_columns']['grid_mae']:.4f}  ({row['seconds']} s)"
            )
    summary = {}
    for share in args.swap_share:
        rows = [r for r in results if r["swap_share"] == share]
        summary[str(share)] = {
            f"{name}_{kind}_mae_mean": round(float(np.mean([r[name][f"{kind}_mae"] for r in rows])), 4)
            for name in ("4_columns", "1_columns")
            for kind in ("list", "grid")
        }
        print(f"swap share {share:.2f}, mean over seeds: {summary[str(share)]}")
    out = {
        "command": "nice -n 5 .venv/bin/python bench/grid_examination.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU (shared; load varies)",
        "what": "per-cell examination MAE over the top 10 ranks, synthetic position-based users; list = "
        "propensity_from_swaps on adjacent swaps (baseline), grid = ranking.grid_propensity",
        "results": results,
        "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"saved {args.output} and {args.output.with_suffix('.png')}")


def plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = results[-1]  # the largest swap share's last seed, cell by cell
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (("4_columns", "desktop, 4 cards a row"), ("1_columns", "phone, 1 a row"))
    for ax, (name, title) in zip(axes, panels, strict=True):
        ranks = np.arange(1, MAX_POSITION + 1)
        ax.plot(ranks, first[name]["truth"], "k-o", label="simulated examination")
        ax.plot(ranks, first[name]["list"], "r--s", label=f"list curve (MAE {first[name]['list_mae']:.3f})")
        ax.plot(ranks, first[name]["grid"], "b-^", label=f"grid cells (MAE {first[name]['grid_mae']:.3f})")
        ax.set_title(f"{title}: swap share {first['swap_share']}, seed {first['seed']}")
        ax.set_xlabel("rank (cell = row, column of the layout)")
        ax.set_ylabel("examination")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
    fig.suptitle(f"Synthetic grid users, {first['searches']} searches: per-cell examination recovered")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

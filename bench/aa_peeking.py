"""A/A tests read every 50 searches: how often each statistics mode ever declares a winner.

Statistics-level replays (no search engine): each replay draws fresh users and searches like the
product's logs in ``bench/simulate_experiments.py`` and reads them with the product's own functions
(``ranking.experiments.sequential.ratio_path`` / ``compare_paths``, the fixed-horizon z-test of
``statistics.compare``) at every 50th search, with the verdict's rules (at least ``--min-users`` users
per arm, p < alpha). How a replay is drawn:

- 2,000 users, each with a clickiness from Beta(2, 2) scaled to mean 1; each user sticks to one arm by a
  fair coin (what SHA-256 hashing of the user key gives); each search is by a uniformly drawn user.
- A search shows 10 results; position p is examined with probability 1/p; each shown result is
  relevant with probability ``--relevant`` (0.042: the embedding order's 0.25 clicks per search in the
  earlier product run); an examined result is clicked with probability (0.9 relevant / 0.05 not) times
  the user's clickiness (capped at 1): the simulation's position-based click model.
- Both arms draw from the same distribution (A/A). Interleaving A/A: the same clicks, each clicked
  result's team a fair coin; per search the team with more clicks wins.

Run: .venv/bin/python bench/aa_peeking.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ranking.experiments.sequential import compare_paths, preference_test, ratio_path  # noqa: E402

OUT = ROOT / "docs" / "bench" / "aa_peeking.json"


def one_replay(rng, args) -> dict:
    clickiness = rng.beta(2, 2, args.users) / 0.5
    arm_of = rng.random(args.users) < 0.5
    user = rng.integers(0, args.users, args.searches)
    examined = rng.random((args.searches, 10)) < 1.0 / np.arange(1, 11)
    relevant = rng.random((args.searches, 10)) < args.relevant
    chance = np.minimum(np.where(relevant, 0.9, 0.05) * clickiness[user][:, None], 1.0)
    clicked = examined & (rng.random((args.searches, 10)) < chance)
    clicks = clicked.sum(axis=1).astype(float)
    ones = np.ones(args.searches)
    looks = np.arange(args.check_every - 1, args.searches, args.check_every)
    control, treatment = ratio_path(~arm_of[user], user, clicks, ones), ratio_path(arm_of[user], user, clicks, ones)
    sequential = compare_paths(control, treatment, args.expected_effect, args.min_users, args.alpha).p_values[looks]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(treatment.value - control.value) / np.sqrt(control.variance + treatment.variance)
    fixed = 2 * stats.norm.sf(z[looks])
    ready = (control.users[looks] >= args.min_users) & (treatment.users[looks] >= args.min_users)
    # Interleaving A/A: every clicked result's team is a coin; credit +1 / -1 / 0 per search.
    team_a = clicked & (rng.random((args.searches, 10)) < 0.5)
    credit = np.sign(team_a.sum(axis=1) - (clicked & ~team_a).sum(axis=1)).astype(float)
    path = ratio_path(np.ones(args.searches, bool), user, credit, ones)
    decided = np.cumsum(np.abs(credit)) / np.arange(1, args.searches + 1)
    il_seq = preference_test(path, decided, args.expected_effect, args.min_users, args.alpha).p_values[looks]
    with np.errstate(divide="ignore", invalid="ignore"):
        il_fixed = 2 * stats.norm.sf(np.abs(path.value) / np.sqrt(path.variance))[looks]
    il_ready = path.users[looks] >= args.min_users
    return {
        "ab_sequential": bool((ready & (sequential < args.alpha)).any()),
        "ab_fixed": bool((ready & (fixed < args.alpha)).any()),
        "ab_fixed_at_end": bool(fixed[-1] < args.alpha),
        "il_sequential": bool((il_ready & (il_seq < args.alpha)).any()),
        "il_fixed": bool((il_ready & (il_fixed < args.alpha)).any()),
        "clicks_per_search": float(clicks.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--replays", type=int, default=500)
    parser.add_argument("--searches", type=int, default=2_000)
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--min-users", type=int, default=50)
    parser.add_argument("--relevant", type=float, default=0.042)
    parser.add_argument("--expected-effect", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    out = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "seeds": {}}
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        runs = [one_replay(rng, args) for _ in range(args.replays)]
        share = {k: float(np.mean([r[k] for r in runs])) for k in runs[0] if k != "clicks_per_search"}
        share["clicks_per_search"] = float(np.mean([r["clicks_per_search"] for r in runs]))
        out["seeds"][seed] = share
        print(f"seed {seed}: share of {args.replays} A/A runs that ever declare a winner: {share}", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))
    plot(out, args.output.with_suffix(".png"))
    print(f"Saved {args.output}")


def plot(out: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - plotting only when saving

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    keys = ["ab_sequential", "ab_fixed", "il_sequential", "il_fixed"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (seed, share) in enumerate(out["seeds"].items()):
        ax.bar(np.arange(len(keys)) + i * 0.25, [100 * share[k] for k in keys], width=0.25, label=f"seed {seed}")
    ax.axhline(100 * out["config"]["alpha"], color="grey", linestyle="--", label="alpha")
    ax.set_xticks(
        np.arange(len(keys)) + 0.25,
        ["A/B always-valid", "A/B fixed", "interleaving always-valid", "interleaving fixed"],
    )
    ax.set_ylabel("% of A/A runs ever declaring")
    ax.set_title("A/A read every 50 searches (500 replays each)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

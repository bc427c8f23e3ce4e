"""When an experiment read every ``check`` searches reaches its verdict, and how A/B and interleaving compare.

Pure (no Django): ``bench/simulate_experiments.py`` records one point per check (the p-value the
page shows, the fixed-horizon p-value of the same data, the sign of the difference, the product's
suggested winner) and these functions turn the points into the figures the docs report. Tested in
``tests/unit/bench/test_experiment_verdicts.py``.

Two figures per run, as issue 17 asks:

- **first crossing**: the first check with p < alpha (what someone acting on the page would do);
- **stays significant**: the first check from which p < alpha, with the same sign as at the end of
  the budget, holds at every later check up to the end of the budget.

The always-valid p-value is a running minimum (``ranking.experiments.sequential``), so for it the two
coincide unless the sign flips; the fixed-horizon p-value wanders, which is why the earlier
"traffic needed" figures depended on the budget they were cut at.
"""

from __future__ import annotations

from collections.abc import Sequence


def first_crossing(checks: Sequence[dict], key: str, alpha: float) -> int | None:
    """Searches at the first check whose ``key`` p-value is below ``alpha`` (None: never within the budget)."""
    return next((point["searches"] for point in checks if point[key] < alpha), None)


def stays_significant_from(checks: Sequence[dict], key: str, alpha: float) -> int | None:
    """Searches at the first check from which every later check has p < alpha and the final sign."""
    if not checks:
        return None
    final_sign = checks[-1]["sign"]
    start = None
    for point in checks:
        holds = point[key] < alpha and point["sign"] == final_sign and final_sign != 0
        if not holds:
            start = None
        elif start is None:
            start = point["searches"]
    return start


def first_verdict(checks: Sequence[dict]) -> tuple[int | None, str | None]:
    """The first check at which the product suggested a winner, and that winner's arm name."""
    point = next((p for p in checks if p["winner"]), None)
    return (point["searches"], point["winner"]) if point else (None, None)


def run_summary(checks: Sequence[dict], alpha: float) -> dict:
    """A run's figures under the product's (always-valid) p-value and, for reference, the fixed-horizon one."""
    verdict_at, winner = first_verdict(checks)
    return {
        "budget": checks[-1]["searches"] if checks else 0,
        "first_crossing": first_crossing(checks, "p_value", alpha),
        "stays_significant_from": stays_significant_from(checks, "p_value", alpha),
        "verdict_at": verdict_at,
        "winner": winner,
        "fixed_horizon_first_crossing": first_crossing(checks, "fixed_p", alpha),
        "fixed_horizon_stays_significant_from": stays_significant_from(checks, "fixed_p", alpha),
    }


def ratio(ab: int | None, interleaving: int | None) -> float | None:
    """A/B searches over interleaving searches for the same figure; None unless both reached it."""
    return ab / interleaving if ab and interleaving else None


FIGURES = ("first_crossing", "stays_significant_from", "fixed_horizon_first_crossing")


def compare_designs(seeds: Sequence[dict]) -> dict:
    """Per seed and pooled: the A/B ÷ interleaving ratio of each figure, and the share of seeds with a verdict.

    ``seeds``: one ``{"seed", "ab", "interleaving"}`` per seed, each design a ``run_summary``. Pooled
    ratio: total A/B searches over total interleaving searches, over the seeds where both reached the
    figure; ``censored_lower_bound`` counts a seed where only interleaving reached it with A/B at its
    budget, so it is a lower bound on the ratio (None when interleaving never reached it).
    """
    out: dict = {"per_seed": [], "pooled": {}}
    for run in seeds:
        out["per_seed"].append(
            {"seed": run["seed"], **{f: ratio(run["ab"][f], run["interleaving"][f]) for f in FIGURES}}
        )
    for figure in FIGURES:
        both = [r for r in seeds if r["ab"][figure] and r["interleaving"][figure]]
        either = [r for r in seeds if r["interleaving"][figure]]
        censored_ab = sum(r["ab"][figure] or r["ab"]["budget"] for r in either)
        out["pooled"][figure] = {
            "seeds_with_both": len(both),
            "ratio": ratio(sum(r["ab"][figure] for r in both), sum(r["interleaving"][figure] for r in both))
            if both
            else None,
            "censored_lower_bound": ratio(censored_ab, sum(r["interleaving"][figure] for r in either))
            if either
            else None,
        }
    for design in ("ab", "interleaving"):
        out[f"{design}_share_with_verdict"] = sum(bool(r[design]["verdict_at"]) for r in seeds) / len(seeds)
    return out

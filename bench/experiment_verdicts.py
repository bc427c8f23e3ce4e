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


def first_to_reach(ab: int | None, interleaving: int | None) -> str | None:
    """Which design reached the figure with fewer searches: "ab", "interleaving", "same" or None (neither)."""
    if ab is None and interleaving is None:
        return None
    if interleaving is None or (ab is not None and ab < interleaving):
        return "ab"
    if ab is None or interleaving < ab:
        return "interleaving"
    return "same"


def ratio_bounds(ab: float, ab_reached: bool, interleaving: float, interleaving_reached: bool) -> dict:
    """The A/B ÷ interleaving ratio's bounds when a design that never reached the figure took "at least" its budget.

    ``ab`` / ``interleaving``: searches (or their sums), the budget standing in for a design that did
    not reach it. ``high`` None: unbounded (A/B may need any amount more); ``low`` 0: interleaving may.
    """
    return {
        "low": ab / interleaving if interleaving_reached else 0.0,
        "high": ab / interleaving if ab_reached else None,
    }


def compare_designs(seeds: Sequence[dict]) -> dict:
    """Per seed and pooled: the A/B ÷ interleaving ratio of each figure, censored both ways, and who reached it first.

    ``seeds``: one ``{"seed", "ab", "interleaving"}`` per seed, each design a ``run_summary``. A design
    that never reached a figure within its budget needed **at least** the budget, so in such a seed the
    ratio is only bounded: A/B never reached it, the ratio is at least budget ÷ interleaving's; interleaving
    never reached it, at most A/B's ÷ budget. Censoring only one way (the figure this replaced: seeds
    where interleaving reached it, A/B at its budget) tilts the pooled ratio toward interleaving.

    Pooled, over the seeds where at least one design reached the figure: ``ratio`` over the seeds where
    both did; ``at_budget`` with every missing value at its budget (a point, not a bound); ``low`` /
    ``high`` the bounds (``low`` 0 when interleaving missed in some seed, ``high`` None when A/B did);
    and the count of seeds each design reached first.
    """
    out: dict = {"per_seed": [], "pooled": {}}
    for run in seeds:
        row: dict = {"seed": run["seed"]}
        for f in FIGURES:
            ab, il = run["ab"][f], run["interleaving"][f]
            row[f] = {
                "ratio": ratio(ab, il),
                "first": first_to_reach(ab, il),
                **ratio_bounds(ab or run["ab"]["budget"], bool(ab), il or run["interleaving"]["budget"], bool(il)),
            }
        out["per_seed"].append(row)
    for figure in FIGURES:
        both = [r for r in seeds if r["ab"][figure] and r["interleaving"][figure]]
        either = [r for r in seeds if r["ab"][figure] or r["interleaving"][figure]]
        firsts = [first_to_reach(r["ab"][figure], r["interleaving"][figure]) for r in seeds]
        ab_sum = sum(r["ab"][figure] or r["ab"]["budget"] for r in either)
        il_sum = sum(r["interleaving"][figure] or r["interleaving"]["budget"] for r in either)
        out["pooled"][figure] = {
            "seeds_with_both": len(both),
            "ratio": ratio(sum(r["ab"][figure] for r in both), sum(r["interleaving"][figure] for r in both))
            if both
            else None,
            "at_budget": ab_sum / il_sum if either else None,
            **(
                ratio_bounds(
                    ab_sum,
                    all(r["ab"][figure] for r in either),
                    il_sum,
                    all(r["interleaving"][figure] for r in either),
                )
                if either
                else {"low": None, "high": None}
            ),
            "ab_first": firsts.count("ab"),
            "interleaving_first": firsts.count("interleaving"),
            "same": firsts.count("same"),
            "neither": firsts.count(None),
        }
    for design in ("ab", "interleaving"):
        out[f"{design}_share_with_verdict"] = sum(bool(r[design]["verdict_at"]) for r in seeds) / len(seeds)
    return out

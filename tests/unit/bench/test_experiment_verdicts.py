"""The figures of the A/B vs interleaving comparison (``bench/experiment_verdicts.py``), on hand-made check series."""

import pytest

from bench.experiment_verdicts import compare_designs, first_crossing, run_summary, stays_significant_from


def checks(p_values, signs=None, winners=None, fixed=None):
    n = len(p_values)
    return [
        {
            "searches": 50 * (i + 1),
            "p_value": p_values[i],
            "fixed_p": (fixed or p_values)[i],
            "sign": (signs or [1] * n)[i],
            "winner": (winners or [None] * n)[i],
        }
        for i in range(n)
    ]


def test_first_crossing_and_stays_significant_differ_when_the_p_value_wanders():
    wandering = checks([0.5, 0.04, 0.2, 0.03, 0.01, 0.02])
    assert first_crossing(wandering, "p_value", 0.05) == 100
    assert stays_significant_from(wandering, "p_value", 0.05) == 200  # 0.2 at 150 breaks the first run
    assert stays_significant_from(checks([0.5, 0.04, 0.06]), "p_value", 0.05) is None  # not significant at the end
    assert first_crossing(checks([0.5, 0.3]), "p_value", 0.05) is None


def test_a_significant_run_of_the_other_sign_does_not_count_as_staying_significant():
    flipped = checks([0.01, 0.01, 0.01, 0.01], signs=[-1, -1, 1, 1])
    assert first_crossing(flipped, "p_value", 0.05) == 50
    assert stays_significant_from(flipped, "p_value", 0.05) == 150


def test_run_summary_reads_the_product_verdict_and_the_fixed_horizon_p_values():
    found = run_summary(
        checks([0.5, 0.2, 0.04, 0.01], winners=[None, None, "learned", "learned"], fixed=[0.03, 0.2, 0.01, 0.001]),
        0.05,
    )
    assert found["budget"] == 200 and found["verdict_at"] == 150 and found["winner"] == "learned"
    assert (found["first_crossing"], found["stays_significant_from"]) == (150, 150)
    assert (found["fixed_horizon_first_crossing"], found["fixed_horizon_stays_significant_from"]) == (50, 150)


def summary(first, stays, verdict, budget=1000):
    return {
        "budget": budget,
        "first_crossing": first,
        "stays_significant_from": stays,
        "fixed_horizon_first_crossing": first,
        "verdict_at": verdict,
    }


def test_ratios_per_seed_pooled_and_the_share_of_seeds_with_a_verdict():
    seeds = [
        {"seed": 1, "ab": summary(600, 600, 600), "interleaving": summary(200, 300, 200)},
        {"seed": 2, "ab": summary(900, 900, 900), "interleaving": summary(300, 300, 300)},
    ]
    found = compare_designs(seeds)
    assert [r["first_crossing"]["ratio"] for r in found["per_seed"]] == [3.0, 3.0]
    assert found["per_seed"][0]["stays_significant_from"]["ratio"] == 2.0
    pooled = found["pooled"]["first_crossing"]
    assert pooled["seeds_with_both"] == 2 and pooled["ratio"] == pytest.approx(1500 / 500)
    assert (pooled["low"], pooled["high"]) == (pytest.approx(3.0), pytest.approx(3.0))  # nothing censored
    assert (pooled["ab_first"], pooled["interleaving_first"], pooled["neither"]) == (0, 2, 0)
    assert found["ab_share_with_verdict"] == 1.0 and found["interleaving_share_with_verdict"] == 1.0


def test_a_design_that_never_reached_it_needed_at_least_the_budget_whichever_design_it_is():
    seeds = [
        {"seed": 1, "ab": summary(800, 800, 800), "interleaving": summary(900, 900, 900)},
        {"seed": 2, "ab": summary(300, 300, 300), "interleaving": summary(None, None, None)},
        {"seed": 3, "ab": summary(None, None, None), "interleaving": summary(500, 500, 500)},
        {"seed": 4, "ab": summary(None, None, None), "interleaving": summary(None, None, None)},
    ]
    found = compare_designs(seeds)
    two, three, four = (r["first_crossing"] for r in found["per_seed"][1:])
    # Seed 2: interleaving needed at least 1,000, so the ratio is at most 300 / 1,000 (A/B crossed first).
    assert two == {"ratio": None, "first": "ab", "low": 0.0, "high": pytest.approx(0.3)}
    # Seed 3: A/B needed at least 1,000, so the ratio is at least 1,000 / 500, with no upper bound.
    assert three == {"ratio": None, "first": "interleaving", "low": pytest.approx(2.0), "high": None}
    assert four == {"ratio": None, "first": None, "low": 0.0, "high": None}
    pooled = found["pooled"]["first_crossing"]
    # Every missing value at its budget over the seeds where one design crossed (seed 4 is neither).
    assert pooled["at_budget"] == pytest.approx((800 + 300 + 1000) / (900 + 1000 + 500))
    assert (pooled["low"], pooled["high"]) == (0.0, None)  # censored both ways: no bound either way
    assert (pooled["ab_first"], pooled["interleaving_first"], pooled["same"], pooled["neither"]) == (2, 1, 0, 1)
    assert pooled["seeds_with_both"] == 1 and pooled["ratio"] == pytest.approx(800 / 900)


def test_one_design_censored_bounds_the_pooled_ratio_on_one_side_only():
    seeds = [
        {"seed": 1, "ab": summary(600, 600, 600), "interleaving": summary(200, 200, 200)},
        {"seed": 2, "ab": summary(None, None, None), "interleaving": summary(250, 250, 250)},
    ]
    pooled = compare_designs(seeds)["pooled"]["first_crossing"]
    assert (pooled["low"], pooled["high"]) == (pytest.approx(1600 / 450), None)


def test_no_ratio_when_interleaving_never_reaches_a_verdict():
    seeds = [{"seed": 1, "ab": summary(600, 600, 600), "interleaving": summary(None, None, None)}]
    found = compare_designs(seeds)
    assert found["per_seed"][0]["first_crossing"]["ratio"] is None
    pooled = found["pooled"]["first_crossing"]
    assert pooled["ratio"] is None and pooled["high"] == pytest.approx(0.6) and pooled["ab_first"] == 1
    assert found["interleaving_share_with_verdict"] == 0.0

"""Recompute the A/B vs interleaving comparison from the checks ``docs/bench/simulate_experiments.json`` recorded.

No simulation and no database: the JSON holds every check of every experiment (the run's and each
re-read's), so the derived figures (``bench/experiment_verdicts.compare_designs``) can be rebuilt
after a change to how they are derived. Issue 17's audit found the pooled ratio censored only in
interleaving's favour; this rewrote the ``comparison`` blocks with the both-ways bounds.

It also adds ``true_effect_clipped``: the run's ``true_effect`` left out that a user's click chance
is clipped at 1 (``ClickyUsers.clicks_for``), fixed in ``simulate_experiments.true_effect`` for the
next run. From the recorded figures: with a full page of ``page`` results, expected clicks per
search are noise × X + (relevant − noise) × R, X the summed examination and R the examination of
the relevant results, so R follows from the recorded value and the clipped chances give the rest.

Run: .venv/bin/python bench/recompare_experiments.py [--input docs/bench/simulate_experiments.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from simulate_experiments import OUT, expected_click_chance  # noqa: E402 - the bench folder must be importable

from bench.experiment_verdicts import compare_designs  # noqa: E402


def comparison(seeds: list[dict]) -> dict:
    return compare_designs([{"seed": r["seed"], "ab": r["ab"], "interleaving": r["interleaving"]} for r in seeds])


def clipped_effect(effect: dict, config: dict, page: int = 10) -> dict:
    """The recorded unclipped ``true_effect`` with each user's click chance clipped at 1 (see the docstring)."""
    relevant, noise = config["click_relevant"], config["click_noise"]
    a, b = config["clicky_a"], config["clicky_b"]
    relevant_c, noise_c = expected_click_chance(relevant, a, b), expected_click_chance(noise, a, b)
    examined = sum((1 / p) ** config["eta"] for p in range(1, page + 1))
    out = {}
    for name in ("embedding", "ranker"):
        relevant_examined = (effect[name] - noise * examined) / (relevant - noise)
        out[name] = noise_c * examined + (relevant_c - noise_c) * relevant_examined
    out["relative_lift"] = out["ranker"] / out["embedding"] - 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=OUT)
    args = parser.parse_args()
    found = json.loads(args.input.read_text())
    found["comparison"] = comparison(found["seeds"])
    for reread in found.get("reread", {}).values():
        reread["comparison"] = comparison(reread["seeds"])
    if "clipped" not in found["true_effect"]:  # a run after the fix recorded the clipped effect itself
        found["true_effect_clipped"] = clipped_effect(found["true_effect"], found["config"])
    args.input.write_text(json.dumps(found, indent=2, default=str))
    print("run:", json.dumps(found["comparison"]["pooled"], indent=1))
    for key, reread in found.get("reread", {}).items():
        print(f"re-read {key}:", json.dumps(reread["comparison"]["pooled"], indent=1))
    print("true effect, clipped:", found.get("true_effect_clipped", found["true_effect"]))


if __name__ == "__main__":
    main()

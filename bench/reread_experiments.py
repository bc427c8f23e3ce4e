"""Read the experiments that ``bench/simulate_experiments.py`` logged again, with another expected effect.

The mSPRT's power depends on its mixing spread τ (the experiment's expected effect times the control's
value, or the share of decided searches for interleaving): ``ranking.experiments.sequential``. This
re-reads the *same* logged searches and clicks (so the rows are not new evidence, only another
setting) through the product's own functions (``results.PER_SEARCH_SQL`` / ``INTERLEAVING_SQL``,
``interleaving.credit``, ``sequential.ratio_path``, ``compare_paths``, ``preference_test``), at each
check of the run. With the run's own expected effect it must give the p-values the run recorded from
``results()``: that is asserted before anything else is reported.

Run (right after the simulation, on its var dir and JSON):
    .venv/bin/python bench/reread_experiments.py --var-dir var/exp --expected-effect 0.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_experiments as experiments  # noqa: E402 - the run whose logs are re-read
import simulate_learning as sim  # noqa: E402

from bench.experiment_verdicts import compare_designs, run_summary  # noqa: E402


def p_value_path(experiment, expected_effect: float) -> np.ndarray:
    """The always-valid p-value of the primary metric after every first-page search, with ``expected_effect``."""
    from ranking.experiments import results
    from ranking.experiments.interleaving import credit
    from ranking.experiments.sequential import compare_paths, preference_test, ratio_path
    from ranking.models import Experiment

    start = results.start_users(experiment)
    if experiment.mode == Experiment.Mode.INTERLEAVE:
        a, b = (v.name for v in experiment.variants.all())
        with results.connection.cursor() as cursor:
            cursor.execute(results.INTERLEAVING_SQL, {"experiment": experiment.pk})
            rows = cursor.fetchall()
        users = {key: i for i, key in enumerate(dict.fromkeys(r[0] for r in rows))}
        values = np.array([credit(r[2] or [], a, b) for r in rows], dtype=float)
        path = ratio_path(
            np.ones(len(values), bool), np.array([users[r[0]] for r in rows]), values, np.ones(len(values))
        )
        decided = np.cumsum(np.abs(values)) / np.arange(1, len(values) + 1)
        return preference_test(path, decided, expected_effect, start, results.ALPHA).p_values
    rows = results._rows(results.PER_SEARCH_SQL, experiment)
    users = {key: i for i, key in enumerate({r["user_key"] for r in rows})}
    user = np.array([users[r["user_key"]] for r in rows], dtype=np.int64)
    arm = np.array([r["arm"] for r in rows], dtype=object)
    numerator, denominator, _ = results.METRICS[experiment.primary_metric]
    num, den = (np.array([float(r[c]) for r in rows]) for c in (numerator, denominator))
    control = next(v.name for v in experiment.variants.all() if v.is_control)
    treatment = next(v.name for v in experiment.variants.all() if not v.is_control)
    test = compare_paths(
        ratio_path(arm == control, user, num, den),
        ratio_path(arm == treatment, user, num, den),
        expected_effect,
        start,
        results.ALPHA,
    )
    return test.p_values


def reread(run: dict, experiment, expected_effect: float) -> list[dict]:
    """The run's checks with the p-value read at ``expected_effect`` (the product's winner rule is not re-applied)."""
    own = p_value_path(experiment, experiment.expected_effect)
    recorded = np.array([c["p_value"] for c in run["checks"]])
    at = np.array([c["searches"] for c in run["checks"]]) - 1
    if not np.allclose(own[at], recorded, rtol=1e-9, atol=1e-12):
        raise AssertionError(f"re-reading {experiment.name} does not reproduce the recorded p-values")
    other = p_value_path(experiment, expected_effect)[at]
    # A crossing here is p < alpha; the recorded run also required the minimum users, which every
    # monitored look already has (monitoring starts there), and a healthy sample ratio (checked below).
    return [
        {**c, "p_value": float(p), "winner": "crossed" if p < 0.05 else None}
        for c, p in zip(run["checks"], other, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=sim.ROOT / "var" / "experiments")
    parser.add_argument("--input", type=Path, default=experiments.OUT)
    parser.add_argument("--expected-effect", type=float, required=True)
    args = parser.parse_args()
    found = json.loads(args.input.read_text())
    sim.setup(args.var_dir, False, argparse.Namespace(dataset="caltech101", swap_share=0.0, explore_share=0.0))
    from ranking.models import Experiment

    seeds = []
    for run in found["seeds"]:
        row = {"seed": run["seed"]}
        for label in ("ab", "interleaving"):
            name = f"{label} embedding vs {found['ranker']} seed {run['seed']} "
            experiment = Experiment.objects.get(name__startswith=name)
            if label == "ab" and min(c["srm_p"] for c in run[label]["checks"]) < 0.001:
                sys.exit(f"{experiment.name}: a sample ratio mismatch at some check; the crossings would not count.")
            checks = reread(run[label], experiment, args.expected_effect)
            row[label] = {"checks": checks, **run_summary(checks, 0.05)}
        seeds.append(row)
        print(f"seed {run['seed']}: " + ", ".join(f"{k} {row[k]['first_crossing']}" for k in ("ab", "interleaving")))
    found.setdefault("reread", {})[str(args.expected_effect)] = {
        "expected_effect": args.expected_effect,
        "seeds": seeds,
        "comparison": compare_designs(seeds),
    }
    args.input.write_text(json.dumps(found, indent=2, default=str))
    print(json.dumps(found["reread"][str(args.expected_effect)]["comparison"], indent=1))


if __name__ == "__main__":
    main()

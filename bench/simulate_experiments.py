"""Simulated users in experiments: how much traffic an A/B test and an interleaving test need, and A/A calibration.

Runs on the collection and the trained ranker that ``bench/simulate_learning.py --keep`` leaves in
``--var-dir`` (Caltech 101 without labels, tiny random-weight encoder). Everything goes through the
product: experiments are created and started with ``ranking.experiments.actions``, each simulated
search goes through ``SearchService.search`` with a viewer (so the user is assigned by hashing and the
arm is logged), clicks go through ``feedback.capture.record_click``, and the verdicts come from
``ranking.experiments.results`` (users as the unit of analysis).

Users differ: each has a "clickiness" drawn from a Beta distribution that scales the click model's
probabilities (some people click a lot, some hardly at all), so searches by the same user are
correlated, as in real traffic.

1. **A/B**: control = embedding order (reranking off), treatment = the trained ranker; traffic
   grows in steps of ``--check-every`` searches; reported: the first step from which the primary
   metric's p-value stays below 0.01 until the end of the budget.
2. **Interleaving**: the same two rankers, team-draft interleaved in every list; the same rule.
3. **A/A**: an experiment whose two arms are identical; the logged per-user rows are split again with
   200 fresh salts (exactly what the product's hashing does with a new salt) and each split is tested
   at 5%; reported: the share of splits that reject.

Run (after ``bench/simulate_learning.py --keep``):
    .venv/bin/python bench/simulate_experiments.py
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_learning as sim  # noqa: E402 - the same collection, users and click model

OUT = sim.OUT_DIR / "simulate_experiments.json"


class ClickyUsers(sim.Users):
    """The learning simulation's users, each with their own clickiness."""

    def __init__(self, labels, args, seed: int) -> None:
        super().__init__(labels, args, seed)
        self.clickiness = self.rng.beta(args.clicky_a, args.clicky_b, args.users) / (
            args.clicky_a / (args.clicky_a + args.clicky_b)
        )  # mean 1

    def clicks_for(self, user: int, hits, wanted: str) -> list:
        scale = self.clickiness[user]
        clicked = []
        for hit in hits:
            if self.rng.random() >= (1.0 / hit.position) ** self.args.eta:
                continue
            relevant = self.labels.get(hit.image.pk) == wanted
            chance = (self.args.click_relevant if relevant else self.args.click_noise) * scale
            if self.rng.random() < min(chance, 1.0):
                clicked.append(hit)
        return clicked


def traffic(users: ClickyUsers, args, experiment, budget: int, check, label: str) -> list[dict]:
    """Run ``budget`` searches in the running ``experiment``; ``check`` every ``--check-every``."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    checks = []
    started = time.perf_counter()
    for n in range(1, budget + 1):
        text, wanted = users.draw_query()
        user = int(users.rng.integers(args.users))
        viewer = Viewer(user_key=f"sim:{label}{experiment.pk}-user-{user}", surface="sim")  # fresh per run
        response = service.search(SearchRequest(text=text, page_size=10), viewer)
        for i, hit in enumerate(users.clicks_for(user, response.hits, wanted)):
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"{n}-{i}"))
        if n % args.check_every == 0:
            point = {"searches": n, **check(experiment)}
            checks.append(point)
            print(f"  {label} {n} searches ({n / (time.perf_counter() - started):.0f}/s): {point}", flush=True)
    return checks


def ab_check(experiment) -> dict:
    from ranking.experiments.results import results

    found = results(experiment)
    treatment = next(a for a in found.arms if not a.variant.is_control)
    control = next(a for a in found.arms if a.variant.is_control)
    c = treatment.comparisons[experiment.primary_metric]
    return {
        "users": [control.users, treatment.users],
        "control": c.control,
        "treatment": c.treatment,
        "p_value": c.p_value,
        "srm_p": found.sample_ratio.p_value,
    }


def interleaving_check(experiment) -> dict:
    from ranking.experiments.results import results

    i = results(experiment).interleaving
    return {
        "users": i.users,
        "wins": [i.wins_a, i.wins_b],
        "ties": i.ties,
        "preference": i.preference.value,
        "p_value": i.p_value,
        "sign_test_p": i.sign_test_p,
    }


def first_crossing(checks: list[dict], alpha: float) -> int | None:
    """The first check at which the p-value is below ``alpha`` (what someone acting on the page would see)."""
    return next((p["searches"] for p in checks if p["p_value"] < alpha), None)


def needed(checks: list[dict], alpha: float) -> int | None:
    """The first traffic from which every later check stays significant (None: never within the budget)."""
    for index, point in enumerate(checks):
        if all(p["p_value"] < alpha for p in checks[index:]):
            return point["searches"]
    return None


def aa_rejections(experiment, repetitions: int, alpha: float, seed: int) -> dict:
    """Split the A/A experiment's users again with fresh salts; test each split as the product would."""
    from ranking.experiments.assignment import bucket
    from ranking.experiments.results import METRICS, per_user_rows
    from ranking.experiments.statistics import compare, ratio

    rows = per_user_rows(experiment)
    numerator, denominator, _ = METRICS[experiment.primary_metric]
    rng = np.random.default_rng(seed)
    p_values = []
    for _ in range(repetitions):
        salt = rng.bytes(16).hex()
        arms = np.array([bucket(salt, r["user_key"], 1.0, [1, 1]) for r in rows])
        num = np.array([float(r[numerator]) for r in rows])
        den = np.array([float(r[denominator]) for r in rows])
        p_values.append(compare(ratio(num[arms == 0], den[arms == 0]), ratio(num[arms == 1], den[arms == 1])).p_value)
    p_values = np.asarray(p_values)
    return {
        "users": len(rows),
        "searches": int(sum(int(r["searches"]) for r in rows)),
        "repetitions": repetitions,
        "rejection_rate": float((p_values < alpha).mean()),
        "alpha": alpha,
        "p_value_deciles": np.quantile(p_values, np.linspace(0, 1, 11)).round(3).tolist(),
    }


def make(name: str, mode: str, arms: list[dict], metric: str):
    from ranking.experiments.actions import start
    from ranking.models import Experiment, Variant

    experiment = Experiment.objects.create(
        name=f"{name} {secrets.token_hex(3)}", mode=mode, surface="sim", primary_metric=metric, min_users_per_arm=50
    )
    for arm in arms:
        Variant.objects.create(experiment=experiment, **arm)
    return start(experiment, "simulation")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("ab", "A/B (users split)"), ("interleaving", "team-draft interleaving")):
        checks = results[key]["checks"]
        ax.semilogy(
            [c["searches"] for c in checks], [max(c["p_value"], 1e-16) for c in checks], marker="o", label=label
        )
    ax.axhline(0.01, color="grey", linestyle="--", label="p = 0.01")
    ax.set_xlabel("searches in the experiment")
    ax.set_ylabel("p-value")
    ax.set_title("Embedding order vs learned ranker: traffic to a verdict")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=sim.ROOT / "var" / "sim")
    parser.add_argument("--seed", type=int, default=3, help="the query distribution (use the learning run's last seed)")
    parser.add_argument("--users", type=int, default=2_000)
    # Equal budgets and the same stopping rule for both designs (issue 17: the earlier 2.9x compared
    # A/B over 2,000 searches with interleaving over 1,000).
    parser.add_argument("--budget", type=int, default=1_000, help="searches for A/B and for interleaving alike")
    parser.add_argument("--aa-searches", type=int, default=4_000)
    parser.add_argument("--aa-repetitions", type=int, default=200)
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--metric", default="clicks_per_search")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--click-relevant", type=float, default=0.9)
    parser.add_argument("--click-noise", type=float, default=0.05)
    parser.add_argument("--clicky-a", type=float, default=2.0, help="Beta(a, b) of the users' clickiness")
    parser.add_argument("--clicky-b", type=float, default=2.0)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    # Caltech's users and click model; no swap or exploration slices (nothing changed on purpose).
    args.dataset, args.model, args.swap_share, args.explore_share = "caltech101", "position", 0.0, 0.0
    if not sim.CALTECH.is_dir():
        sys.exit(f"This simulation needs {sim.CALTECH} (the shared folder beside the repo).")
    sim.setup(args.var_dir, False, args)
    labels = sim.ingest_unlabelled(0)
    from ranking.models import Experiment, RankerVersion

    ranker = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).first()
    if ranker is None:
        sys.exit(f"No active ranker in {args.var_dir}: run bench/simulate_learning.py --keep first.")
    Experiment.objects.filter(status=Experiment.Status.RUNNING).update(status=Experiment.Status.STOPPED)
    users = ClickyUsers(labels, args, args.seed)
    control = {"name": "embedding", "use_reranker": False}
    learned = {"name": "learned", "ranker": ranker}
    from ranking.experiments.actions import stop

    print(f"A/B: embedding order vs {ranker.label}", flush=True)
    ab = make("A/B embedding vs learned", "ab", [{**control, "is_control": True}, learned], args.metric)
    ab_checks = traffic(users, args, ab, args.budget, ab_check, "ab")
    stop(ab, "simulation")
    print("Interleaving: the same two rankers", flush=True)
    il = make("interleaving embedding vs learned", "interleave", [control, learned], args.metric)
    il_checks = traffic(users, args, il, args.budget, interleaving_check, "il")
    stop(il, "simulation")
    print("A/A: two identical arms", flush=True)
    aa = make("A/A", "ab", [{**control, "is_control": True}, {**control, "name": "same-again"}], args.metric)
    aa_checks = traffic(users, args, aa, args.aa_searches, ab_check, "aa")
    stop(aa, "simulation")
    aa_result = aa_rejections(aa, args.aa_repetitions, 0.05, args.seed)
    # The same check with 1,000 salts: 200 re-randomisations of one dataset are correlated, so their
    # rejection share wanders by about 3 points; 1,000 pin the test's calibration down more tightly.
    aa_result["with_1000_salts"] = {
        k: v for k, v in aa_rejections(aa, 1000, 0.05, args.seed + 1).items() if k in ("repetitions", "rejection_rate")
    }
    ab_needed, il_needed = needed(ab_checks, args.alpha), needed(il_checks, args.alpha)
    ab_first, il_first = first_crossing(ab_checks, args.alpha), first_crossing(il_checks, args.alpha)
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "ranker": ranker.label,
        "statistics": "always-valid (mSPRT), the product's default",
        "ab": {"checks": ab_checks, "stays_significant_from": ab_needed, "first_crossing": ab_first},
        "interleaving": {"checks": il_checks, "stays_significant_from": il_needed, "first_crossing": il_first},
        "ab_over_interleaving_stays": (ab_needed / il_needed) if ab_needed and il_needed else None,
        "ab_over_interleaving_first": (ab_first / il_first) if ab_first and il_first else None,
        "aa": {"checks": aa_checks, **aa_result},
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("config",)}, indent=1, default=str)[:3000])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()

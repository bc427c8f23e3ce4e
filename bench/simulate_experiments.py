"""A/B against interleaving, fairly: the same traffic budget, the same stopping rule, several seeds.

Issue 17: the earlier "A/B needs 2.9x the traffic of interleaving" compared A/B over a 2,000-search
budget with interleaving over 1,000, read fixed-horizon p-values at every check, and ran one seed.
Here both designs get the same budget of searches, both are read every ``--check-every`` searches
with the statistics the product uses by default (always valid, mSPRT, with the experiment's
``--expected-effect``), and each seed is a fresh draw of users, clickiness and queries, served to
both designs alike.

Everything goes through the product: experiments are created and started with
``ranking.experiments.actions``, every simulated search goes through ``SearchService.search`` with a
viewer (hash assignment, exposure logging, team-draft interleaving), clicks through
``feedback.capture.record_click``, and each check reads ``ranking.experiments.results`` (the p-value
and the winner the admin page and the API show).

**The two orders compared**: the embedding order (reranking off) and a LightGBM ranker that
``ranking.training.retrain`` trains on a training phase of simulated traffic. **What is held out**:
the experiments' users ask for the same intents as the training phase (as often), but only in
wordings the training phase never used (``held_out_queries.new_phrasing_traffic``), so the ranker
cannot win by remembering per-query clicks. Asserted in code (``check_leaks``): before and after
every experiment, a query string of the evaluated traffic among the searches logged up to the
ranker's ``trained_until``, or among the query summaries its features read, stops the run with
``LeakageError``. The summaries are refreshed only in the training phase, and the feedback retrieval
channel and personalisation are off (pinned before ``django.setup``, checked after: ``check_settings``),
so the experiments' own clicks never reach either order (what is compared stays fixed while it is
measured): asserted by ``check_unchanged``, which stops the run with ``ServingChanged`` when the image
summary, the examination curve or the active ranker differ after an experiment from before the seed's.

Users: the learning simulation's position-based click model (examination (1/p)^eta, click 0.9
relevant / 0.05 irrelevant), each user's probabilities scaled by a clickiness drawn from Beta(2, 2)
(mean 1), so one user's searches are correlated as in real traffic.

The collection is a sample of Caltech 101 ingested without labels and a tiny random-weight encoder;
``--strong-base`` moves the stored image vectors toward their class's text vector so the embedding
order carries relevance (a random encoder ranks at chance, and neither order could then be better).
This measures the designs' sensitivity, not CLIP quality.

Run (from the repo root, after bin/setup dev; what docs/experiments.md reports, ~25 minutes on the shared
2-core machine):
    .venv/bin/python bench/simulate_experiments.py --fresh --var-dir var/exp --images 2000 \
        --strong-base 0.3 0.5 --treatment reversed --budget 1000 --seeds 1 2 3
    .venv/bin/python bench/reread_experiments.py --var-dir var/exp --expected-effect 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_learning as sim  # noqa: E402 - the same collection, click model and setup

from bench.experiment_verdicts import compare_designs, run_summary  # noqa: E402 - importable once sim is
from bench.held_out_queries import LeakageError, caltech_sets, check_traffic, new_phrasing_traffic  # noqa: E402

OUT = sim.OUT_DIR / "simulate_experiments.json"
STRONG_BASE_MARK = "strong_base.json"


class ClickyUsers:
    """Users who each click more or less (a Beta clickiness, mean 1) under the position-based click model."""

    def __init__(self, labels: dict[int, str], args, rng: np.random.Generator) -> None:
        self.labels, self.args, self.rng = labels, args, rng
        a, b = args.clicky_a, args.clicky_b
        self.clickiness = rng.beta(a, b, args.users) / (a / (a + b))

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


def expected_click_chance(chance: float, a: float, b: float) -> float:
    """E[min(chance × c, 1)] over the users' clickiness c ~ Beta(a, b) / its mean, the clip ``clicks_for`` applies.

    Without the clip the mean would be ``chance`` (c has mean 1); with Beta(2, 2) c runs to 2, so a
    relevant result's 0.9 averages 0.777 (the audit of issue 17 found ``true_effect`` had left it out).
    """
    from scipy import integrate, stats

    mean = a / (a + b)
    kink = mean / chance  # where the clip starts, if inside (0, 1)
    density = stats.beta(a, b).pdf
    value, _ = integrate.quad(
        lambda x: min(chance * x / mean, 1.0) * density(x), 0, 1, points=[kink] if 0 < kink < 1 else None
    )
    return float(value)


def training_phase(args, labels: dict[int, str], sets) -> tuple:
    """Logged searches of the training strings, a summary refresh, one retraining: the ranker to compare."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from ranking.registry import promote
    from ranking.summaries import refresh_with_estimated_curve
    from ranking.training import retrain
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    rng = np.random.default_rng(args.train_seed)
    users = ClickyUsers(labels, args, rng)
    started = time.perf_counter()
    for n in range(1, args.train_searches + 1):
        query = sets.draw_training(rng)
        user = int(rng.integers(args.users))
        viewer = Viewer(user_key=f"sim:train-user-{user}", surface="sim")
        response = service.search(SearchRequest(text=query.text, page_size=10), viewer)
        for i, hit in enumerate(users.clicks_for(user, response.hits, query.intent)):
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"t{n}-{i}"))
        if n % args.refresh_every == 0:
            refresh_with_estimated_curve()  # the beat task's job in the product
    refresh_with_estimated_curve()
    run = retrain(force=True)
    print(f"  {args.train_searches} training searches in {time.perf_counter() - started:.0f} s: {run.message}")
    if run.ranker is None:
        sys.exit(f"The training phase produced no ranker ({run.message}); raise --train-searches.")
    if run.ranker.status != run.ranker.Status.ACTIVE:
        # An experiment is how a candidate the gate doubted gets its chance; production serving it only
        # matters for the offline effect measurement (the arms name their orders explicitly).
        promote(run.ranker)
    return run.ranker, {"outcome": run.outcome, "message": run.message}


def reversed_order_ranker():
    """A fixed order known to differ from the embedding order: its top ``LOUPE_RERANK_DEPTH`` upside down.

    A real LightGBM ranker (served like any other), fitted to prefer the last first-stage positions
    from the position feature at the values serving gives it, as ``tests/integration/experiments``
    does; random values in the other features, so it learns from the position alone.
    """
    from django.utils import timezone

    from ranking.features import NAMES
    from ranking.ltr import RankingData, train_ranker
    from ranking.registry import promote, save_candidate

    rng = np.random.default_rng(0)
    depth, groups = 100, 60
    X = rng.random((groups * depth, len(NAMES)))
    X[:, NAMES.index("first_stage_rank_log")] = np.tile(np.log1p(np.arange(1, depth + 1)), groups)
    y = np.tile(np.arange(depth) / (depth - 1) * 3, groups).round()  # graded: the later, the better
    trained = train_ranker(RankingData(X, y, [depth] * groups, feature_names=NAMES), rounds=60)
    now = timezone.now()
    version = save_candidate(
        trained, trained_from=now, trained_until=now, train_searches=0, validation_searches=0, metrics={}
    )
    promote(version)  # only for the offline effect measurement; the arms name their orders explicitly
    return version, {"outcome": "fixed", "message": "the embedding order's top 100, reversed"}


# What the run pins (environment before ``django.setup``, asserted after): with the feedback channel
# on, the experiments' clicks would add images to both arms' candidates; with personalisation on,
# each user's own clicks would move their orders live (issue 23's taste features, no refresh needed).
PINNED_SETTINGS = {"LOUPE_FEEDBACK_CHANNEL": False, "LOUPE_PERSONALISE": False}


class ServingChanged(RuntimeError):
    """Something the compared orders read changed while they were being compared."""


def check_settings() -> None:
    """Stop unless the settings that would let the experiments' traffic reach either order are off."""
    from django.conf import settings

    wrong = {
        name: getattr(settings, name) for name, value in PINNED_SETTINGS.items() if getattr(settings, name) != value
    }
    if wrong:
        raise ServingChanged(f"settings that let the experiments' clicks reach the orders are on: {wrong}")


def serving_state() -> dict:
    """What the two orders read besides the query summaries: image summary totals, the curve, the active ranker."""
    from django.db.models import Count, Sum

    from feedback.models import ExaminationWeight, ImageFeedbackSummary, QueryFeedbackSummary
    from ranking.models import RankerVersion

    images = ImageFeedbackSummary.objects.aggregate(
        rows=Count("pk"), impressions=Sum("impressions"), clicks=Sum("clicks"), examinations=Sum("examinations")
    )
    return {
        "image_summary": images,
        "query_summary_rows": QueryFeedbackSummary.objects.count(),
        "examination_curve": [[p, w] for p, w in ExaminationWeight.objects.values_list("position", "weight")],
        "active_rankers": sorted(
            RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).values_list("pk", flat=True)
        ),
    }


def check_unchanged(before: dict, where: str) -> dict:
    """Stop with ``ServingChanged`` if ``serving_state()`` differs from ``before`` (taken before the experiments)."""
    now = serving_state()
    changed = {key: {"before": before[key], "now": now[key]} for key in before if now[key] != before[key]}
    if changed:
        raise ServingChanged(f"{where}: {changed}")
    return now


def check_leaks(traffic, ranker) -> dict:
    """Stop with ``LeakageError`` if an evaluated query string is in what the ranker trained on or reads."""
    from django.db import connection

    from feedback.models import QueryFeedbackSummary, SearchEvent
    from feedback.summaries import QUERY_IMAGE_SUMMARY_VIEW

    trained = list(
        SearchEvent.objects.filter(created_at__lte=ranker.trained_until)
        .values_list("normalised_query", flat=True)
        .order_by()  # the model's ordering would put created_at in the DISTINCT: one row per search
        .distinct()
    )
    summarised = list(QueryFeedbackSummary.objects.values_list("query", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT query FROM {QUERY_IMAGE_SUMMARY_VIEW}")
        summarised += [row[0] for row in cursor.fetchall()]
    check_traffic(traffic, trained)
    check_traffic(traffic, summarised, "the query summaries the ranker's features read")
    return {"training_query_strings": len(trained), "summarised_query_strings": len(set(summarised))}


def true_effect(labels: dict[int, str], args, traffic) -> dict:
    """Expected clicks per search of each order on the evaluated traffic, from the true labels (not logged)."""
    from django.conf import settings

    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    sim.forget_served_orders()
    # The chances the simulated users click with, averaged over their clickiness, clip included.
    relevant = expected_click_chance(args.click_relevant, args.clicky_a, args.clicky_b)
    noise = expected_click_chance(args.click_noise, args.clicky_a, args.clicky_b)
    out = {}
    try:
        for name, rerank in (("embedding", False), ("ranker", True)):
            settings.LOUPE_RERANK = rerank
            values = []
            for query in traffic.training:
                hits = service.search(SearchRequest(text=query.text, page_size=10)).hits  # no viewer: not logged
                values.append(
                    sum(
                        (1 / h.position) ** args.eta * (relevant if labels.get(h.image.pk) == query.intent else noise)
                        for h in hits
                    )
                )
            out[name] = float(np.dot(traffic.weights, values))
    finally:
        settings.LOUPE_RERANK = True
        sim.forget_served_orders()
    out["relative_lift"] = out["ranker"] / out["embedding"] - 1
    out["clipped"] = True  # click chances clipped at 1 as the users click (earlier runs' figures were not)
    return out


def stream(traffic, args, seed: int) -> list[tuple]:
    """One seed's users and queries, drawn once and served to both designs alike."""
    rng = np.random.default_rng(seed)
    return [(traffic.draw_training(rng), int(rng.integers(args.users))) for _ in range(args.budget)]


def ab_point(experiment) -> dict:
    from ranking.experiments.results import results
    from ranking.experiments.statistics import compare

    found = results(experiment)
    control = next(a for a in found.arms if a.variant.is_control)
    treatment = next(a for a in found.arms if not a.variant.is_control)
    metric = experiment.primary_metric
    shown = treatment.comparisons[metric]
    fixed = compare(control.metrics[metric], treatment.metrics[metric])
    return {
        "users": [control.users, treatment.users],
        "control": shown.control,
        "treatment": shown.treatment,
        "p_value": shown.p_value,
        "method": shown.method,
        "fixed_p": fixed.p_value,
        "sign": int(np.sign(shown.difference)),  # > 0: the ranker's arm is ahead
        "srm_p": found.sample_ratio.p_value,
        "winner": found.winner.name if found.winner else None,
    }


def interleaving_point(experiment) -> dict:
    from ranking.experiments.results import results
    from ranking.experiments.statistics import RatioEstimate, compare

    found = results(experiment)
    i = found.interleaving
    fixed = compare(RatioEstimate(0.0, 0.0, i.preference.users), i.preference)
    return {
        "users": i.users,
        "wins": [i.wins_a, i.wins_b],
        "ties": i.ties,
        "preference": i.preference.value,
        "p_value": i.p_value,
        "method": i.method,
        "fixed_p": fixed.p_value if i.preference.users > 1 else 1.0,
        # The preference is wins of team A minus team B: > 0 favours A. Signed here so > 0: the ranker ahead.
        "sign": int(np.sign(i.preference.value)) * (1 if i.team_a == "learned" else -1),
        "winner": found.winner.name if found.winner else None,
    }


def run_experiment(args, labels, experiment, draws, point, seed: int, label: str) -> list[dict]:
    """Serve the seed's draws in the running ``experiment``; a ``point`` every ``--check-every`` searches."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    # Same users and clickiness as the other design; clicks from their own stream (the lists differ).
    users = ClickyUsers(labels, args, np.random.default_rng([seed, 0]))
    users.rng = np.random.default_rng([seed, 1 if label == "ab" else 2])
    checks = []
    started = time.perf_counter()
    for n, (query, user) in enumerate(draws, start=1):
        viewer = Viewer(user_key=f"sim:{label}{experiment.pk}-user-{user}", surface="sim")  # fresh per experiment
        response = service.search(SearchRequest(text=query.text, page_size=10), viewer)
        for i, hit in enumerate(users.clicks_for(user, response.hits, query.intent)):
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"{n}-{i}"))
        if n % args.check_every == 0:
            checks.append({"searches": n, **point(experiment)})
            if n % (args.check_every * 10) == 0:
                rate = n / (time.perf_counter() - started)
                print(f"    seed {seed} {label} {n} searches ({rate:.0f}/s): {checks[-1]}", flush=True)
    return checks


def make(args, name: str, mode: str, arms: list[dict]):
    from ranking.experiments.actions import start
    from ranking.models import Experiment, Variant

    experiment = Experiment.objects.create(
        name=f"{name} {secrets.token_hex(3)}",
        mode=mode,
        surface="sim",
        primary_metric=args.metric,
        min_users_per_arm=args.min_users,
        expected_effect=args.expected_effect,
        statistics=Experiment.Statistics.SEQUENTIAL,
    )
    for arm in arms:
        Variant.objects.create(experiment=experiment, **arm)
    return start(experiment, "simulation")


def one_seed(args, labels, traffic, ranker, seed: int) -> dict:
    from ranking.experiments.actions import stop

    draws = stream(traffic, args, seed)
    pinned = {"feedback_channel": False, "personalise": False}  # as the settings (checked): nothing learns
    embedding = {"name": "embedding", "use_reranker": False, **pinned}
    learned = {"name": "learned", "ranker": ranker, **pinned}
    designs = {
        "ab": ("ab", [{**embedding, "is_control": True}, learned], ab_point),
        "interleaving": ("interleave", [embedding, learned], interleaving_point),
    }
    out: dict = {"seed": seed, "distinct_users": len({u for _, u in draws}), "serving_state": serving_state()}
    for label, (mode, arms, point) in designs.items():
        out.setdefault("leak_checks", []).append(check_leaks(traffic, ranker))
        sim.forget_served_orders()
        experiment = make(args, f"{label} embedding vs {ranker.label} seed {seed}", mode, arms)
        checks = run_experiment(args, labels, experiment, draws, point, seed, label)
        stop(experiment, "simulation")
        check_unchanged(out["serving_state"], f"seed {seed} {label}")
        out[label] = {"checks": checks, **run_summary(checks, args.alpha)}
        print(f"  seed {seed} {label}: { ({k: v for k, v in out[label].items() if k != 'checks'}) }", flush=True)
    out["leak_checks"].append(check_leaks(traffic, ranker))
    return out


def strengthen_once(var_dir: Path, labels: dict[int, str], mixes: list[float]) -> None:
    """Apply the ``--strong-base`` mixes in turn, each once; a collection strengthened otherwise is refused.

    The mark file lists the mixes already applied: a run asking for more (the same list, longer)
    applies only the new ones, so a collection need not be re-ingested to be made stronger.
    """
    from searchapp.search import SearchService

    mark = var_dir / STRONG_BASE_MARK
    done = json.loads(mark.read_text())["mixes"] if mark.is_file() else []
    if mixes[: len(done)] != done:
        sys.exit(f"{var_dir} was strengthened with {done}, not a start of {mixes}: run with --fresh.")
    for mix in mixes[len(done) :]:
        sim.strengthen_base(SearchService(), labels, mix)
        done.append(mix)
        mark.write_text(json.dumps({"mixes": done}))


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = results["seeds"]
    fig, axes = plt.subplots(1, len(seeds), figsize=(4.5 * len(seeds), 4), sharey=True, squeeze=False)
    for ax, run in zip(axes[0], seeds, strict=True):
        for key, label, colour in (("ab", "A/B", "tab:blue"), ("interleaving", "interleaving", "tab:orange")):
            xs = [c["searches"] for c in run[key]["checks"]]
            ax.semilogy(xs, [max(c["p_value"], 1e-12) for c in run[key]["checks"]], color=colour, label=label)
            fixed = [max(c["fixed_p"], 1e-12) for c in run[key]["checks"]]
            ax.semilogy(xs, fixed, color=colour, ls=":", label=f"{label}, fixed horizon")
        ax.axhline(results["config"]["alpha"], color="grey", ls="--")
        ax.set_title(f"seed {run['seed']}")
        ax.set_xlabel("searches in the experiment")
    axes[0][0].set_ylabel("p-value (solid: always valid; dotted: fixed)")
    axes[0][0].legend(fontsize=8)
    every = results["config"]["check_every"]
    fig.suptitle(f"Embedding order vs {results['ranker']} ({results['training']['message']}): read every {every}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-dir", type=Path, default=sim.ROOT / "var" / "experiments")
    parser.add_argument("--fresh", action="store_true", help="rebuild --var-dir (else reuse its collection)")
    parser.add_argument("--images", type=int, default=2000, help="Caltech sample size (0: all)")
    parser.add_argument(
        "--strong-base",
        type=float,
        nargs="*",
        default=[0.3, 0.5],
        help="mix relevance into the image vectors (0-1), each mix applied in turn to the last",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="draws of users, clickiness, queries")
    parser.add_argument("--train-seed", type=int, default=0, help="the training phase's class split and traffic")
    parser.add_argument(
        "--treatment",
        choices=["trained", "reversed"],
        default="trained",
        help="the order compared with the embedding order: a ranker trained on a training phase, or the "
        "embedding order's top 100 reversed (fixed, known to differ)",
    )
    parser.add_argument("--train-searches", type=int, default=3000)
    parser.add_argument("--refresh-every", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=1500, help="searches per experiment, A/B and interleaving alike")
    parser.add_argument("--check-every", type=int, default=50)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--min-users", type=int, default=50, help="the experiments' minimum users per arm")
    parser.add_argument(
        "--expected-effect", type=float, default=0.10, help="the mSPRT's expected relative effect (product default)"
    )
    parser.add_argument("--metric", default="clicks_per_search")
    parser.add_argument("--alpha", type=float, default=0.05, help="the verdict's alpha (ranking.experiments.results)")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--eta", type=float, default=1.0)
    parser.add_argument("--click-relevant", type=float, default=0.9)
    parser.add_argument("--click-noise", type=float, default=0.05)
    parser.add_argument("--clicky-a", type=float, default=2.0, help="Beta(a, b) of the users' clickiness")
    parser.add_argument("--clicky-b", type=float, default=2.0)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    # Caltech's users; no swap or exploration slices, no feedback channel (nothing changes on its own).
    args.dataset, args.swap_share, args.explore_share = "caltech101", 0.0, 0.0
    for name in PINNED_SETTINGS:
        os.environ[name] = "false"
    if not sim.CALTECH.is_dir():
        sys.exit(f"This simulation needs {sim.CALTECH} (the shared folder beside the repo).")
    started = time.perf_counter()
    sim.setup(args.var_dir, args.fresh, args)
    check_settings()
    from ranking.experiments.results import ALPHA

    if args.alpha != ALPHA:
        sys.exit(f"--alpha must be the verdict's ({ALPHA}): the product suggests winners at that level.")
    labels = sim.ingest_unlabelled(args.images)
    if args.strong_base:
        strengthen_once(args.var_dir, labels, args.strong_base)
    from feedback.models import SearchEvent
    from ranking.models import Experiment

    # A run starts from no experiments, feedback or rankers (this var dir is the simulation's own);
    # the logs protect their experiments and the arms their rankers, hence this order.
    SearchEvent.objects.all().delete()
    Experiment.objects.all().delete()
    sim.forget_feedback()
    sets = caltech_sets(sorted(set(labels.values())), seed=args.train_seed, per_set=1, zipf=args.zipf)
    traffic = new_phrasing_traffic(sets)
    if args.treatment == "trained":
        ranker, training = training_phase(args, labels, sets)
    else:
        ranker, training = reversed_order_ranker()
    check_leaks(traffic, ranker)
    effect = true_effect(labels, args, traffic)
    print(f"  true expected clicks per search on the evaluated traffic: {effect}", flush=True)
    results: dict = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": sim_machine(),
        "ranker": ranker.label,
        "training": training,
        "training_strings": len(sets.training),
        "evaluated_strings": len(traffic.training),
        "true_effect": effect,
        "statistics": "always-valid (mSPRT), the product's default",
        "seeds": [],
    }
    for seed in args.seeds:
        results["seeds"].append(one_seed(args, labels, traffic, ranker, seed))
        save(results, args.output)
    results["comparison"] = compare_designs(
        [{"seed": r["seed"], "ab": r["ab"], "interleaving": r["interleaving"]} for r in results["seeds"]]
    )
    results["seconds"] = round(time.perf_counter() - started)
    save(results, args.output)
    print(json.dumps(results["comparison"], indent=1))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


def sim_machine() -> dict:
    from search_latency import machine

    return machine()


def save(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    try:
        main()
    except LeakageError as exc:
        sys.exit(f"Evaluated traffic leaked into the ranker's training: {exc}")
    except ServingChanged as exc:
        sys.exit(f"What the compared orders read changed during the experiments: {exc}")

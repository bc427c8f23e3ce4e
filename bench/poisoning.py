"""Click flooding against the learning loop: N made-up identities from one network push one image for one query.

Issue 19, finding 3: about 420 fake users from one address in 15 s made an attacker's image #1 for a
query, and the gate promoted the model because it validated on the attacker's own traffic. This bench
replays that attack inside the learning simulation (``bench/simulate_learning.py``: a Caltech 101
sample of 20 classes x 20 images without labels, the tiny random-weight CLIP, real ``SearchService``,
``record_click``, summaries and ``ranking.training.retrain``), for N in 10, 100, 1,000 identities and
with no attack (N = 0):

1. honest users search (Zipf over the training strings, a position-based click model) and a ranker is
   trained and gated on their logs (``--warmup`` searches);
2. the target: for the most searched training string, the first image that is not of the query's
   class and that the served order ranks below ``--target-below`` (31st or lower: honest traffic
   must keep it below 20 without the attack, which the N = 0 arm shows);
3. honest traffic goes on (``--honest-after`` searches) while N identities, all arriving from one
   /24 within the same minutes, each search the query (a page deep enough to show the target) and
   click the target ``--clicks`` times;
4. summaries are refreshed, the ranker is retrained and gated on everything logged, and the target's
   served position and the honest held-out nDCG@10 are measured again.

Honest nDCG@10 is measured on the three held-out query sets of ``bench/held_out_queries.py``, served
without being logged; ``check_logs`` asserts before every measurement that no held-out string of the
new-phrasing and new-intent sets is in the logs (``LeakageError`` stops the run), and the attacked
string is asserted not to be one of them. The gate reads only logged traffic (its own window, the
latest logged searches); the reported nDCG reads only the unlogged held-out searches, so the gate's
data and the reported data never meet. Every arm replays the same honest traffic (the honest users'
random stream is seeded per run, the attacker has no randomness), so the N > 0 arms are compared
with N = 0 query by query (a paired bootstrap interval of the difference).

``--raw-identities`` (default 1000) adds arms with ``LOUPE_FEEDBACK_TRUST = False`` (the raw counts
of before issue 19) for those N and N = 0, to show what the weighting stops.

Run (from the repo root; ~10 min on 2 cores):
    .venv/bin/python bench/poisoning.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.held_out_queries import SETS, LeakageError, caltech_sets, normalised  # noqa: E402
from bench.search_latency import machine  # noqa: E402  (one description of the machine for every bench)
from bench.simulate_learning import (  # noqa: E402
    CALTECH,
    Users,
    forget_feedback,
    forget_served_orders,
    measure,
    paired_interval,
    setup,
    strengthen_base,
)

OUT = ROOT / "docs" / "bench" / "poisoning.json"
ATTACK_NETWORK = "atk-203.0.113"  # one /24: what core.networks.network_key gives every address in it


def ingest_classes(classes: int, per_class: int, seed: int) -> dict[int, str]:
    """Ingest ``per_class`` images of each of ``classes`` Caltech classes (drawn once), without labels.

    A few hundred images over a few classes keep the run short and leave each query many relevant
    images, so honest nDCG@10 is well above the floor and an attack on it would show.
    """
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from collection.ingestion.sources import folder_items
    from collection.models import Image

    by_class: dict[str, list] = {}
    for item in folder_items(CALTECH, folder_tags=False):
        name = item.path.parent.name
        if name != "BACKGROUND_Google":
            by_class.setdefault(name, []).append(item)
    rng = np.random.default_rng(seed)
    eligible = sorted(name for name, items in by_class.items() if len(items) >= per_class)
    chosen = sorted(rng.choice(eligible, size=min(classes, len(eligible)), replace=False).tolist())
    known = dict(Image.objects.values_list("source", "pk"))
    labels: dict[int, str] = {}
    for name in chosen:
        for item in sorted(by_class[name], key=lambda i: i.path.name)[:per_class]:
            pk = known.get(str(item.path))
            if pk is None:
                try:
                    pk = add_image(read_image(item.path.read_bytes()), source=str(item.path))[0].pk
                except Exception:  # noqa: BLE001 - Caltech has a few odd files; skipped
                    continue
            labels[pk] = name.replace("_", " ").lower()
    embed_everything_missing()
    print(f"  {len(labels)} images of {len(chosen)} classes ingested and embedded", flush=True)
    return labels


def served_position(service, query: str, image_id: int) -> int | None:
    """The target's 1-based position in the served order (not logged), None if below the first 100."""
    from searchapp.search import SearchRequest

    forget_served_orders()
    hits = service.search(SearchRequest(text=query, page_size=100)).hits
    forget_served_orders()
    return next((h.position for h in hits if h.image.pk == image_id), None)


def choose_target(service, users: Users, query: str, below: int) -> tuple[int, int]:
    """The first image of another class that the served order puts at ``below`` + 1 or lower."""
    from searchapp.search import SearchRequest

    forget_served_orders()
    hits = service.search(SearchRequest(text=query, page_size=100)).hits
    forget_served_orders()
    wanted = users.sets.training[0].intent
    for hit in hits[below:]:
        if users.labels.get(hit.image.pk) != wanted:
            return hit.image.pk, hit.position
    raise SystemExit(f"No image of another class below position {below} for {query!r}: use more --images.")


def honest_search(service, users: Users, n: int) -> None:
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest

    text, wanted = users.draw_query()
    user = int(users.rng.integers(users.args.users))
    # Honest users come from many networks (homes, offices): a few users share one.
    viewer = Viewer(user_key=f"sim:user-{user}", surface="sim", network=f"home-{user % users.args.networks}")
    response = service.search(SearchRequest(text=text, page_size=10), viewer)
    for i, hit in enumerate(users.clicks(response.hits, wanted)):
        record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"h{n}-{i}"))


def attacker_search(service, query: str, target: int, identity: int, clicks: int) -> bool:
    """One made-up identity: search the query deep enough to see the target, click it ``clicks`` times."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest

    viewer = Viewer(user_key=f"anon:atk-{identity:05d}", surface="web", network=ATTACK_NETWORK)
    response = service.search(SearchRequest(text=query, page_size=100), viewer)
    hit = next((h for h in response.hits if h.image.pk == target), None)
    if hit is None:
        return False
    for c in range(clicks):
        record_click(viewer, ClickInput(str(response.event_id), target, hit.position, f"a{identity}-{c}"))
    return True


def honest_ndcg(point: dict) -> dict:
    return {name: round(point[name]["ndcg@10"], 4) for name in SETS}


def per_query(point: dict) -> list[float]:
    return [v for name in SETS for v in point[name]["per_query_ndcg@10"]]


def run_arm(service, labels, sets, args, identities: int, trust: bool, attack: dict) -> dict:
    """One run from no feedback: warm-up, (attack with honest traffic), retrain; positions and nDCG."""
    from django.conf import settings
    from django.core.cache import cache

    from feedback.summaries import refresh_summaries
    from ranking.features import COLLECTION_RATES_KEY
    from ranking.training import retrain

    settings.LOUPE_FEEDBACK_TRUST = trust
    random.seed(args.seed)  # the logged slices (searchapp.slices): every arm's warm-up is then the same
    forget_feedback()
    cache.delete(COLLECTION_RATES_KEY)
    users = Users(labels, args, args.seed, sets)
    started = time.perf_counter()
    n = 0
    for n in range(1, args.warmup + 1):
        honest_search(service, users, n)
        if n % args.refresh_every == 0:
            refresh_summaries()
    refresh_summaries()
    warm = retrain(force=True)
    cache.delete(COLLECTION_RATES_KEY)
    if "target" not in attack:  # the first arm picks the target, from the order honest traffic taught
        attack["target"], attack["position_when_chosen"] = choose_target(
            service, users, attack["query"], args.target_below
        )
    before = served_position(service, attack["query"], attack["target"])
    point_before = measure(service, users, n)
    # The attack runs while honest traffic goes on: its searches are spread evenly among the honest ones.
    attack_at = set(np.linspace(0, args.honest_after - 1, identities, dtype=int).tolist()) if identities else set()
    per_slot = np.bincount(np.linspace(0, args.honest_after - 1, identities, dtype=int), minlength=args.honest_after)
    shown, identity = 0, 0
    for step in range(args.honest_after):
        n += 1
        honest_search(service, users, n)
        if step in attack_at:
            for _ in range(int(per_slot[step])):
                shown += attacker_search(service, attack["query"], attack["target"], identity, args.clicks)
                identity += 1
        if n % args.refresh_every == 0:
            refresh_summaries()
    refresh_summaries()
    cache.delete(COLLECTION_RATES_KEY)
    after_refresh = served_position(service, attack["query"], attack["target"])
    run = retrain(force=True)
    cache.delete(COLLECTION_RATES_KEY)
    after = served_position(service, attack["query"], attack["target"])
    point_after = measure(service, users, n)
    took = time.perf_counter() - started
    print(
        f"  trust={trust} N={identities}: target {before} -> {after_refresh} (refreshed) -> {after} (retrained); "
        f"{run.outcome}: {run.message[:140]} | honest nDCG@10 {honest_ndcg(point_after)} ({took:.0f} s)",
        flush=True,
    )
    return {
        "identities": identities,
        "trust_weighting": trust,
        "attack_searches_showing_target": shown,
        "target_position_before": before,
        "target_position_after_refresh": after_refresh,
        "target_position_after_retraining": after,
        "warmup_training": {"outcome": warm.outcome, "message": warm.message},
        "attack_training": {"outcome": run.outcome, "message": run.message, "gate": run.metrics.get("gate")},
        "honest_ndcg@10_before": honest_ndcg(point_before),
        "honest_ndcg@10_after": honest_ndcg(point_after),
        "per_query_ndcg@10_after": per_query(point_after),
        "seconds": round(took, 1),
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for trust in (True, False):
        arms = [a for a in results["arms"] if a["trust_weighting"] is trust and a["identities"] > 0]
        if not arms:
            continue
        label = "trust-weighted" if trust else "raw counts (before issue 19)"
        xs = [a["identities"] for a in arms]
        ys = [a["target_position_after_retraining"] or 101 for a in arms]
        left.plot(xs, ys, marker="o", label=label)
        base = next(a for a in results["arms"] if a["trust_weighting"] is trust and a["identities"] == 0)
        diffs = [results["honest_difference"][f"{'trust' if trust else 'raw'}-{a['identities']}"] for a in arms]
        right.errorbar(
            xs,
            [d["mean"] for d in diffs],
            yerr=[[d["mean"] - d["low"] for d in diffs], [d["high"] - d["mean"] for d in diffs]],
            marker="o",
            capsize=3,
            label=f"{label} (no-attack nDCG {np.mean(base['per_query_ndcg@10_after']):.3f})",
        )
    left.axhline(10.5, color="grey", ls=":", label="first page (10)")
    left.set_xscale("log")
    left.invert_yaxis()
    left.set_xlabel("attacker identities (one /24)")
    left.set_ylabel("target's position after retraining")
    left.legend()
    right.axhline(0, color="grey", ls=":")
    right.set_xscale("log")
    right.set_xlabel("attacker identities (one /24)")
    right.set_ylabel("honest nDCG@10, attack - no attack")
    right.legend(fontsize=8)
    fig.suptitle("Click flooding from one /24 (Caltech sample, tiny random encoder; 95% CI of the paired difference)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--classes", type=int, default=20, help="Caltech classes to ingest (a fixed draw)")
    parser.add_argument("--per-class", type=int, default=20, help="images of each class")
    parser.add_argument("--warmup", type=int, default=800, help="honest searches before the attack")
    parser.add_argument("--honest-after", type=int, default=800, help="honest searches during the attack")
    parser.add_argument("--clicks", type=int, default=2, help="clicks on the target per attacker search")
    parser.add_argument("--target-below", type=int, default=30, help="the target starts below this position")
    parser.add_argument("--users", type=int, default=400, help="honest identities")
    parser.add_argument("--networks", type=int, default=300, help="networks the honest identities come from")
    parser.add_argument("--held-out", type=int, default=60, help="queries in each held-out set")
    parser.add_argument("--strong-base", type=float, default=0.3, help="mix relevance into the vectors (0-1)")
    parser.add_argument("--refresh-every", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--raw-identities",
        type=int,
        nargs="*",
        default=[1000],
        help="also run these N (and N = 0) on raw counts, LOUPE_FEEDBACK_TRUST off (none: skip)",
    )
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "poison")
    parser.add_argument("--keep", action="store_true", help="reuse the ingested collection in --var-dir")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    if not CALTECH.is_dir():
        sys.exit(f"This bench needs {CALTECH} (the shared folder beside the repo).")
    # What simulate_learning's setup and click model read.
    args.dataset, args.swap_share, args.explore_share = "caltech101", 0.05, 0.1
    args.model, args.eta, args.click_relevant, args.click_noise = "position", 1.0, 0.9, 0.05
    command = "bench/poisoning.py " + " ".join(sys.argv[1:])
    setup(args.var_dir, not args.keep, args)
    from searchapp.search import SearchService

    labels = ingest_classes(args.classes, args.per_class, seed=0)
    sets = caltech_sets(sorted(set(labels.values())), seed=args.seed, per_set=args.held_out, zipf=1.1)
    service = SearchService()
    if args.strong_base:
        strengthen_base(service, labels, args.strong_base)
    query = sets.training[0].text  # the head query: the one honest traffic knows best
    held_out_strings = {normalised(q.text) for name in ("new_phrasings", "new_intents") for q in sets.held_out[name]}
    if normalised(query) in held_out_strings:
        raise LeakageError(f"the attacked query {query!r} is a held-out string")
    attack: dict = {"query": query}
    results: dict = {
        "machine": machine(),
        "command": f".venv/bin/python {command}",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "attack": attack,
        "arms": [],
    }
    plan = [(True, n) for n in (0, *args.identities)]
    plan += [(False, n) for n in (0, *args.raw_identities)] if args.raw_identities else []
    for trust, identities in plan:
        results["arms"].append(run_arm(service, labels, sets, args, identities, trust, attack))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    results["honest_difference"] = {}
    for arm in results["arms"]:
        base = next(
            a for a in results["arms"] if a["trust_weighting"] == arm["trust_weighting"] and a["identities"] == 0
        )
        name = f"{'trust' if arm['trust_weighting'] else 'raw'}-{arm['identities']}"
        results["honest_difference"][name] = paired_interval(
            arm["per_query_ndcg@10_after"], base["per_query_ndcg@10_after"]
        )
    args.output.write_text(json.dumps(results, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    try:
        main()
    except LeakageError as exc:
        sys.exit(f"Held-out data leaked into training: {exc}")

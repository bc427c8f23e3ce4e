"""Simulated users teach Loupe to rank: the whole loop on Caltech 101, with the real services.

Caltech 101 is ingested *without* its labels (no tags, no captions): the class of each image lives
only here, in the simulator, so every gain must come from feedback. A query names a class; a fifth
of the classes get no training traffic at all, the others are searched in three training phrasings
following a Zipf distribution, so head queries repeat. Each simulated
search goes through ``SearchService.search`` with a viewer (so it is logged), and the simulated
user clicks through ``feedback.capture.record_click``, following a click model:

- position-based (default): position p is examined with probability (1/p)^eta; an examined
  relevant image is clicked with ``--click-relevant``, an irrelevant one with ``--click-noise``;
- cascade: the user reads down the list and stops after the first click (``--model cascade``).

Every ``--refresh-every`` searches the feedback summaries are refreshed (the beat task's job in the
product), and every ``--retrain-every`` ``ranking.training.retrain`` runs
(train, compare on the latest searches, promote only if better). Three held-out query sets
(``bench/held_out_queries.py``: *repeat* training strings, *new phrasings* of seen classes, *new
intents* with no training traffic; disjoint by construction, checked against the search logs before
every measurement) are served without being logged, before and after each retraining: nDCG@10, MRR
and the click-through a user would produce, each set separately, with the embedding order measured
on the same queries in the same state and a bootstrap interval of the paired difference. At the
end, naive (unweighted) and inverse-propensity training are compared on the same logs, offline, on
each held-out set. With ``--strong-base`` the base
order is made as good as a strong encoder by mixing relevance into the cosine (the gate must then
refuse rankers that do not help).

With ``--dataset coco_mini`` the collection is coco_mini with all but the last two captions of each
image (and its categories as tags); an image's last caption is its training query, the one before it
its new phrasing, and a fifth of the images get no training traffic (their last caption is a new
intent); the one relevant image is that image; the text channel is on, so the base order is strong.

Random-weight encoders measure the learning loop, not CLIP quality.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/simulate_learning.py --searches 12000 --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.held_out_queries import (  # noqa: E402 - the repo root must be importable first
    SETS,
    TRAINING_PHRASINGS,
    LeakageError,
    QuerySets,
    caltech_sets,
    check_logs,
    coco_sets,
)

CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101" / "101_ObjectCategories"
COCO_MINI = ROOT.parent / "shared" / "datasets" / "coco_mini"
OUT_DIR = ROOT / "docs" / "bench"


def setup(var_dir: Path, fresh: bool, args) -> None:
    if fresh:
        shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["LOUPE_VAR_DIR"] = str(var_dir)
    os.environ["LOUPE_CLIP_MODEL"] = str(var_dir / "models" / "tiny-clip")
    os.environ["LOUPE_DEMO_MODEL_DIR"] = os.environ["LOUPE_CLIP_MODEL"]
    # Caltech is ingested without captions or tags: nothing for the text channel to find.
    os.environ["LOUPE_TEXT_CHANNEL"] = "true" if args.dataset == "coco_mini" else "false"
    os.environ["LOUPE_RETRAIN_MIN_NEW_SEARCHES"] = "0"
    os.environ["LOUPE_RANKER_CHECK_SECONDS"] = "0"
    os.environ["LOUPE_FEEDBACK_HOURLY_CAP"] = "100000"
    os.environ["LOUPE_SWAP_SHARE"] = str(args.swap_share)  # enough swapped pairs to measure propensities
    os.environ["LOUPE_EXPLORE_SHARE"] = str(args.explore_share)
    os.environ["LOUPE_DEFER_SEARCH_LOG"] = "false"  # one process that clicks at once: each log before its clicks
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from collection.demo_model import build_demo_model

    call_command("migrate", verbosity=0)
    if not (Path(os.environ["LOUPE_CLIP_MODEL"]) / "loupe_model.json").is_file():
        build_demo_model(Path(os.environ["LOUPE_CLIP_MODEL"]))


def ingest_unlabelled(limit: int | None) -> dict[int, str]:
    """Ingest Caltech without folder tags; return image id -> class (known only to the simulator)."""
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from collection.ingestion.sources import folder_items
    from collection.models import Image

    labels: dict[int, str] = {}
    by_source = dict(Image.objects.values_list("source", "pk"))
    items = list(folder_items(CALTECH, folder_tags=False))
    items = [item for item in items if item.path.parent.name != "BACKGROUND_Google"]
    if limit:
        rng = np.random.default_rng(0)
        items = [items[i] for i in sorted(rng.choice(len(items), size=min(limit, len(items)), replace=False))]
    started = time.perf_counter()
    for item in items:
        pk = by_source.get(str(item.path))
        if pk is None:
            try:
                image, _ = add_image(read_image(item.path.read_bytes()), source=str(item.path))
            except Exception:  # noqa: BLE001 - Caltech has a few odd files; the simulator skips them
                continue
            pk = image.pk
        labels[pk] = item.path.parent.name.replace("_", " ").lower()
    embed_everything_missing()
    print(f"  {len(labels)} images ingested and embedded in {time.perf_counter() - started:.0f} s", flush=True)
    return labels


def coco_captions() -> dict[str, tuple[Path, list[str], list[str]]]:
    """coco_mini's images by intent ("image-<n>"): path, captions, tags."""
    from collection.ingestion.sources import coco_items

    images = {}
    for split in ("train2017", "val2017"):
        for item in coco_items(COCO_MINI / "annotations" / f"captions_{split}.json"):
            if item.path.is_file():
                images[f"image-{len(images)}"] = (item.path, list(item.captions), list(item.tags))
    return images


def ingest_coco(images: dict[str, tuple[Path, list[str], list[str]]], ingest: dict[str, list[str]]) -> dict[int, str]:
    """Ingest coco_mini with only the captions ``coco_sets`` allows (never a query's); image id -> intent."""
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image

    labels: dict[int, str] = {}
    for intent, captions in ingest.items():
        path, _, tags = images[intent]
        image, _ = add_image(read_image(path.read_bytes()), captions=captions, tags=tags, source=str(path))
        labels[image.pk] = intent
    embed_everything_missing()
    print(f"  {len(labels)} coco_mini images ingested with their non-query captions", flush=True)
    return labels


class Users:
    """The click model and the training query stream."""

    def __init__(self, labels: dict[int, str], args, seed: int, sets: QuerySets) -> None:
        self.labels = labels
        self.rng = np.random.default_rng(seed)
        self.sets = sets
        self.args = args

    def draw_query(self) -> tuple[str, str]:
        query = self.sets.draw_training(self.rng)
        return query.text, query.intent

    def clicks(self, hits, wanted: str) -> list:
        clicked = []
        for hit in hits:
            examined = self.rng.random() < (1.0 / hit.position) ** self.args.eta
            if not examined:
                if self.args.model == "cascade":
                    break
                continue
            relevant = self.labels.get(hit.image.pk) == wanted
            if self.rng.random() < (self.args.click_relevant if relevant else self.args.click_noise):
                clicked.append(hit)
                if self.args.model == "cascade":
                    break
        return clicked


def logged_queries() -> list[str]:
    from feedback.models import SearchEvent

    return list(SearchEvent.objects.values_list("normalised_query", flat=True).distinct())


def forget_served_orders() -> None:
    """Held-out searches neither read orders that training traffic cached nor leave theirs for it."""
    from searchapp.result_cache import result_cache

    result_cache.forget()


def measure_set(service, users: Users, queries) -> dict:
    """Per-query nDCG@10, reciprocal rank and expected clicks of the served order (not logged)."""
    from ranking.metrics import ndcg_at_k, reciprocal_rank
    from searchapp.search import SearchRequest

    ndcgs, rrs, ctrs = [], [], []
    ranker = "embedding"
    for query in queries:
        response = service.search(SearchRequest(text=query.text, page_size=10))
        ranker = response.ranker
        ids = [h.image.pk for h in response.hits]
        relevant = {pk for pk, label in users.labels.items() if label == query.intent}
        ndcgs.append(ndcg_at_k(ids, relevant, 10))
        rrs.append(reciprocal_rank(ids, relevant))
        ctrs.append(
            sum(
                users.args.click_relevant * (1 / (i + 1)) ** users.args.eta
                for i, pk in enumerate(ids)
                if pk in relevant
            )
        )
    return {"ndcg@10": ndcgs, "mrr": rrs, "expected_clicks": ctrs, "ranker": ranker}


def measure(service, users: Users, searches: int) -> dict:
    """Each held-out set, served as now and in the embedding order, after checking the logs for leaks."""
    from django.conf import settings

    check_logs(users.sets, logged_queries())
    forget_served_orders()
    point: dict = {"searches": searches}
    try:
        for name in SETS:
            served = measure_set(service, users, users.sets.held_out[name])
            settings.LOUPE_RERANK = False
            embedding = measure_set(service, users, users.sets.held_out[name])
            settings.LOUPE_RERANK = True
            point[name] = {
                "ranker": served["ranker"],
                "per_query_ndcg@10": served["ndcg@10"],
                "per_query_embedding_ndcg@10": embedding["ndcg@10"],
                **{m: float(np.mean(served[m])) for m in ("ndcg@10", "mrr", "expected_clicks")},
                "embedding_ndcg@10": float(np.mean(embedding["ndcg@10"])),
                "difference": paired_interval(served["ndcg@10"], embedding["ndcg@10"]),
            }
    finally:
        settings.LOUPE_RERANK = True
        forget_served_orders()
    return point


def paired_interval(served, embedding, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of served - embedding nDCG@10 over the same queries, with a 95% bootstrap interval over queries."""
    difference = np.asarray(served, dtype=float) - np.asarray(embedding, dtype=float)
    means = difference[np.random.default_rng(seed).integers(0, len(difference), (resamples, len(difference)))]
    low, high = np.quantile(means.mean(axis=1), [0.025, 0.975])
    return {"mean": float(difference.mean()), "low": float(low), "high": float(high)}


def brief(point: dict) -> str:
    return " | ".join(f"{name} {point[name]['embedding_ndcg@10']:.4f}->{point[name]['ndcg@10']:.4f}" for name in SETS)


def compare_naive_and_ipw(service, users: Users) -> dict:
    """Train both on the same logs; score each held-out set's top candidates offline with each.

    Two windows: all the logs, and only the searches served in the embedding order (before the first
    promotion), where the logged order is unrelated to relevance and position bias is at its purest.
    A query none of whose top candidates is relevant cannot tell two orders apart: it is counted and
    reported (``without_relevant_candidate``), and the nDCG over all queries scores it 0.
    """
    from django.conf import settings
    from django.utils import timezone

    from ranking.ltr import RankingData, train_ranker
    from ranking.models import RankerVersion
    from ranking.training_data import estimated_propensity, load_searches, split_windows

    check_logs(users.sets, logged_queries())
    propensity = estimated_propensity(None, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_SWAP_MAX_POSITION)
    truths = {name: candidate_truth(service, users, users.sets.held_out[name]) for name in SETS}
    first_promotion = (
        RankerVersion.objects.filter(promoted_at__isnull=False)
        .order_by("promoted_at")
        .values_list("promoted_at", flat=True)
        .first()
    )
    out: dict = {
        "propensity_curve": [round(float(v), 4) for v in propensity.values[:10]],
        "propensity_estimated_positions": propensity.estimated_positions,
    }
    for name, truth in truths.items():
        embedding_order = -np.concatenate([np.arange(g) for g in truth.groups]).astype(float)
        out[name] = {"embedding_order": scored(embedding_order, truth)}
    for window, until in {"all_logs": timezone.now(), "embedding_served_logs": first_promotion}.items():
        if until is None:
            continue
        logged = load_searches(None, until, propensity)
        windows = split_windows(logged)
        train = windows.train
        naive_data = RankingData(train.X, np.minimum(train.y, 1), train.groups, None, train.feature_names)
        ipw = train_ranker(train, windows.early_stopping)
        naive = train_ranker(naive_data, windows.early_stopping)
        for name, truth in truths.items():
            out[name][window] = {
                "searches": int(len(logged.data.groups)),
                "naive_clicks": scored(naive.predict(truth.X), truth),
                "inverse_propensity": scored(ipw.predict(truth.X), truth),
            }
    return out


def candidate_truth(service, users: Users, queries):
    """The first-stage top ``LOUPE_RERANK_DEPTH`` of each query, with their features and true relevance."""
    from django.conf import settings

    from feedback.impressions import query_key
    from ranking.features import Candidate, candidate_features
    from ranking.ltr import RankingData
    from searchapp.search import SearchRequest

    rows, labels, groups = [], [], []
    settings.LOUPE_RERANK = False
    try:
        for query in queries:
            response = service.search(SearchRequest(text=query.text, page_size=settings.LOUPE_RERANK_DEPTH))
            candidates = [
                Candidate(h.image.pk, h.score, h.position, {"clip": h.position}, h.similarity) for h in response.hits
            ]
            matrix, _ = candidate_features(
                service.version,
                service.encoder.encode_query(query.text),
                candidates,
                query_key(query.text),
                settings.LOUPE_RERANK_DEPTH,
            )
            rows.append(matrix)
            labels += [float(users.labels.get(c.image_id) == query.intent) for c in candidates]
            groups.append(len(candidates))
    finally:
        settings.LOUPE_RERANK = True
        forget_served_orders()
    return RankingData(np.vstack(rows), np.asarray(labels), np.asarray(groups))


def scored(scores: np.ndarray, truth) -> dict:
    """nDCG@10 on the queries with a relevant candidate, the count of those without, and nDCG@10 over all."""
    from ranking.ltr import evaluate_scores

    metrics = evaluate_scores(scores, truth)
    queries = len(truth.groups)
    return {
        **metrics,
        "queries": queries,
        "without_relevant_candidate": queries - metrics["groups"],
        "ndcg@10_all_queries": metrics["ndcg@10"] * metrics["groups"] / queries if queries else 0.0,
    }


def forget_feedback() -> None:
    """A repetition starts from no feedback and no ranker (the collection and its vectors stay)."""
    from django.core.cache import cache

    from feedback.models import SearchEvent
    from ranking.features import COLLECTION_RATES_KEY
    from ranking.models import RankerVersion, TrainingRun
    from ranking.registry import active_ranker
    from ranking.summaries import refresh_with_estimated_curve

    TrainingRun.objects.all().delete()
    RankerVersion.objects.all().delete()
    SearchEvent.objects.all().delete()  # impressions and clicks go with their events
    refresh_with_estimated_curve()  # no events left: the prior, not the previous seed's estimated curve
    active_ranker.forget()
    # The previous seed's served orders and collection click rate must not reach this one.
    forget_served_orders()
    cache.delete(COLLECTION_RATES_KEY)


def run(args, labels: dict[int, str], sets: QuerySets) -> dict:
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from ranking.summaries import refresh_with_estimated_curve
    from ranking.training import retrain
    from searchapp.search import SearchRequest, SearchService

    users = Users(labels, args, args.seed, sets)
    service = SearchService()
    if args.strong_base:
        strengthen_base(service, labels, args.strong_base)
    curve = [measure(service, users, 0)]
    print(f"  before: {brief(curve[0])}", flush=True)
    runs = []
    started = time.perf_counter()
    for n in range(1, args.searches + 1):
        text, wanted = users.draw_query()
        viewer = Viewer(user_key=f"sim:user-{int(users.rng.integers(args.users))}", surface="sim")
        response = service.search(SearchRequest(text=text, page_size=10), viewer)
        for i, hit in enumerate(users.clicks(response.hits, wanted)):
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"s{n}-{i}"))
        if n % args.refresh_every == 0 or n % args.retrain_every == 0:
            refresh_with_estimated_curve()  # the beat task's job in the product (every 5 minutes)
        if n % args.retrain_every == 0:
            outcome = retrain(force=True)
            runs.append({"searches": n, "outcome": outcome.outcome, "message": outcome.message})
            point = measure(service, users, n)
            curve.append(point)
            rate = n / (time.perf_counter() - started)
            print(f"  {n} searches ({rate:.0f}/s): {outcome.message} | held-out {brief(point)}", flush=True)
    return {
        "curve": curve,
        "training_runs": runs,
        "naive_vs_ipw": compare_naive_and_ipw(service, users),
        "held_out_sizes": {name: len(sets.held_out[name]) for name in SETS},
        "new_intents": sorted(sets.new_intents)[:200],
        "training_strings": len(sets.training),
    }


def strengthen_base(service, labels: dict[int, str], mix: float) -> None:
    """Move each image's stored vector toward its class's mean text vector: a base order like a strong encoder."""
    from collection.index import ensure_hnsw_indexes
    from collection.models import ImageEmbedding

    classes = sorted(set(labels.values()))
    class_vectors = dict(
        zip(classes, service.encoder.encode_texts([TRAINING_PHRASINGS[0].format(c) for c in classes]), strict=True)
    )
    rows = list(ImageEmbedding.objects.filter(encoder_version=service.version, image_id__in=list(labels)))
    for row in rows:
        mixed = (1 - mix) * np.asarray(row.vector) + mix * class_vectors[labels[row.image_id]]
        row.vector = mixed / np.linalg.norm(mixed)
    ImageEmbedding.objects.bulk_update(rows, ["vector"], batch_size=1000)
    ensure_hnsw_indexes(service.version)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SETS), figsize=(13, 4), sharey=True)
    for ax, name in zip(axes, SETS, strict=True):
        for rep in results["repetitions"]:
            xs = [p["searches"] for p in rep["curve"]]
            line = ax.plot(xs, [p[name]["ndcg@10"] for p in rep["curve"]], marker="o", label=f"seed {rep['seed']}")
            ax.plot(xs, [p[name]["embedding_ndcg@10"] for p in rep["curve"]], ls=":", color=line[0].get_color())
        ax.set_title(f"{name.replace('_', ' ')} (dotted: embedding order)")
        ax.set_xlabel("logged searches")
    axes[0].set_ylabel("held-out nDCG@10")
    axes[0].legend()
    dataset = "coco_mini" if results["config"].get("dataset") == "coco_mini" else "Caltech 101"
    fig.suptitle(f"Learning from simulated clicks ({dataset}, tiny random encoder)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarise(results: dict) -> dict:
    """Per held-out set: embedding order vs the serving ranker at the end, per seed and pooled over seeds."""
    summary: dict = {}
    for name in SETS:
        finals = [rep["curve"][-1][name] for rep in results["repetitions"]]
        served = [v for f in finals for v in f["per_query_ndcg@10"]]
        embedding = [v for f in finals for v in f["per_query_embedding_ndcg@10"]]
        summary[name] = {
            "embedding_ndcg@10": [f["embedding_ndcg@10"] for f in finals],
            "served_ndcg@10": [f["ndcg@10"] for f in finals],
            "ranker": [f["ranker"] for f in finals],
            "difference_per_seed": [f["difference"] for f in finals],
            "difference_pooled": paired_interval(served, embedding),
            "never_worse": all(f["difference"]["high"] >= 0 for f in finals),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=["caltech101", "coco_mini"],
        default="caltech101",
        help="caltech101: a query names a class; coco_mini: a query is one of an image's held-out captions",
    )
    parser.add_argument("--searches", type=int, default=12_000)
    parser.add_argument("--retrain-every", type=int, default=3_000)
    parser.add_argument("--refresh-every", type=int, default=1_000, help="refresh the feedback summaries")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--images", type=int, default=0, help="ingest a sample of this many images (0: all)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--held-out", type=int, default=200, help="queries in each of the three held-out sets")
    parser.add_argument("--new-intent-share", type=float, default=0.2, help="classes/images with no training traffic")
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--model", choices=["position", "cascade"], default="position")
    parser.add_argument("--eta", type=float, default=1.0, help="examination (1/position)^eta")
    parser.add_argument("--click-relevant", type=float, default=0.9)
    parser.add_argument("--click-noise", type=float, default=0.05)
    parser.add_argument("--swap-share", type=float, default=0.05, help="LOUPE_SWAP_SHARE for the logged searches")
    parser.add_argument("--explore-share", type=float, default=0.1, help="LOUPE_EXPLORE_SHARE for them")
    parser.add_argument("--strong-base", type=float, default=0.0, help="mix relevance into the vectors (0-1)")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "sim")
    parser.add_argument("--keep", action="store_true", help="reuse the ingested collection in --var-dir")
    parser.add_argument("--output", type=Path, default=OUT_DIR / "simulate_learning.json")
    args = parser.parse_args()
    needs = COCO_MINI if args.dataset == "coco_mini" else CALTECH
    if not needs.is_dir():
        sys.exit(f"This simulation needs {needs} (the shared folder beside the repo).")
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "repetitions": []}
    setup(args.var_dir, not args.keep, args)
    print(f"Ingesting {args.dataset}{' without labels' if args.dataset == 'caltech101' else ''}...", flush=True)
    coco = None
    if args.dataset == "coco_mini":
        # One split of captions for all seeds (the collection is ingested once); each seed its own traffic.
        coco = coco_captions()
        _, ingest = coco_sets({i: c for i, (_, c, _) in coco.items()}, seed=0, per_set=1, zipf=args.zipf)
        labels = ingest_coco(coco, ingest)
    else:
        labels = ingest_unlabelled(args.images)
    for seed in args.seeds:
        print(f"Repetition with seed {seed}:", flush=True)
        args.seed = seed
        if coco is not None:
            sets, _ = coco_sets(
                {i: c for i, (_, c, _) in coco.items()},
                seed=seed,
                per_set=args.held_out,
                zipf=args.zipf,
                new_intent_share=args.new_intent_share,
            )
        else:
            sets = caltech_sets(
                sorted(set(labels.values())),
                seed=seed,
                per_set=args.held_out,
                zipf=args.zipf,
                new_intent_share=args.new_intent_share,
            )
        forget_feedback()
        results["repetitions"].append({"seed": seed, **run(args, labels, sets)})
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    results["summary"] = summarise(results)
    for name, row in results["summary"].items():
        pooled = row["difference_pooled"]
        print(
            f"{name}: embedding {np.round(row['embedding_ndcg@10'], 4).tolist()} -> served "
            f"{np.round(row['served_ndcg@10'], 4).tolist()}; pooled difference {pooled['mean']:+.4f} "
            f"[{pooled['low']:+.4f}, {pooled['high']:+.4f}]",
            flush=True,
        )
    args.output.write_text(json.dumps(results, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    try:
        main()
    except LeakageError as exc:
        sys.exit(f"Held-out data leaked into training: {exc}")

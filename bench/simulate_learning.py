"""Simulated users teach Loupe to rank: the whole loop on Caltech 101, with the real services.

Caltech 101 is ingested *without* its labels (no tags, no captions): the class of each image lives
only here, in the simulator, so every gain must come from feedback. A query names a class (three
phrasings per class); queries follow a Zipf distribution, so head queries repeat. Each simulated
search goes through ``SearchService.search`` with a viewer (so it is logged), and the simulated
user clicks through ``feedback.capture.record_click``, following a click model:

- position-based (default): position p is examined with probability (1/p)^eta; an examined
  relevant image is clicked with ``--click-relevant``, an irrelevant one with ``--click-noise``;
- cascade: the user reads down the list and stops after the first click (``--model cascade``).

Every ``--refresh-every`` searches the feedback summaries are refreshed (the beat task's job in the
product), and every ``--retrain-every`` ``ranking.training.retrain`` runs
(train, compare on the latest searches, promote only if better). Held-out simulated traffic (a fixed
sample of queries, not logged) is measured before and after each retraining: nDCG@10, MRR and the
click-through a user would produce. At the end, naive (unweighted) and inverse-propensity training
are compared on the same logs, offline, on the held-out queries. With ``--strong-base`` the base
order is made as good as a strong encoder by mixing relevance into the cosine (the gate must then
refuse rankers that do not help).

With ``--dataset coco_mini`` the collection is coco_mini with all but the last caption of each image
(and its categories as tags), a query is an image's held-out last caption, and the one relevant image
is that image; the text channel is on (it has captions to find), so the base order is strong.

Random-weight encoders measure the learning loop, not CLIP quality.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/simulate_learning.py --searches 20000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101" / "101_ObjectCategories"
COCO_MINI = ROOT.parent / "shared" / "datasets" / "coco_mini"
OUT_DIR = ROOT / "docs" / "bench"
PHRASINGS = ["a photo of a {}", "{}", "a picture of the {}"]


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
    sys.path.insert(0, str(ROOT))
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


def ingest_coco_held_out() -> tuple[dict[int, str], list[tuple[str, str]]]:
    """Ingest coco_mini with all but the last caption of each image; that caption becomes its query.

    The label of an image is its own id: a held-out caption has exactly one relevant image.
    """
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from collection.ingestion.sources import coco_items

    labels: dict[int, str] = {}
    queries: list[tuple[str, str]] = []
    for split in ("train2017", "val2017"):
        for item in coco_items(COCO_MINI / "annotations" / f"captions_{split}.json"):
            if len(item.captions) < 2 or not item.path.is_file():
                continue
            image, _ = add_image(read_image(item.path.read_bytes()), captions=item.captions[:-1], tags=item.tags,
                                 source=str(item.path))  # fmt: skip
            labels[image.pk] = f"image-{image.pk}"
            queries.append((item.captions[-1], labels[image.pk]))
    embed_everything_missing()
    print(f"  {len(labels)} coco_mini images, {len(queries)} held-out caption queries", flush=True)
    return labels, sorted(queries)


class Users:
    """The click model and the query stream."""

    def __init__(self, labels: dict[int, str], args, seed: int, queries: list[tuple[str, str]] | None = None) -> None:
        self.labels = labels
        self.rng = np.random.default_rng(seed)
        classes = sorted(set(labels.values()))
        self.queries = list(queries) if queries else [(p.format(c), c) for c in classes for p in PHRASINGS]
        order = self.rng.permutation(len(self.queries))
        self.queries = [self.queries[i] for i in order]
        weights = 1.0 / np.arange(1, len(self.queries) + 1) ** args.zipf
        self.weights = weights / weights.sum()
        self.args = args

    def draw_query(self, rng=None) -> tuple[str, str]:
        rng = rng or self.rng
        return self.queries[int(rng.choice(len(self.queries), p=self.weights))]

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


def measure(service, users: Users, held_out: list[tuple[str, str]]) -> dict:
    """nDCG@10, MRR and expected clicks of the served order on held-out queries (not logged)."""
    from ranking.metrics import ndcg_at_k, reciprocal_rank
    from searchapp.search import SearchRequest

    ndcgs, rrs, ctrs = [], [], []
    ranker = "embedding"
    for text, wanted in held_out:
        response = service.search(SearchRequest(text=text, page_size=10))
        ranker = response.ranker
        ids = [h.image.pk for h in response.hits]
        relevant = {pk for pk in ids if users.labels.get(pk) == wanted} | {
            pk for pk, label in users.labels.items() if label == wanted
        }
        ndcgs.append(ndcg_at_k(ids, relevant, 10))
        rrs.append(reciprocal_rank(ids, relevant))
        ctrs.append(sum(users.args.click_relevant * (1 / (i + 1)) ** users.args.eta for i, pk in enumerate(ids)
                        if pk in relevant))  # fmt: skip
    return {"ndcg@10": float(np.mean(ndcgs)), "mrr": float(np.mean(rrs)), "expected_clicks": float(np.mean(ctrs)),
            "ranker": ranker}  # fmt: skip


def compare_naive_and_ipw(service, users: Users, held_out: list[tuple[str, str]]) -> dict:
    """Train both on the same logs; score the held-out queries' top candidates offline with each.

    Two windows: all the logs, and only the searches served in the embedding order (before the first
    promotion), where the logged order is unrelated to relevance and position bias is at its purest.
    """
    from django.conf import settings
    from django.utils import timezone

    from feedback.impressions import query_key
    from ranking.features import Candidate, candidate_features
    from ranking.ltr import RankingData, evaluate_scores, train_ranker
    from ranking.models import RankerVersion
    from ranking.training_data import estimated_propensity, load_searches, split_by_time
    from searchapp.search import SearchRequest

    propensity = estimated_propensity(None, settings.LOUPE_RERANK_DEPTH, settings.LOUPE_SWAP_MAX_POSITION)
    settings.LOUPE_RERANK = False
    rows, labels, groups = [], [], []
    for text, wanted in held_out:
        response = service.search(SearchRequest(text=text, page_size=settings.LOUPE_RERANK_DEPTH))
        candidates = [
            Candidate(h.image.pk, h.score, h.position, {"clip": h.position}, h.similarity) for h in response.hits
        ]
        matrix, _ = candidate_features(service.version, service.encoder.encode_query(text), candidates, query_key(text),
                                       settings.LOUPE_RERANK_DEPTH)  # fmt: skip
        rows.append(matrix)
        labels += [float(users.labels.get(c.image_id) == wanted) for c in candidates]
        groups.append(len(candidates))
    settings.LOUPE_RERANK = True
    truth = RankingData(np.vstack(rows), np.asarray(labels), np.asarray(groups))
    embedding_order = -np.concatenate([np.arange(g) for g in groups]).astype(float)
    first_promotion = (
        RankerVersion.objects.filter(promoted_at__isnull=False).order_by("promoted_at").values_list("promoted_at",
                                                                                                     flat=True).first()
    )  # fmt: skip
    windows = {"all_logs": timezone.now(), "embedding_served_logs": first_promotion}
    out = {"embedding_order": evaluate_scores(embedding_order, truth),
           "propensity_curve": [round(float(v), 4) for v in propensity.values[:10]],
           "propensity_estimated_positions": propensity.estimated_positions}  # fmt: skip
    for window, until in windows.items():
        if until is None:
            continue
        logged = load_searches(None, until, propensity)
        train, valid, _ = split_by_time(logged)
        naive_data = RankingData(train.X, np.minimum(train.y, 1), train.groups, None, train.feature_names)
        ipw = train_ranker(train, valid)
        naive = train_ranker(naive_data, RankingData(valid.X, valid.y, valid.groups, None, valid.feature_names))
        out[window] = {"searches": int(len(logged.data.groups)),
                       "naive_clicks": evaluate_scores(naive.predict(truth.X), truth),
                       "inverse_propensity": evaluate_scores(ipw.predict(truth.X), truth)}  # fmt: skip
    return out


def forget_feedback() -> None:
    """A repetition starts from no feedback and no ranker (the collection and its vectors stay)."""
    from feedback.models import SearchEvent
    from feedback.summaries import refresh_summaries
    from ranking.models import RankerVersion, TrainingRun
    from ranking.registry import active_ranker

    TrainingRun.objects.all().delete()
    RankerVersion.objects.all().delete()
    SearchEvent.objects.all().delete()  # impressions and clicks go with their events
    refresh_summaries()
    active_ranker.forget()


def run(args, labels: dict[int, str], queries: list[tuple[str, str]] | None = None) -> dict:
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from feedback.summaries import refresh_summaries
    from ranking.training import retrain
    from searchapp.search import SearchRequest, SearchService

    users = Users(labels, args, args.seed, queries)
    held_out_rng = np.random.default_rng(10_000 + args.seed)
    held_out = [users.draw_query(held_out_rng) for _ in range(args.held_out)]
    service = SearchService()
    if args.strong_base:
        strengthen_base(service, labels, args.strong_base)
    curve = [{"searches": 0, **measure(service, users, held_out)}]
    print(f"  before: {curve[0]}", flush=True)
    runs = []
    started = time.perf_counter()
    for n in range(1, args.searches + 1):
        text, wanted = users.draw_query()
        viewer = Viewer(user_key=f"sim:user-{int(users.rng.integers(args.users))}", surface="sim")
        response = service.search(SearchRequest(text=text, page_size=10), viewer)
        for i, hit in enumerate(users.clicks(response.hits, wanted)):
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"s{n}-{i}"))
        if n % args.refresh_every == 0 or n % args.retrain_every == 0:
            refresh_summaries()  # the beat task's job in the product (every 5 minutes)
        if n % args.retrain_every == 0:
            outcome = retrain(force=True)
            runs.append({"searches": n, "outcome": outcome.outcome, "message": outcome.message})
            point = {"searches": n, **measure(service, users, held_out)}
            curve.append(point)
            rate = n / (time.perf_counter() - started)
            print(f"  {n} searches ({rate:.0f}/s): {outcome.message} | held-out {point}", flush=True)
    return {"curve": curve, "training_runs": runs, "naive_vs_ipw": compare_naive_and_ipw(service, users, held_out)}


def strengthen_base(service, labels: dict[int, str], mix: float) -> None:
    """Move each image's stored vector toward its class's mean text vector: a base order like a strong encoder."""
    from collection.index import ensure_hnsw_indexes
    from collection.models import ImageEmbedding

    classes = sorted(set(labels.values()))
    class_vectors = dict(zip(classes, service.encoder.encode_texts([PHRASINGS[0].format(c) for c in classes]),
                             strict=True))  # fmt: skip
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

    fig, ax = plt.subplots(figsize=(7, 4))
    for rep in results["repetitions"]:
        xs = [p["searches"] for p in rep["curve"]]
        ax.plot(xs, [p["ndcg@10"] for p in rep["curve"]], marker="o", label=f"seed {rep['seed']}")
    ax.set_xlabel("logged searches")
    ax.set_ylabel("held-out nDCG@10")
    dataset = "coco_mini, held-out captions" if results["config"].get("dataset") == "coco_mini" else "Caltech 101"
    ax.set_title(f"Learning from simulated clicks ({dataset}, tiny random encoder)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        choices=["caltech101", "coco_mini"],
        default="caltech101",
        help="caltech101: a query names a class; coco_mini: a query is an image's held-out caption",
    )
    parser.add_argument("--searches", type=int, default=20_000)
    parser.add_argument("--retrain-every", type=int, default=4_000)
    parser.add_argument("--refresh-every", type=int, default=1_000, help="refresh the feedback summaries")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--images", type=int, default=0, help="ingest a sample of this many images (0: all)")
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--held-out", type=int, default=300)
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
    queries = None
    if args.dataset == "coco_mini":
        labels, queries = ingest_coco_held_out()
    else:
        labels = ingest_unlabelled(args.images)
    for seed in args.seeds:
        print(f"Repetition with seed {seed}:", flush=True)
        args.seed = seed
        forget_feedback()
        results["repetitions"].append({"seed": seed, **run(args, labels, queries)})
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
    summary = defaultdict(list)
    for rep in results["repetitions"]:
        summary["before_ndcg@10"].append(rep["curve"][0]["ndcg@10"])
        summary["after_ndcg@10"].append(rep["curve"][-1]["ndcg@10"])
        summary["offline_embedding_ndcg@10"].append(rep["naive_vs_ipw"]["embedding_order"]["ndcg@10"])
        for window in ("all_logs", "embedding_served_logs"):
            if window in rep["naive_vs_ipw"]:
                for name in ("naive_clicks", "inverse_propensity"):
                    summary[f"{window}_{name}_ndcg@10"].append(rep["naive_vs_ipw"][window][name]["ndcg@10"])
    results["summary"] = {
        k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in summary.items()
    }
    print(json.dumps(results["summary"], indent=2))
    args.output.write_text(json.dumps(results, indent=2))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()

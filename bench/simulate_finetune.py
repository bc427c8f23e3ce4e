"""Simulated users fine-tune the encoder: does held-out Recall@10 rise, and is a harmful setting refused?

The collection is Caltech 101 without labels (as in ``simulate_learning.py``) plus coco_mini with its
captions, whose captions are the **reference set** the gate guards. A random-weight model knows
nothing, so it would have nothing to forget and, as measured (docs/finetuning.md), nothing to start
from: with a random base 98% of the images users clicked on were stray clicks. So a stand-in for
pre-training comes first: the tiny model's trainable part (``--layers``) is fitted to all of
coco_mini's captions and to ``--base-labelled`` labelled images per Caltech class, captioned "a photo
of a <class>" (the knowledge a real CLIP brings to the domain, in miniature). That model serves.
Then, per repetition (seed):

1. simulated users search Caltech class names through the product (embedding order, the exploration
   slice on) and click with the position-based model over a grid of ``--page-size`` results, examined
   with probability (1/position)^eta. Stray clicks (``--click-noise``) land on irrelevant images and
   are followed by a quick return (log-normal dwell around 3 s, against 20 s on a wanted image, the
   two overlapping); the image page reports dwell as in the product. The product's examination prior
   is told the same exponent (``LOUPE_PROPENSITY_EXPONENT``), as the swap slice would measure it given
   enough traffic;
2. ``ranking.finetune.service.fine_tune`` runs twice from the same base, on the same feedback:
   the default setting (``--learning-rate``, anchor, WiSE-FT, early stopping) and a harmful one
   (``--harmful-learning-rate``, no anchor, no WiSE-FT, no early stopping). Reported: the gate's
   held-out Recall@10 of the chosen images (test window) and reference Recall@10, before and after,
   each decision, and the ground truth the product never sees: precision@10 of every class query
   over the Caltech images, base vs the promoted version.

Random-weight encoders measure the fine-tuning loop, not CLIP quality.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/simulate_finetune.py --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import simulate_learning as sim  # noqa: E402 - the same collection, users and click model

OUT = sim.OUT_DIR / "simulate_finetune.json"


def coco_items() -> list:
    from collection.ingestion.sources import coco_items as items_of

    annotations = sim.COCO_MINI / "annotations"
    return [
        item
        for split in ("train2017", "val2017")
        for item in items_of(annotations / f"captions_{split}.json")
        if item.path.is_file()
    ]


def labelled_sample(per_class: int) -> list[tuple[Path, str]]:
    """``per_class`` Caltech images of each class (a fixed draw), with their class name."""
    rng = np.random.default_rng(0)
    sample = []
    for folder in sorted(p for p in sim.CALTECH.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google"):
        files = sorted(folder.glob("*.jpg"))
        for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False)):
            sample.append((files[i], folder.name.replace("_", " ").lower()))
    return sample


def pretrained_base(var_dir: Path, layers: int, per_class: int, epochs: int) -> Path:
    """The tiny model with its trainable part fitted to coco_mini's captions and a few labelled Caltech images."""
    import torch
    from PIL import Image as PILImage

    from collection.demo_model import build_demo_model
    from collection.encoders import MODEL_CARD_FILE, Encoder
    from ranking.finetune.heads import TowerHeads
    from ranking.finetune.tower_inputs import image_states, text_inputs
    from ranking.finetune.training import PairSet, fine_tune_heads

    folder = var_dir / "models" / f"tiny-clip-base-l{layers}-k{per_class}"
    if (folder / MODEL_CARD_FILE).is_file():
        return folder
    encoder = Encoder(str(build_demo_model(var_dir / "models" / "tiny-clip")), local_files_only=True)
    items = coco_items()
    paths = [item.path for item in items] + [path for path, _ in labelled_sample(per_class)]
    texts, rows = [], []
    for row, item in enumerate(items):
        texts += item.captions
        rows += [row] * len(item.captions)
    for row, (_, name) in enumerate(labelled_sample(per_class), start=len(items)):
        texts.append(f"a photo of a {name}")
        rows.append(row)

    def inputs(batch):
        opened = [PILImage.open(p).convert("RGB") for p in batch]
        if layers:
            return torch.from_numpy(image_states(encoder, opened, layers).astype(np.float32))
        return torch.from_numpy(encoder.encode_images_with_pooled(opened)[1])

    images = torch.cat([inputs(paths[i : i + 64]) for i in range(0, len(paths), 64)])
    heads = TowerHeads(encoder.model, layers)
    pairs = PairSet(np.arange(len(texts)), np.asarray(rows), np.ones(len(texts)))
    fine_tune_heads(
        heads,
        pairs,
        pairs,
        text_inputs(encoder, texts, layers),
        images,
        float(encoder.model.logit_scale.detach().exp()),
        learning_rate=3e-3,
        epochs=epochs,
        batch_size=128,
        negatives=0,
        early_stopping=False,
    )
    encoder.model.load_state_dict(heads.model_state(), strict=False)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)
    encoder.image_processor.save_pretrained(folder)
    card = {
        "name": f"tiny-clip pre-trained on coco_mini + {per_class} Caltech images per class",
        "demo": True,
        "description": "Random-weight tiny CLIP whose top was fitted to coco_mini captions and a few labelled "
        "Caltech images: a stand-in for pre-training, for the fine-tuning simulation.",
    }
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    return folder


def ingest_reference() -> int:
    from collection.images import read_image
    from collection.ingestion.service import add_image

    for item in coco_items():
        add_image(read_image(item.path.read_bytes()), captions=item.captions, source=str(item.path))
    return len(coco_items())


def simulate_feedback(labels: dict[int, str], args, seed: int) -> None:
    """``args.searches`` searches by simulated users, with their clicks (client ids unique per ``seed``)."""
    from feedback.capture import ClickInput, record_click
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    users = sim.Users(labels, args, seed)
    service = SearchService()
    started = time.perf_counter()
    for n in range(1, args.searches + 1):
        text, wanted = users.draw_query()
        viewer = Viewer(user_key=f"sim:ft-user-{int(users.rng.integers(args.users))}", surface="sim")
        response = service.search(SearchRequest(text=text, page_size=args.page_size), viewer)
        for i, hit in enumerate(users.clicks(response.hits, wanted)):
            dwell = dwell_ms(users.rng, labels.get(hit.image.pk) == wanted, args)
            click = ClickInput(str(response.event_id), hit.image.pk, hit.position, f"ft{seed}-{n}-{i}", dwell)
            record_click(viewer, click)
    print(f"  {args.searches} searches in {time.perf_counter() - started:.0f} s", flush=True)


def dwell_ms(rng, relevant: bool, args) -> int:
    """Time on the image page: log-normal around --dwell-relevant-s for a wanted image, --dwell-stray-s else.

    The two overlap (sigma 0.8): with the 5 s short-click bar, 4% of wanted clicks look short and 26% of
    stray clicks look long.
    """
    median = args.dwell_relevant_s if relevant else args.dwell_stray_s
    return int(1000 * median * float(np.exp(args.dwell_sigma * rng.standard_normal())))


def version_scores(version, labels: dict[int, str], test_pairs) -> dict:
    """One version's numbers from its own stored vectors and text tower, comparable across versions:
    - ``held_out_recall@10``: the gate's measure on the given (latest) test pairs;
    - ``reference_recall@10``: every coco_mini caption against the whole collection;
    - ``precision@10``: the ground truth the product never sees, every class query (all phrasings) over
      the Caltech images.
    """
    from collection.encoders import Encoder
    from collection.models import Caption, ImageEmbedding

    rows = list(ImageEmbedding.objects.filter(encoder_version=version).values_list("image_id", "vector"))
    ids = np.asarray([r[0] for r in rows])
    vectors = np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])
    row_of = {int(pk): i for i, pk in enumerate(ids)}
    encoder = Encoder(version.model_ref, local_files_only=True)

    def top10(texts: list[str], among: np.ndarray | None = None) -> np.ndarray:
        pool = vectors if among is None else vectors[among]
        found = np.argsort(-(encoder.encode_texts(texts) @ pool.T), axis=1)[:, :10]
        return found if among is None else among[found]

    caltech = np.asarray([row_of[pk] for pk in labels if pk in row_of])
    classes = sorted(set(labels.values()))
    queries = [(p.format(c), c) for c in classes for p in sim.PHRASINGS]
    precision = [
        np.mean([labels[int(ids[j])] == c for j in row])
        for row, (_, c) in zip(top10([q for q, _ in queries], caltech), queries, strict=True)
    ]
    captions = list(Caption.objects.values_list("text", "image_id"))
    hits = top10([t for t, _ in captions])
    reference = np.mean([row_of[i] in set(row) for row, (_, i) in zip(hits, captions, strict=True)])
    texts = sorted({p.query for p in test_pairs})
    top = dict(zip(texts, top10(texts), strict=True)) if texts else {}
    held = [row_of.get(p.image_id) in set(top[p.query]) for p in test_pairs]
    return {
        "held_out_recall@10": float(np.mean(held)) if held else None,
        "reference_recall@10": float(reference),
        "precision@10": float(np.mean(precision)),
        "test_pairs": len(test_pairs),
    }


def latest_test_pairs(options) -> list:
    from django.conf import settings
    from django.utils import timezone

    from ranking.finetune.pairs import windowed_pairs
    from ranking.training_data import estimated_propensity

    curve = estimated_propensity(None, settings.LOUPE_MAX_CANDIDATES, settings.LOUPE_SWAP_MAX_POSITION)
    return windowed_pairs(timezone.now(), curve, options.relevance, options.held_out_share).test


def run_repetition(seed: int, base, labels: dict[int, str], args, default, harmful) -> dict:
    """``args.rounds`` rounds of feedback and a fine-tune from the version production serves; the first round's
    feedback also feeds the harmful setting (from the base). Production serves each version that passes."""
    from collection.models import EncoderVersion
    from ranking.finetune.service import fine_tune
    from ranking.finetune.versions import promote_encoder

    rep: dict = {"seed": seed, "rounds": []}
    serving = base
    for round_number in range(1, args.rounds + 1):
        simulate_feedback(labels, args, seed * 100 + round_number)
        runs = [("default", serving, default)] + ([("harmful", base, harmful)] if round_number == 1 else [])
        result = {"round": round_number, "from_version": serving.pk}
        for name, start, options in runs:
            started = time.perf_counter()
            run = fine_tune(start, options)
            result[name] = {
                "outcome": run.outcome,
                "message": run.message,
                "metrics": run.metrics,
                "settings": run.settings,
                "seconds": round(time.perf_counter() - started, 1),
                "version": run.result_id,
            }
            print(
                f"  round {round_number}, {name} from v{start.pk}: {run.outcome}: {run.message} "
                f"({result[name]['seconds']} s)",
                flush=True,
            )
        if result["default"]["version"] is not None:
            serving = EncoderVersion.objects.get(pk=result["default"]["version"])
            promote_encoder(serving, "simulation")
        rep["rounds"].append(result)
    test_pairs = latest_test_pairs(default)
    rep["base_scores"] = version_scores(base, labels, test_pairs)
    rep["final_version"] = serving.pk
    rep["final_scores"] = version_scores(serving, labels, test_pairs)
    print(f"  base v{base.pk} {rep['base_scores']}\n  final v{serving.pk} {rep['final_scores']}", flush=True)
    # The next repetition starts from the base again.
    from ranking.models import ServingConfig

    ServingConfig.objects.all().delete()
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--searches", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--eta", type=float, default=0.5, help="examination (1/position)^eta: grids are scanned deep")
    parser.add_argument("--page-size", type=int, default=48, help="results per page (an image grid)")
    parser.add_argument("--click-relevant", type=float, default=0.9)
    parser.add_argument("--click-noise", type=float, default=0.05)
    parser.add_argument("--explore-share", type=float, default=0.3)
    parser.add_argument("--dwell-relevant-s", type=float, default=20.0, help="median time on a wanted image")
    parser.add_argument("--dwell-stray-s", type=float, default=3.0, help="median time on a stray click")
    parser.add_argument("--dwell-sigma", type=float, default=0.8, help="log-normal spread of both")
    parser.add_argument("--rounds", type=int, default=3, help="feedback rounds, each ended by a fine-tune")
    parser.add_argument("--layers", type=int, default=1, help="blocks of each tower the fine-tune trains")
    parser.add_argument("--base-labelled", type=int, default=10, help="labelled images per class in the base")
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--patience", type=int, default=25)
    parser.add_argument("--anchor-weight", type=float, default=100.0)
    parser.add_argument("--harmful-learning-rate", type=float, default=1e-2)
    parser.add_argument("--var-dir", type=Path, default=sim.ROOT / "var" / "sim-ft")
    parser.add_argument("--keep", action="store_true", help="reuse the ingested collection in --var-dir")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    for needed in (sim.CALTECH, sim.COCO_MINI):
        if not needed.is_dir():
            sys.exit(f"This simulation needs {needed} (the shared folder beside the repo).")
    args.dataset, args.model, args.swap_share = "caltech101", "position", 0.0
    if not args.keep:
        import shutil

        shutil.rmtree(args.var_dir, ignore_errors=True)
    args.var_dir.mkdir(parents=True, exist_ok=True)
    base_dir = args.var_dir / "models" / f"tiny-clip-base-l{args.layers}-k{args.base_labelled}"
    os.environ.update(
        {
            "LOUPE_VAR_DIR": str(args.var_dir),
            "LOUPE_CLIP_MODEL": str(base_dir),
            "LOUPE_DEMO_MODEL_DIR": str(args.var_dir / "models" / "tiny-clip"),
            "LOUPE_RERANK": "false",  # the feedback comes from the embedding order (plus exploration)
            "LOUPE_TEXT_CHANNEL": "false",
            "LOUPE_EXPLORE_SHARE": str(args.explore_share),
            "LOUPE_SWAP_SHARE": "0",
            "LOUPE_PROPENSITY_EXPONENT": str(args.eta),
            "LOUPE_RESULT_CACHE_SECONDS": "0",
            "LOUPE_DEFER_SEARCH_LOG": "false",  # one process that clicks at once: write each log before its clicks
            "LOUPE_FEEDBACK_HOURLY_CAP": "100000",
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    sys.path.insert(0, str(sim.ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print("Pre-training the base (coco_mini captions + labelled Caltech sample)...", flush=True)
    pretrained_base(args.var_dir, args.layers, args.base_labelled, args.pretrain_epochs)
    print("Ingesting coco_mini with captions (the reference set) and Caltech 101 without labels...", flush=True)
    print(f"  {ingest_reference()} reference images", flush=True)
    labels = sim.ingest_unlabelled(0)
    from collection.versions import serving_version
    from ranking.finetune.service import FineTuneSettings

    base = serving_version()[1]
    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "base": {"version": base.pk, "model": str(base_dir)},
        "repetitions": [],
    }
    default = FineTuneSettings(
        layers=args.layers,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        patience=args.patience,
        anchor_weight=args.anchor_weight,
    )
    harmful = FineTuneSettings(
        layers=args.layers,
        learning_rate=args.harmful_learning_rate,
        epochs=args.epochs,
        anchor_weight=0.0,
        wise_ft=False,
        early_stopping=False,
    )
    for seed in args.seeds:
        print(f"Repetition with seed {seed}:", flush=True)
        sim.forget_feedback()
        results["repetitions"].append(run_repetition(seed, base, labels, args, default, harmful))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
    results["summary"] = summarise(results["repetitions"])
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"], indent=1))
    plot(results, args.output.with_suffix(".png"))
    print(f"Saved {args.output} and {args.output.with_suffix('.png')}")


def summarise(repetitions: list[dict]) -> dict:
    def stats(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": values}

    def gate_gain(result: dict, key: str) -> float:
        numbers = result["metrics"].get(key) or {}
        return numbers["after"] - numbers["before"] if numbers else float("nan")

    first = [r["rounds"][0] for r in repetitions]
    return {
        "round1_default_held_out_gain": stats([gate_gain(r["default"], "held_out_recall@10") for r in first]),
        "round1_default_reference_change": stats([gate_gain(r["default"], "reference_recall@10") for r in first]),
        "default_outcomes": [[x["default"]["outcome"] for x in r["rounds"]] for r in repetitions],
        "harmful_reference_change": stats([gate_gain(r["harmful"], "reference_recall@10") for r in first]),
        "harmful_refused": [r["harmful"]["outcome"] == "refused" for r in first],
        "final_vs_base": {
            key: stats([r["final_scores"][key] - r["base_scores"][key] for r in repetitions])
            for key in ("held_out_recall@10", "reference_recall@10", "precision@10")
        },
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (
        ("held_out_recall@10", "held-out Recall@10 of chosen images"),
        ("reference_recall@10", "reference Recall@10 (coco_mini captions)"),
        ("precision@10", "ground truth: class precision@10 (never seen)"),
    )
    rounds = results["config"]["rounds"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for n, rep in enumerate(results["repetitions"]):
            colour = f"C{n}"
            ax.plot(
                [0, 1],
                [rep["base_scores"][key], rep["final_scores"][key]],
                "-o",
                color=colour,
                label=f"seed {rep['seed']}: {rounds} rounds, gated",
            )
            harmful = rep["rounds"][0]["harmful"]["metrics"].get(key)
            if harmful:  # the gate's own numbers for round 1 (its test window)
                ax.plot(
                    [0, 1],
                    [harmful["before"], harmful["after"]],
                    ":x",
                    color=colour,
                    alpha=0.7,
                    label=f"seed {rep['seed']}: harmful setting (refused)",
                )
        ax.set_xticks([0, 1], ["base", "fine-tuned"])
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 1 if key == "reference_recall@10" else None)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        "Encoder fine-tuning from simulated clicks (Caltech 101, tiny random-weight CLIP): the harmful "
        "setting gains on its own task and forgets the reference",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

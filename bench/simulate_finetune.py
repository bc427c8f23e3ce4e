"""Simulated users fine-tune the encoder: does held-out Recall@10 rise, and is a harmful setting refused?

The collection is Caltech 101 without labels (as in ``simulate_learning.py``) plus coco_mini with its
captions, whose captions are the **reference set** the gate guards. A random-weight model knows
nothing, so it would have nothing to forget; to stand in for pre-training, the base encoder's
projections are first fitted to coco_mini's captions (``--pretrain-epochs``) and that model serves.
Then, per repetition (seed):

1. simulated users search Caltech class names through the product (embedding order, the exploration
   slice on) and click with the position-based model over a grid of ``--page-size`` results scanned
   deeper than a web results list (examination (1/p)^0.5): the only signal about Caltech classes.
   (With 10 results and 1/p, nearly every click is in the base's own top 10, so the held-out
   Recall@10 of clicked images starts near 1 and cannot show a gain);
2. ``ranking.finetune.service.fine_tune`` runs twice from the same base, on the same feedback:
   the default setting (small learning rate, WiSE-FT) and a harmful one (high learning rate, no
   WiSE-FT). Reported: held-out Recall@10 of the clicked image for its query and reference Recall@10,
   before and after, and each gate decision.

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


def pretrained_base(var_dir: Path, epochs: int) -> Path:
    """The tiny model with projections fitted to coco_mini's captions: a base that knows the reference set."""
    import torch

    from ranking.finetune.projections import PairSet, Projections, fine_tune_projections
    from ranking.finetune.towers import text_pooled
    from searchapp.demo_model import build_demo_model
    from searchapp.encoders import MODEL_CARD_FILE, Encoder
    from searchapp.ingestion.sources import coco_items

    folder = var_dir / "models" / "tiny-clip-coco"
    if (folder / MODEL_CARD_FILE).is_file():
        return folder
    random_dir = build_demo_model(var_dir / "models" / "tiny-clip")
    encoder = Encoder(str(random_dir), local_files_only=True)
    annotations = sim.COCO_MINI / "annotations"
    items = [item for split in ("train2017", "val2017")
             for item in coco_items(annotations / f"captions_{split}.json") if item.path.is_file()]  # fmt: skip
    from PIL import Image as PILImage

    pooled_images = np.concatenate(
        [
            encoder.encode_images_with_pooled([PILImage.open(item.path).convert("RGB") for item in items[i : i + 32]])[
                1
            ]
            for i in range(0, len(items), 32)
        ]  # fmt: skip
    )
    captions = [(c, row) for row, item in enumerate(items) for c in item.captions]
    pooled_text = text_pooled(encoder, [c for c, _ in captions])
    rows = np.arange(len(captions))
    images = np.asarray([row for _, row in captions])
    held = rows % 5 == 4
    train = PairSet(pooled_text, rows[~held], images[~held], np.ones((~held).sum()))
    valid = PairSet(pooled_text, rows[held], images[held], np.ones(held.sum()))
    start = Projections(encoder.model.text_projection.weight.detach().clone(),
                        encoder.model.visual_projection.weight.detach().clone())  # fmt: skip
    result = fine_tune_projections(train, valid, pooled_images, start, 20.0, learning_rate=0.01, epochs=epochs,
                                   batch_size=64, patience=epochs)  # fmt: skip
    first, best = result.history[0]["held_out_recall@10"], result.history[result.best_epoch]["held_out_recall@10"]
    print(f"  pre-training on coco_mini captions: held-out caption Recall@10 among coco_mini {first:.3f} -> "
          f"{best:.3f}", flush=True)  # fmt: skip
    with torch.no_grad():
        encoder.model.text_projection.weight.copy_(result.projections.text)
        encoder.model.visual_projection.weight.copy_(result.projections.image)
    folder.mkdir(parents=True, exist_ok=True)
    encoder.model.save_pretrained(folder, safe_serialization=True)
    encoder.tokenizer.save_pretrained(folder)
    encoder.image_processor.save_pretrained(folder)
    card = {"name": "tiny-clip fitted to coco_mini captions", "demo": True,
            "description": "Random-weight tiny CLIP, projections fitted to coco_mini's captions."}  # fmt: skip
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
    return folder


def ingest_reference() -> int:
    from searchapp.images import read_image
    from searchapp.ingestion.service import add_image
    from searchapp.ingestion.sources import coco_items

    count = 0
    for split in ("train2017", "val2017"):
        for item in coco_items(sim.COCO_MINI / "annotations" / f"captions_{split}.json"):
            if item.path.is_file():
                add_image(read_image(item.path.read_bytes()), captions=item.captions, source=str(item.path))
                count += 1
    return count


def simulate_feedback(labels: dict[int, str], args, seed: int) -> None:
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
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"ft{n}-{i}"))
    print(f"  {args.searches} searches in {time.perf_counter() - started:.0f} s", flush=True)


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
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--harmful-learning-rate", type=float, default=0.3)
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
    base_dir = args.var_dir / "models" / "tiny-clip-coco"
    os.environ.update({
        "LOUPE_VAR_DIR": str(args.var_dir), "LOUPE_CLIP_MODEL": str(base_dir),
        "LOUPE_DEMO_MODEL_DIR": str(args.var_dir / "models" / "tiny-clip"),
        "LOUPE_RERANK": "false",  # the feedback comes from the embedding order (plus exploration)
        "LOUPE_TEXT_CHANNEL": "false", "LOUPE_EXPLORE_SHARE": str(args.explore_share), "LOUPE_SWAP_SHARE": "0",
        "LOUPE_FEEDBACK_HOURLY_CAP": "100000", "DJANGO_SETTINGS_MODULE": "searchapp.settings",
    })  # fmt: skip
    sys.path.insert(0, str(sim.ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print("Pre-training the base on coco_mini captions...", flush=True)
    pretrained_base(args.var_dir, args.pretrain_epochs)
    print("Ingesting Caltech 101 without labels and coco_mini with captions (the reference set)...", flush=True)
    print(f"  {ingest_reference()} reference images", flush=True)
    labels = sim.ingest_unlabelled(0)
    from ranking.finetune.service import FineTuneSettings, fine_tune
    from searchapp.versions import serving_version

    base = serving_version()[1]
    results = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "base": {"version": base.pk, "model": str(base_dir)}, "repetitions": []}  # fmt: skip
    settings_good = FineTuneSettings(learning_rate=args.learning_rate, epochs=40, patience=5)
    settings_bad = FineTuneSettings(learning_rate=args.harmful_learning_rate, epochs=40, patience=40, wise_ft=False)
    for seed in args.seeds:
        print(f"Repetition with seed {seed}:", flush=True)
        sim.forget_feedback()
        simulate_feedback(labels, args, seed)
        rep = {"seed": seed}
        for name, options in (("default", settings_good), ("harmful", settings_bad)):
            run = fine_tune(base, options)
            rep[name] = {"outcome": run.outcome, "message": run.message, "metrics": run.metrics,
                         "settings": run.settings}  # fmt: skip
            print(f"  {name}: {run.outcome}: {run.message}", flush=True)
        results["repetitions"].append(rep)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2, default=str))
    recalls = [r["default"]["metrics"].get("held_out_recall@10") for r in results["repetitions"]]
    gains = [r["after"] - r["before"] for r in recalls if r]
    results["summary"] = {
        "held_out_gain_mean": float(np.mean(gains)) if gains else None,
        "held_out_gain_std": float(np.std(gains)) if gains else None,
        "harmful_refused": [r["harmful"]["outcome"] == "refused" for r in results["repetitions"]],
    }
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"], indent=1))
    print(f"Saved {args.output}")


if __name__ == "__main__":
    main()

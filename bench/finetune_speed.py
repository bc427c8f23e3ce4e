"""How long encoder fine-tuning takes on CPU with the full-size ViT-B/32 (random weights, same compute).

10,000 images (Caltech 101 and coco_mini, topped up with generated images) and 10,000 feedback pairs
(2,000 queries; each click an event whose 10 shown images are random, so the pairs carry skipped
negatives like real ones). Feedback rows are bulk-inserted: this measures the training pipeline, not
the search path (``bench/feedback_load.py`` measures that). Timed, separately:

- embedding the collection (what search needs anyway; the same pass keeps the vision tower's pooled
  outputs, so a projection-only fine-tune finds its inputs cached);
- the fine-tune's image inputs: nothing to do for ``--layers 0``; with ``--layers 1`` one tower pass
  storing the states entering the last block (once per frozen tower);
- one fine-tune through ``ranking.finetune.service.fine_tune`` (pairs, query and caption towers,
  training, WiSE-FT, gate, and, when it passes, the new version);
- re-embedding the 10,000 images after a projection-only change (``reproject_collection``).

Run: .venv/bin/python bench/finetune_speed.py [--layers 1 --output docs/bench/finetune_speed_layers1.json]
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search_latency as bench  # noqa: E402 - the full-size model builder and the Django setup

OUT = bench.OUT_DIR / "finetune_speed.json"


def top_up_images(target: int) -> int:
    """Caltech 101 + coco_mini, then generated images up to ``target``."""
    from PIL import Image as PILImage

    from collection.images import read_image
    from collection.ingestion.one_pass import ingest_items
    from collection.ingestion.service import add_image
    from collection.ingestion.sources import folder_items
    from collection.models import Image

    if Image.objects.count() < target:
        ingest_items(list(folder_items(bench.CALTECH, folder_tags=False)))
        coco = bench.SHARED / "datasets" / "coco_mini"
        from collection.ingestion.sources import coco_items

        for split in ("train2017", "val2017"):
            items = [i for i in coco_items(coco / "annotations" / f"captions_{split}.json") if i.path.is_file()]
            ingest_items(items)
    rng = random.Random(0)
    n = 0
    while Image.objects.count() < target:
        image = PILImage.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
        pixels = image.load()
        for _ in range(400):
            pixels[rng.randrange(160), rng.randrange(120)] = tuple(rng.randrange(256) for _ in range(3))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        add_image(read_image(buffer.getvalue()), source="bench-generated", captions=[f"generated picture {n}"])
        n += 1
    return Image.objects.count()


def feedback_rows(pairs: int, queries: int, version) -> None:
    """``pairs`` clicks over ``queries`` query texts, each in its own event showing 10 random images."""
    import uuid

    from collection.models import Image
    from feedback.models import Click, Impression, SearchEvent

    if Click.objects.count() >= pairs:
        return
    ids = list(Image.objects.values_list("pk", flat=True))
    rng = np.random.default_rng(0)
    events, impressions, clicks = [], [], []
    for n in range(pairs):
        query = f"bench query number {n % queries}"
        event = SearchEvent(
            id=uuid.uuid4(),
            user_key=f"bench:user-{n % 3000}",
            kind="text",
            query_text=query,
            normalised_query=query,
            page_size=10,
            encoder_version=version,
            result_count=10,
        )
        shown = rng.choice(ids, size=10, replace=False)
        position = int(rng.integers(1, 11))
        events.append(event)
        impressions += [
            Impression(event_id=event.id, image_id=int(i), position=p, score=0.0) for p, i in enumerate(shown, 1)
        ]
        clicks.append(
            Click(
                event_id=event.id,
                image_id=int(shown[position - 1]),
                position=position,
                user_key=event.user_key,
                client_id=f"bench-{n}",
            )
        )
    SearchEvent.objects.bulk_create(events, batch_size=2000)
    Impression.objects.bulk_create(impressions, batch_size=5000)
    Click.objects.bulk_create(clicks, batch_size=5000)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--layers", type=int, default=0, help="what the fine-tune trains (LOUPE_FINETUNE_LAYERS)")
    parser.add_argument("--var-dir", type=Path, default=bench.ROOT / "var" / "bench-ft")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    if not bench.CONFIG_DIR.is_dir():
        sys.exit(f"This benchmark needs {bench.CONFIG_DIR}.")
    model_dir = args.var_dir / "models" / "clip-vit-b32-random"
    os.environ["LOUPE_VAR_DIR"] = str(args.var_dir)
    bench.build_full_size_model(model_dir)
    bench.setup_django(args.var_dir, model_dir)
    import torch

    from collection.embedding import embed_everything_missing
    from collection.models import EncoderVersion, ImageEmbedding
    from collection.versions import serving_version
    from ranking.finetune.building import reproject_collection
    from ranking.finetune.service import FineTuneSettings, fine_tune
    from ranking.finetune.tower_inputs import image_inputs
    from ranking.finetune.towers import cached_image_pooled

    choice, version = serving_version()
    encoder = choice.encoder
    results = {"machine": bench.machine(), "torch_threads": torch.get_num_threads(), "layers": args.layers}
    started = time.perf_counter()
    results["images"] = top_up_images(args.images)
    results["ingest_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    embed_everything_missing()  # what search needs anyway; the same pass keeps the tower's pooled outputs
    results["embed_collection_s"] = round(time.perf_counter() - started, 1)
    feedback_rows(args.pairs, args.queries, version)
    print(
        f"{results['images']} images (embedded in {results['embed_collection_s']} s), {args.pairs} clicks over "
        f"{args.queries} queries",
        flush=True,
    )

    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  image tower inputs: {done}/{total} ({done / (last[0] - started):.1f} images/s)", flush=True)

    image_inputs(encoder, args.layers, progress)  # layers=0: already filled by embedding; else one tower pass
    results["image_inputs_fill_s"] = round(time.perf_counter() - started, 1)
    print(f"image tower inputs ready in {results['image_inputs_fill_s']} s", flush=True)

    started = time.perf_counter()
    run = fine_tune(version, FineTuneSettings(min_pairs=100, layers=args.layers))
    results["fine_tune_s"] = round(time.perf_counter() - started, 1)
    results["fine_tune"] = {
        "outcome": run.outcome,
        "message": run.message,
        "timings": run.metrics.get("timings"),
        "pairs": run.metrics.get("pairs"),
        "epochs": len(run.metrics.get("history", [])) - 1,
    }
    print(f"fine-tune: {results['fine_tune_s']} s: {run.message}", flush=True)

    ids, pooled = cached_image_pooled(encoder.vision_tower_fingerprint)
    target, _ = EncoderVersion.objects.get_or_create(
        model_ref=str(args.var_dir / "bench-reprojection"),
        fingerprint="bench",
        defaults={
            "name": "bench re-projection target",
            "dimension": version.dimension,
            "is_demo": True,
            "status": EncoderVersion.Status.BUILDING,
        },
    )
    ImageEmbedding.objects.filter(encoder_version=target).delete()
    rng = torch.Generator().manual_seed(0)
    weight = encoder.model.visual_projection.weight.detach()
    changed = weight + 0.01 * torch.randn(weight.shape, generator=rng)
    started = time.perf_counter()
    written = reproject_collection(target, ids, pooled, changed)
    results["reembed_projection_only_s"] = round(time.perf_counter() - started, 2)
    results["reembedded_images"] = written
    print(f"re-embedding {written} images after a projection-only change: {results['reembed_projection_only_s']} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str))
    print(f"Saved {args.output}")


if __name__ == "__main__":
    main()

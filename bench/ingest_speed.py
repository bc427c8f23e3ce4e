"""End-to-end ingest speed (issue 22): today's path against the new default, in one run, on one machine.

End to end is what `manage.py ingest` does for each file before the image is searchable: read, validate
(full decode, polyglot check), sha256, store the original, make and store the thumbnail, write the row,
make the tower input, run the image tower and store the vector. Both paths ingest the same N Caltech 101
images into a fresh collection (rows and media emptied before each pass), with the full-size ViT-B/32
built with random weights from ../shared/models/clip-vit-base-patch32-config (real compute):

- **today**: the path before issue 22, reproduced by settings: files decoded in the calling thread
  (LOUPE_DECODE_WORKERS=0), CLIPImageProcessor itself (LOUPE_FAST_IMAGE_INPUT=False), eager PyTorch fp32
  (LOUPE_ONNX_IMAGE=False); ingest_items, then embed_images re-reads and decodes the stored files.
- **new**: the defaults: one pass (ingest_items with ImageVectorBatches), each file decoded once in the
  decode pool for validation, thumbnail and tower input (collection.image_input), the ONNX Runtime int8
  tower once it agreed with PyTorch on the first batch.

The machine is shared, so the passes alternate (today, new, new, today, ...) and every pass is reported.
Once-per-weights costs (ONNX export, quantisation, the int8 check) are paid in a warm-up on other images,
timed and reported apart. Also reported: the int8 tower's minimum cosine to the fp32 vectors of today's
pass over the same images, and a CPU-time profile of each stage on one thread.

Run (from the repo root, after bin/setup dev; needs ../shared):
    .venv/bin/python bench/ingest_speed.py --images 2000 --rounds 2
Writes docs/bench/ingest_speed.json and docs/bench/ingest_speed.png; uses its own var folder (var/bench-ingest).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from feedback_load import attach_django, fresh_var_dir
from search_latency import CALTECH, CONFIG_DIR, build_full_size_model, machine

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "bench"


def caltech_items(count: int, warmup: int) -> tuple[list, list]:
    """``count`` shuffled Caltech files for the timed passes and ``warmup`` others for the warm-up."""
    from collection.ingestion.sources import folder_items

    items = list(folder_items(CALTECH, folder_tags=True))
    random.Random(0).shuffle(items)
    if len(items) < count + warmup:
        sys.exit(f"Caltech 101 has {len(items)} images; asked for {count} + {warmup} for the warm-up.")
    return items[:count], items[count : count + warmup]


def empty_collection() -> None:
    """A fresh collection: no image rows (their vectors, captions and tower outputs go with them), no files."""
    from django.conf import settings

    from collection.models import Image

    Image.objects.all().delete()
    for kind in ("images", "thumbs"):
        shutil.rmtree(Path(settings.MEDIA_ROOT) / kind, ignore_errors=True)


class Timed:
    """Wraps an encoder's encode_pixels to add up the seconds the tower takes (the rest is the pipeline)."""

    def __init__(self, encoder) -> None:
        self.seconds = 0.0
        self._encode = encoder.encode_pixels
        encoder.encode_pixels = self

    def __call__(self, pixel_values, **kwargs):
        started = time.perf_counter()
        try:
            return self._encode(pixel_values, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def load_encoders(model_dir: Path, batch: int) -> dict:
    """Today's encoder (processor, eager fp32) and the new default's (fast input, ONNX int8 when checked)."""
    from django.conf import settings
    from django.test import override_settings

    from collection.encoders import Encoder, configure_torch_threads
    from collection.fast_text import onnx_cache_dir

    configure_torch_threads(settings.LOUPE_TORCH_THREADS)
    with override_settings(LOUPE_FAST_IMAGE_INPUT=False):
        today = Encoder(str(model_dir), local_files_only=True, device="cpu")
    new = Encoder(str(model_dir), local_files_only=True, device="cpu")
    if settings.LOUPE_ONNX_IMAGE:
        new.accelerate_images(
            onnx_cache_dir(), int8=settings.LOUPE_IMAGE_INT8, threads=settings.LOUPE_IMAGE_TOWER_THREADS
        )
    return {"today": today, "new": new}


def run_today(encoder, version, items, batch: int) -> dict:
    from django.test import override_settings

    from collection.embedding import embed_images
    from collection.ingestion.one_pass import ingest_items

    started = time.perf_counter()
    with override_settings(LOUPE_DECODE_WORKERS=0):
        report = ingest_items(items)
        ingested = time.perf_counter()
        embedded = embed_images(encoder, version, batch_size=batch)
    return {
        "added": report.added,
        "failed": len(report.failed),
        "embedded": embedded.images,
        "ingest_s": ingested - started,
        "embed_s": time.perf_counter() - ingested,
    }


def run_new(encoder, version, items, batch: int) -> dict:
    from collection.embedding import ImageVectorBatches, embed_images
    from collection.ingestion.one_pass import ingest_items

    started = time.perf_counter()
    batches = ImageVectorBatches(encoder, version, batch)
    report = ingest_items(items, embed=batches)
    ingested = time.perf_counter()
    rest = embed_images(encoder, version, batch_size=batch)  # what the pass left (none when all went well)
    return {
        "added": report.added,
        "failed": len(report.failed),
        "embedded": batches.embedded + rest.images,
        "ingest_s": ingested - started,
        "embed_s": time.perf_counter() - ingested,
    }


RUNS = {"today": run_today, "new": run_new}


def stored_vectors(version) -> dict[str, np.ndarray]:
    from collection.models import ImageEmbedding

    rows = ImageEmbedding.objects.filter(encoder_version=version).values_list("image__sha256", "vector")
    return {sha: np.asarray(vector, dtype=np.float32) for sha, vector in rows}


def one_pass(name: str, encoder, version, items, batch: int) -> dict:
    empty_collection()
    load_before = os.getloadavg()
    timer = Timed(encoder)
    try:
        result = RUNS[name](encoder, version, items, batch)
    finally:
        encoder.encode_pixels = timer._encode
    seconds = result["ingest_s"] + result["embed_s"]
    if result["embedded"] != result["added"]:
        raise RuntimeError(f"{name}: {result['added']} images added but {result['embedded']} embedded")
    result.update(
        path=name,
        seconds=round(seconds, 2),
        images_per_s=round(result["added"] / seconds, 2),
        tower_s=round(timer.seconds, 2),
        ingest_s=round(result["ingest_s"], 2),
        embed_s=round(result["embed_s"], 2),
        runtime=encoder.image_runtime,
        # The machine is shared: the 1-minute load average as the pass started and ended says what it ran beside.
        load_average=[round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    )
    print(
        f"  {name:5s}: {result['added']} images in {seconds:.1f} s = {result['images_per_s']:.2f} images/s "
        f"(tower {timer.seconds:.1f} s, {encoder.image_runtime})",
        flush=True,
    )
    return result


def stage_profile(encoders: dict, items, batch: int) -> dict:
    """CPU milliseconds per image of each stage, in this one thread (what a pass spends besides waiting)."""
    from collection.images import decode_image, read_image, thumbnail_jpeg, upright

    def cpu_ms(work, inputs) -> float:
        started = time.thread_time()
        for value in inputs:
            work(value)
        return round((time.thread_time() - started) * 1000 / len(inputs), 3)

    data = [item.path.read_bytes() for item in items]
    decoded = [decode_image(d)[1].convert("RGB") for d in data]
    today, new = encoders["today"], encoders["new"]
    pixels = np.stack([new.pixels(image) for image in decoded[:batch]])
    towers = {
        "eager fp32 tower": lambda _: today.encode_pixels(pixels, exact=True),
        f"{new.image_runtime} tower": lambda _: new.encode_pixels(pixels),
    }
    profile = {
        "read_image (validate: full decode, polyglot, sha256)": cpu_ms(read_image, data),
        "decode again (today: for the thumbnail, and for the tower from storage)": cpu_ms(
            lambda d: upright(decode_image(d)[1]), data
        ),
        "thumbnail (320 px JPEG)": cpu_ms(thumbnail_jpeg, decoded),
        "tower input, CLIPImageProcessor": cpu_ms(today.pixels, decoded),
        "tower input, collection.image_input": cpu_ms(new.pixels, decoded),
    }
    for label, run in towers.items():  # per image of a batch; includes the tower's own threads
        started = time.process_time()
        run(None)
        profile[f"{label} (process CPU, batch {batch})"] = round((time.process_time() - started) * 1000 / batch, 2)
    return profile


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = results["passes"]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [f"{p['path']}\nround {p['round']}" for p in passes]
    colours = ["#999999" if p["path"] == "today" else "#2b7bba" for p in passes]
    ax.bar(labels, [p["images_per_s"] for p in passes], color=colours)
    for i, p in enumerate(passes):
        ax.text(i, p["images_per_s"], f"{p['images_per_s']:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("images / s, end to end")
    ax.set_title(
        f"Ingest of {results['images']} Caltech images, ViT-B/32 (random weights), "
        f"{results['machine']['cores']} cores: {results['ratio']:.2f}x",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(args, batch: int, passes: list, vectors: dict, warmup: dict, check) -> dict:
    """The run's figures from the passes finished so far (a partial run has fewer rounds, ``complete`` false)."""
    from django.conf import settings

    common = sorted(set(vectors.get("today", {})) & set(vectors.get("new", {})))
    cosines = np.array([float(vectors["today"][sha] @ vectors["new"][sha]) for sha in common])
    rate = {name: [p["images_per_s"] for p in passes if p["path"] == name] for name in RUNS}
    mean_rate = {name: float(np.mean(values)) for name, values in rate.items() if values}
    both = "today" in mean_rate and "new" in mean_rate
    return {
        "command": " ".join(sys.argv),
        "machine": machine(),
        "complete": False,
        "images": args.images,
        "rounds_asked": args.rounds,
        "batch": batch,
        "settings_new": {
            name: getattr(settings, name)
            for name in (
                "LOUPE_DECODE_WORKERS",
                "LOUPE_FAST_IMAGE_INPUT",
                "LOUPE_ONNX_IMAGE",
                "LOUPE_IMAGE_INT8",
                "LOUPE_IMAGE_TOWER_THREADS",
                "LOUPE_TORCH_THREADS",
            )
        },
        "passes": passes,
        "mean_images_per_s": {name: round(value, 2) for name, value in mean_rate.items()},
        "ratio": round(mean_rate["new"] / mean_rate["today"], 2) if both else None,
        "ratio_per_round": [round(n / t, 2) for t, n in zip(rate["today"], rate["new"], strict=False)],
        "int8_vs_fp32": None
        if not common
        else {
            "images": len(common),
            "min_cosine": round(float(cosines.min()), 5),
            "mean_cosine": round(float(cosines.mean()), 5),
        },
        "int8_check": None
        if check is None
        else {
            "runtime": check.runtime,
            "sample_images": check.sample_images,
            "reason": check.reason,
            "min_cosine_fp32": check.min_cosine_fp32,
            "min_cosine_int8": check.min_cosine_int8,
        },
        "warmup": warmup,
    }


def save(results: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    if results["ratio"] is not None:
        plot(results, output.with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="Passes of each path, alternated.")
    parser.add_argument("--batch", type=int, default=0, help="Images per tower batch (0: LOUPE_ENCODE_BATCH_SIZE).")
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--var", type=Path, default=ROOT / "var" / "bench-ingest")
    parser.add_argument("--output", type=Path, default=OUT_DIR / "ingest_speed.json")
    args = parser.parse_args()
    if not CALTECH.is_dir() or not CONFIG_DIR.is_dir():
        sys.exit(f"Needs {CALTECH} and {CONFIG_DIR} (../shared/datasets, ../shared/models); not found.")

    fresh_var_dir(args.var)
    model_dir = ROOT / "var" / "bench-models" / "clip-vit-b32-random"  # kept between runs: same seed, same weights
    build_full_size_model(model_dir)
    attach_django(args.var)
    from django.conf import settings
    from django.core.management import call_command

    from collection.encoders import EncoderChoice
    from collection.versions import version_for

    call_command("migrate", verbosity=0)
    batch = args.batch or settings.LOUPE_ENCODE_BATCH_SIZE
    items, warmup_items = caltech_items(args.images, args.warmup)
    encoders = load_encoders(model_dir, batch)
    version = version_for(EncoderChoice(encoders["new"], str(model_dir)))

    print(f"warm-up on {len(warmup_items)} other images (ONNX export, int8 quantisation and check)", flush=True)
    warmup = {name: one_pass(name, encoder, version, warmup_items, batch) for name, encoder in encoders.items()}
    check = encoders["new"].image_check
    passes, vectors = [], {}
    for round_ in range(1, args.rounds + 1):
        order = ("today", "new") if round_ % 2 else ("new", "today")
        print(f"round {round_}", flush=True)
        for name in order:
            passes.append({"round": round_, **one_pass(name, encoders[name], version, items, batch)})
            vectors[name] = stored_vectors(version)
            results = summary(args, batch, passes, vectors, warmup, check)
            save(results, args.output)  # after every pass: a run cut short still reports the passes it finished
    empty_collection()
    results["stage_cpu_ms_per_image"] = stage_profile(encoders, items[:200], batch)
    results["complete"] = True
    print(json.dumps({k: results[k] for k in ("mean_images_per_s", "ratio", "ratio_per_round", "int8_vs_fp32")}))
    print(json.dumps(results["stage_cpu_ms_per_image"], indent=1))
    save(results, args.output)
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")


if __name__ == "__main__":
    main()

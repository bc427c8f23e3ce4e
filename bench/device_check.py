"""Is the accelerator really used, and how fast? Embedding and last-blocks fine-tuning of the full-size ViT-B/32.

Made for a machine that has a GPU and minutes of time on it, but maybe none of Loupe's requirements (no
PostgreSQL, no internet): it needs only torch and transformers. The model is CLIP ViT-B/32 built from its
config (``bench/device_check_model/config.json``, copied from ``../shared/models``) with random weights:
the same arithmetic as the real weights, nothing downloaded. Two figures (issue 22, item 6):

- **embedding, images/s**: the image tower and projection (what ``collection.encoders.Encoder`` runs) over
  synthetic 224 px pixel batches, in fp16 on a GPU (bf16 where ``--dtype bf16``), fp32 on the CPU. JPEG
  decoding and preprocessing are not in it (they run in the decode pool on the CPU).
- **fine-tune, seconds per epoch, last-blocks mode** (``LOUPE_FINETUNE_LAYERS=1``): Loupe's own training
  steps (``ranking.finetune.training.TrainingSteps``, what ``fine_tune_heads`` runs, on
  ``ranking.finetune.heads.TowerHeads``; torch and numpy only) over cached hidden states in host memory, one
  epoch of ``--pairs`` pairs (10,000): batch 256, 1,024 random collection negatives, the anchor on 512
  images and 256 texts, mixed precision on CUDA, then the epoch's evaluation pass over the collection and
  the queries. The states are synthetic (random, the
  real shapes): the cost of a step does not depend on their values. If the whole epoch would not fit in
  ``--epoch-seconds``, a timed share of its steps is extrapolated and the output says so.

Exits 3 if ``--device cuda`` was asked and the model or its outputs are not on the GPU (a silent fall back
to the CPU), 2 if the device is not there at all. Run it on the CPU first, then on the GPU:

    .venv/bin/python bench/device_check.py --device cpu --quick
    python bench/device_check.py --device cuda --output docs/bench/device_check_cuda.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # Loupe's fine-tuning heads: torch only, no Django
from collection.device import DeviceUnavailable, resolve_device  # noqa: E402
from ranking.finetune.heads import TextStates, TowerHeads  # noqa: E402
from ranking.finetune.training import Anchor, PairSet, TrainingSteps, collection_vectors, text_vectors  # noqa: E402

MODEL_CONFIG = HERE / "device_check_model"


@dataclass(frozen=True)
class StepSizes:
    """Rows one training step reads; the defaults are ranking.finetune.training's, so the check times a real step."""

    batch: int = 256
    negatives: int = 1024
    anchor_images: int = 512
    anchor_texts: int = 256


# --quick checks the code path in seconds on a CPU; its figures are not a fine-tune's.
QUICK_STEP = StepSizes(batch=16, negatives=32, anchor_images=16, anchor_texts=16)
QUERIES_PER_PAIR = 5  # the fine-tune speed bench: 10,000 pairs over 2,000 queries
TEXT_TOKENS = 77


class Unavailable(RuntimeError):
    """The device asked for is not there (exit 2)."""


class FellBack(RuntimeError):
    """The accelerator was asked for, but the work ran (or would run) somewhere else."""


@dataclass
class CheckResult:
    device: str
    device_name: str
    dtype: str
    torch: str
    transformers: str
    cuda_build: str | None
    embed_batch: int
    embed_images: int
    embed_images_per_s: float
    finetune_precision: str
    finetune_pairs: int
    finetune_images: int
    finetune_steps_per_epoch: int
    finetune_steps_timed: int
    finetune_train_s_per_epoch: float
    finetune_eval_s: float
    finetune_s_per_epoch: float
    finetune_extrapolated: bool
    quick: bool
    total_s: float


def resolve(requested: str) -> torch.device:
    """The device by the rule ``LOUPE_DEVICE`` follows (``collection.device``, torch only: one resolver)."""
    try:
        return resolve_device(requested)
    except DeviceUnavailable as exc:
        raise Unavailable(f"--device {requested}: {exc}") from exc


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def require_on(device: torch.device, what: str, *tensors: torch.Tensor) -> None:
    """Raise :class:`FellBack` unless every tensor lives on ``device``'s type."""
    for tensor in tensors:
        if tensor.device.type != device.type:
            raise FellBack(f"{what} is on {tensor.device}, not on {device.type}: the accelerator path fell back.")


def build_model(config_dir: Path):
    from transformers import CLIPConfig, CLIPModel  # noqa: PLC0415 - seconds to import: after the argument check

    torch.manual_seed(0)
    return CLIPModel(CLIPConfig.from_pretrained(config_dir)).eval()


def embedding_rate(model, device: torch.device, dtype: torch.dtype, batch: int, batches: int) -> tuple[float, int]:
    """Images per second through the vision tower and projection, after one warm-up batch."""
    tower = model.vision_model.to(device=device, dtype=dtype)
    projection = model.visual_projection.to(device=device, dtype=dtype)
    require_on(device, "the image tower's weights", *tower.parameters(), *projection.parameters())
    size = model.config.vision_config.image_size
    generator = torch.Generator(device=device).manual_seed(0)
    pixels = torch.randn((batch, 3, size, size), generator=generator, device=device, dtype=dtype)
    with torch.inference_mode():
        vectors = projection(tower(pixel_values=pixels).pooler_output)  # warm-up: kernels, allocator
        require_on(device, "the image vectors", vectors)
        synchronise(device)
        started = time.perf_counter()
        for _ in range(batches):
            vectors = torch.nn.functional.normalize(projection(tower(pixel_values=pixels).pooler_output), dim=-1)
            vectors.float().cpu()  # the vectors leave the device, as they do to be stored
        synchronise(device)
    return batch * batches / (time.perf_counter() - started), batch * batches


def fine_tune_epoch(model, device: torch.device, pairs: int, epoch_seconds: float, sizes: StepSizes) -> dict:
    """Seconds per epoch of the last-blocks fine-tune (layers=1) on ``pairs`` synthetic pairs.

    The steps are ``ranking.finetune.training.TrainingSteps``, the class ``fine_tune_heads`` trains with: the
    heads on ``device`` in fp32 (bf16/fp16 autocast on CUDA), the cached states in host memory as the service
    keeps them, each step's rows moved to the device; then the evaluation pass the epoch ends with.
    """
    heads = TowerHeads(model, layers=1).to(device)
    require_on(device, "the fine-tune heads", *heads.parameters())
    vision, text = model.config.vision_config, model.config.text_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    images, queries = pairs, max(1, pairs // QUERIES_PER_PAIR)
    generator = torch.Generator().manual_seed(1)
    image_states = torch.randn((images, tokens, vision.hidden_size), generator=generator)
    lengths = torch.randint(4, 20, (queries,), generator=generator)
    query_states = TextStates(
        torch.randn((queries, TEXT_TOKENS, text.hidden_size), generator=generator),
        torch.arange(TEXT_TOKENS)[None] < lengths[:, None],
        lengths - 1,
    )
    train = PairSet(
        torch.randint(0, queries, (pairs,), generator=generator).numpy(),
        torch.randperm(images, generator=generator)[:pairs].numpy(),
        (torch.rand(pairs, generator=generator) + 0.5).numpy(),
    )
    anchor = Anchor(
        collection_vectors(heads, image_states),
        query_states,
        text_vectors(heads, query_states),
        images_per_step=sizes.anchor_images,
        texts_per_step=sizes.anchor_texts,
    )
    steps = TrainingSteps(
        heads,
        train,
        query_states,
        image_states,
        float(model.logit_scale.detach().exp()),
        anchor=anchor,
        learning_rate=1e-4,
        negatives=sizes.negatives,
        generator=generator,
        device=device,
    )
    order = torch.randperm(pairs, generator=generator).numpy()
    batches = [order[begin : begin + sizes.batch] for begin in range(0, pairs, sizes.batch)]

    def step(batch) -> None:
        require_on(device, "the loss", steps.step(batch))

    heads.train()
    step(batches[0])  # warm-up
    require_on(device, "the trained heads", *heads.parameters())
    synchronise(device)
    started, timed = time.perf_counter(), 0
    for batch in batches:
        step(batch)
        timed += 1
        synchronise(device)
        if time.perf_counter() - started > epoch_seconds:
            break
    train_s = (time.perf_counter() - started) / timed * len(batches)
    heads.eval()
    started = time.perf_counter()
    collection_vectors(heads, image_states)  # the epoch's evaluation: every collection image and query
    text_vectors(heads, query_states)
    synchronise(device)
    eval_s = time.perf_counter() - started
    return {
        "finetune_precision": steps.label,
        "finetune_pairs": pairs,
        "finetune_images": images,
        "finetune_steps_per_epoch": len(batches),
        "finetune_steps_timed": timed,
        "finetune_train_s_per_epoch": train_s,
        "finetune_eval_s": eval_s,
        "finetune_s_per_epoch": train_s + eval_s,
        "finetune_extrapolated": timed < len(batches),
    }


def run_check(args: argparse.Namespace) -> CheckResult:
    import transformers  # noqa: PLC0415

    started = time.perf_counter()
    device = resolve(args.device)
    half = torch.bfloat16 if args.dtype == "bf16" else torch.float16
    dtype = torch.float32 if device.type == "cpu" else half
    if device.type == "cpu":
        torch.set_num_threads(args.threads or torch.get_num_threads())
    model = build_model(args.model_config)
    # The fine-tune trains fp32 copies of the last blocks; take them before the tower is cast for embedding.
    finetune = fine_tune_epoch(model, device, args.pairs, args.epoch_seconds, QUICK_STEP if args.quick else StepSizes())
    batch = args.batch or (256 if device.type == "cuda" else 16)
    rate, embedded = embedding_rate(model, device, dtype, batch, args.batches)
    return CheckResult(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        dtype=str(dtype).removeprefix("torch."),
        torch=torch.__version__,
        transformers=transformers.__version__,
        cuda_build=torch.version.cuda,
        embed_batch=batch,
        embed_images=embedded,
        embed_images_per_s=rate,
        quick=args.quick,
        total_s=time.perf_counter() - started,
        **finetune,
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16", help="embedding precision on a GPU")
    parser.add_argument(
        "--quick", action="store_true", help="seconds on a CPU: 128 pairs, small steps (checks the path, not figures)"
    )
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=0, help="images per embedding batch (default 256 GPU, 16 CPU)")
    parser.add_argument("--batches", type=int, default=0, help="timed embedding batches (default 20 GPU, 4 CPU)")
    parser.add_argument("--epoch-seconds", type=float, default=120.0, help="time the epoch's steps this long at most")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--model-config", type=Path, default=MODEL_CONFIG)
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs = min(args.pairs, 128)
        args.batch = args.batch or 4
        args.batches = args.batches or 2
        args.epoch_seconds = min(args.epoch_seconds, 5.0)
    if not args.batches:
        args.batches = 20 if args.device != "cpu" and torch.cuda.is_available() else 4
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        result = run_check(args)
    except Unavailable as exc:
        print(f"device_check: {exc}", file=sys.stderr)
        return 2
    except FellBack as exc:
        print(f"device_check: FAILED: {exc}", file=sys.stderr)
        return 3
    print(f"device {result.device} ({result.device_name}), {result.dtype}, torch {result.torch}")
    rate = f"{result.embed_images_per_s:.1f} images/s"
    print(f"embedding: {rate} (batch {result.embed_batch}, {result.embed_images} images)")
    share = f", extrapolated from {result.finetune_steps_timed} of {result.finetune_steps_per_epoch} steps"
    print(
        f"fine-tune, last-blocks mode: {result.finetune_s_per_epoch:.1f} s per epoch of {result.finetune_pairs} pairs"
        f" (training {result.finetune_train_s_per_epoch:.1f} s{share if result.finetune_extrapolated else ''},"
        f" evaluation {result.finetune_eval_s:.1f} s)"
    )
    print(f"check took {result.total_s:.1f} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({**asdict(result), "command": " ".join(sys.argv)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the encoder and fine-tuning run: ``LOUPE_DEVICE=auto|cpu|cuda|mps``.

``auto`` takes an accelerator when torch sees one (CUDA first, then Apple's MPS) and the CPU otherwise, so
the same settings serve a laptop, a CI runner and a GPU box. Asking for an accelerator that is not there
is a configuration error raised at the first use, with what torch does see: silently running a GPU
deployment on the CPU would be ~100x slower with nothing saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# A generous bound on inference memory per image: in inference mode one layer's activations live at a
# time, well under 1 MB per image for ViT-B/32 in half precision (50 tokens x 3072 MLP units x 2 bytes,
# plus attention). Not measured on a GPU here (none was available); a quarter of the free memory leaves
# room for the weights, the allocator's cache and a second process.
_BYTES_PER_IMAGE = 10 * 1024 * 1024
_MAX_GPU_BATCH = 512


class DeviceUnavailable(RuntimeError):
    """LOUPE_DEVICE names an accelerator this machine (or this torch build) does not have."""


@dataclass(frozen=True)
class Placement:
    """A resolved device and the floating-point type models run in there."""

    device: torch.device
    dtype: torch.dtype

    @property
    def is_accelerator(self) -> bool:
        return self.device.type != "cpu"

    @property
    def label(self) -> str:
        return f"{self.device.type} ({str(self.dtype).removeprefix('torch.')})"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(requested: str) -> torch.device:
    """The torch device for a LOUPE_DEVICE value; raises :class:`DeviceUnavailable` for a missing accelerator."""
    name = (requested or "auto").strip().lower()
    if name not in DEVICE_CHOICES:
        raise DeviceUnavailable(f"LOUPE_DEVICE={requested!r} is not one of {', '.join(DEVICE_CHOICES)}.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda or "none (a CPU-only build)"
        raise DeviceUnavailable(
            f"LOUPE_DEVICE=cuda, but torch sees no CUDA device (torch {torch.__version__}, CUDA {build}). "
            "Install the CUDA build with `bin/setup --cuda`, check `nvidia-smi`, or set LOUPE_DEVICE=auto or cpu."
        )
    if name == "mps" and not _mps_available():
        raise DeviceUnavailable("LOUPE_DEVICE=mps, but torch sees no Apple MPS device; set LOUPE_DEVICE=auto or cpu.")
    return torch.device(name)


def placement_for(device: torch.device) -> Placement:
    """fp32 on the CPU; bf16 on GPUs that have it (no overflow: fp32's exponent), fp16 on the others and MPS."""
    if device.type == "cpu":
        return Placement(device, torch.float32)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Placement(device, torch.bfloat16)
    return Placement(device, torch.float16)


def resolve_placement(requested: str, *, full_precision: bool = False) -> Placement:
    """``full_precision``: fp32 on any device (fine-tuning trains from, and writes, the stored weights)."""
    device = resolve_device(requested)
    return Placement(device, torch.float32) if full_precision else placement_for(device)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The type training autocasts to on ``device``, or None to train in fp32.

    Mixed precision on CUDA only, in the type embedding uses there (bf16 where the GPU has it, else fp16
    with a gradient scaler: fp16's 5-bit exponent flushes small gradients to zero, bf16 has fp32's). The
    CPU trains in fp32, so CI's fine-tunes stay bit for bit what they were; MPS too (autocast there covers
    fewer operations in torch 2.x, and no MPS machine was at hand to measure it).
    """
    return placement_for(device).dtype if device.type == "cuda" else None


def embedding_batch_size(placement: Placement, cpu_batch: int) -> int:
    """Images per forward pass: the configured CPU batch, or on a GPU what a quarter of its free memory holds."""
    if placement.device.type != "cuda":
        return cpu_batch
    free, _total = torch.cuda.mem_get_info(placement.device)
    fits = int(free // 4 // _BYTES_PER_IMAGE)
    return max(cpu_batch, min(_MAX_GPU_BATCH, fits))

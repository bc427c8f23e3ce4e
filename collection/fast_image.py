"""The image tower on the CPU with ONNX Runtime, in int8 when it agrees with PyTorch on the collection's images.

Embedding a collection is the slowest thing Loupe does. On 2 cores with ViT-B/32 (batch 16, issue 22):
eager PyTorch 9.9 images/s, ONNX Runtime fp32 12.6, dynamic int8 35.0. As for the text towers
(``collection.fast_text``), each weights fingerprint is exported once to ``<var>/onnx/image-<key>.onnx``
and quantised beside it; a fine-tuned version has another fingerprint, hence its own files.

Whether int8 may serve is decided on the first batch of at least ``MIN_SAMPLE`` images an encoder
embeds (the collection's own images, not a synthetic probe): PyTorch, the fp32 session and the int8
session embed that batch; int8 serves if every image stays within ``MIN_COSINE_INT8`` of PyTorch, else
fp32 if it stays within ``MIN_COSINE``, else PyTorch. The verdict is logged and written beside the
model (``<key>.check.json``), which the admin shows on the encoder version.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from collection.fast_text import MIN_COSINE, MIN_COSINE_INT8, cpu_session, quantized_once

logger = logging.getLogger(__name__)

# Fewer images than this say little about a tower's error; smaller batches (a search by example) stay
# on PyTorch until a batch this big (an embedding run) has been checked.
MIN_SAMPLE = 8
_export_lock = threading.Lock()


class PooledImageTower(torch.nn.Module):
    """pixel_values -> (unit vectors, pooled vision outputs), for export.

    The pooled outputs are what enters CLIP's visual projection; SigLIP and ALIGN have none, so theirs are
    the image features before normalisation (``collection.encoders.Encoder.encode_pixels`` does the same).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._projected = hasattr(model, "visual_projection")

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._projected:
            features = self.model.get_image_features(pixel_values=pixel_values)
            return torch.nn.functional.normalize(features, dim=-1), features
        pooled = self.model.vision_model(pixel_values=pixel_values).pooler_output
        vectors = torch.nn.functional.normalize(self.model.visual_projection(pooled), dim=-1)
        return vectors, pooled


class OnnxImageTower:
    """An ONNX Runtime session over an exported image tower; call it with NumPy pixel values."""

    def __init__(self, path: Path, threads: int, precision: str = "fp32") -> None:
        self.path = path
        self.precision = precision
        self._session = cpu_session(path, threads)

    def __call__(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors, pooled = self._session.run(None, {"pixel_values": np.ascontiguousarray(pixel_values, np.float32)})
        return np.asarray(vectors, dtype=np.float32), np.asarray(pooled, dtype=np.float32)


@dataclass(frozen=True)
class ImageTowerCheck:
    """Which runtime serves an image tower, and the agreement with PyTorch that decided it."""

    runtime: str  # "pytorch", "onnxruntime" or "onnxruntime-int8"
    sample_images: int
    min_cosine_fp32: float | None
    min_cosine_int8: float | None
    reason: str
    checked_at: float

    def save(self, path: Path) -> None:
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps(asdict(self), indent=2))
        os.replace(partial, path)


def tower_key(vision_fingerprint: str) -> str:
    return f"image-{vision_fingerprint[:24]}"


def recorded_check(cache_dir: Path, vision_fingerprint: str) -> dict | None:
    """The last verdict written for this tower (for the admin), or None if it was never checked."""
    path = cache_dir / f"{tower_key(vision_fingerprint)}.check.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The lowest cosine between matching rows of two sets of unit vectors."""
    return float(np.min(np.sum(a * b, axis=1)))


def choose_image_tower(
    tower: PooledImageTower,
    pixel_values: np.ndarray,
    eager_vectors: np.ndarray,
    *,
    key: str,
    cache_dir: Path,
    int8: bool,
    threads: int,
) -> tuple[OnnxImageTower | None, ImageTowerCheck]:
    """Export (once), quantise (once) and check the tower on a sample; the session to serve, None for PyTorch."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.onnx"
    fp32_cosine = int8_cosine = None
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        return None, _verdict(key, cache_dir, "pytorch", pixel_values, None, None, "onnxruntime is not installed")
    try:
        with _export_lock:
            if not path.is_file():
                _export(tower, pixel_values[:2], path)
        fast = OnnxImageTower(path, threads)
        fp32_cosine = min_cosine(eager_vectors, fast(pixel_values)[0])
    except Exception as exc:  # noqa: BLE001 - any failure keeps the (correct, slower) PyTorch path
        reason = f"export failed ({type(exc).__name__}: {exc})"
        return None, _verdict(key, cache_dir, "pytorch", pixel_values, None, None, reason)
    if fp32_cosine < MIN_COSINE:
        reason = f"fp32 ONNX differs from PyTorch (cosine {fp32_cosine:.5f} < {MIN_COSINE})"
        return None, _verdict(key, cache_dir, "pytorch", pixel_values, fp32_cosine, None, reason)
    if not int8:
        return fast, _verdict(key, cache_dir, "onnxruntime", pixel_values, fp32_cosine, None, "int8 is turned off")
    try:
        quantized = OnnxImageTower(quantized_once(path), threads, precision="int8")
        int8_cosine = min_cosine(eager_vectors, quantized(pixel_values)[0])
    except Exception as exc:  # noqa: BLE001 - the fp32 session serves instead
        reason = f"int8 unavailable ({type(exc).__name__}: {exc})"
        return fast, _verdict(key, cache_dir, "onnxruntime", pixel_values, fp32_cosine, None, reason)
    if int8_cosine < MIN_COSINE_INT8:
        reason = f"int8 cosine {int8_cosine:.4f} to PyTorch is below {MIN_COSINE_INT8}"
        return fast, _verdict(key, cache_dir, "onnxruntime", pixel_values, fp32_cosine, int8_cosine, reason)
    reason = f"int8 within {MIN_COSINE_INT8} of PyTorch"
    return quantized, _verdict(key, cache_dir, "onnxruntime-int8", pixel_values, fp32_cosine, int8_cosine, reason)


def _verdict(key, cache_dir, runtime, pixel_values, fp32, int8, reason) -> ImageTowerCheck:
    check = ImageTowerCheck(runtime, len(pixel_values), fp32, int8, reason, time.time())
    log = logger.info if runtime == "onnxruntime-int8" else logger.warning
    log(
        "Image tower %s served by %s on %d images checked (min cosine fp32 %s, int8 %s): %s.",
        key,
        runtime,
        check.sample_images,
        "-" if fp32 is None else f"{fp32:.5f}",
        "-" if int8 is None else f"{int8:.4f}",
        reason,
    )
    try:
        check.save(cache_dir / f"{key}.check.json")
    except OSError as exc:
        logger.warning("Could not record the image tower check for %s: %s", key, exc)
    return check


def _export(tower: PooledImageTower, sample: np.ndarray, path: Path) -> None:
    """Export with a dynamic batch axis; written to a temporary name, then renamed (atomic)."""
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    tower.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes, checked by the agreement test instead
        torch.onnx.export(
            tower,
            (torch.from_numpy(np.ascontiguousarray(sample, np.float32)),),
            str(partial),
            input_names=["pixel_values"],
            output_names=["vectors", "pooled"],
            dynamic_axes={"pixel_values": {0: "batch"}, "vectors": {0: "batch"}, "pooled": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, path)

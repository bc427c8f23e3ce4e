"""The encoder: any CLIP-family model from ``transformers`` (CLIP, SigLIP, ALIGN, ...).

A model is named by a Hugging Face hub id or a local folder; both load through the same
``from_pretrained`` path. Vectors are L2-normalised float32, so cosine similarity is a dot product.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from django.conf import settings
from huggingface_hub import constants, try_to_load_from_cache
from PIL import Image as PILImage

from collection.demo_model import build_demo_model
from collection.device import Placement, resolve_placement
from collection.fast_image import MIN_SAMPLE, OnnxImageTower, PooledImageTower, choose_image_tower, tower_key
from collection.fast_text import AcceleratedText, OneTextTokenizer, OnnxTextTower, PooledTextTower, accelerate
from collection.image_input import ClipImageInput, image_input_for
from collection.model_card import MODEL_CARD_FILE
from collection.processor_input import bounded_for_processor

logger = logging.getLogger(__name__)

# A model folder holding this file describes itself; the demo model marks itself as such.
DEMO_NOTICE = (
    "Results come from an offline demo model with random weights: they have no semantic quality. "
    "Set LOUPE_CLIP_MODEL to a hub id (with internet) or a local model folder for real search."
)


class EncoderLoadError(RuntimeError):
    """The configured model could not be loaded (no network, wrong path, not a CLIP-family model)."""


def normalise_query(text: str) -> str:
    """The cache key of a query: surrounding and repeated white space do not change its meaning."""
    return " ".join(text.split())


def configure_torch_threads(threads: int = 0) -> int:
    """Use one intra-op thread per core unless told otherwise; return the number in use."""
    wanted = threads if threads > 0 else (os.cpu_count() or 1)
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


class QueryVectorCache:
    """An LRU cache of query vectors keyed by the white-space-folded query; vectors are read-only."""

    def __init__(self, encode_texts, size: int) -> None:
        self._encode_texts = encode_texts
        self._cached = functools.lru_cache(maxsize=size)(self._encode_one)

    def _encode_one(self, text: str) -> np.ndarray:
        vector = self._encode_texts([text])[0]
        vector.setflags(write=False)
        return vector

    def get(self, text: str) -> np.ndarray:
        return self._cached(normalise_query(text))

    def info(self) -> functools._CacheInfo:
        return self._cached.cache_info()

    def clear(self) -> None:
        self._cached.cache_clear()


class Encoder(AcceleratedText):
    """Batched text and image encoding for one loaded model, with an LRU cache for queries."""

    def __init__(
        self,
        model_ref: str,
        *,
        query_cache_size: int = 4096,
        local_files_only: bool = False,
        device: str | None = None,
        full_precision: bool = False,
    ) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer  # noqa: PLC0415 - seconds to import: only when a model loads

        self.model_ref = model_ref
        local_files_only = offline_only(model_ref, local_files_only)
        try:
            self.model = AutoModel.from_pretrained(model_ref, local_files_only=local_files_only)
            self.tokenizer = AutoTokenizer.from_pretrained(model_ref, local_files_only=local_files_only)
            self.image_processor = AutoImageProcessor.from_pretrained(
                model_ref, local_files_only=local_files_only, use_fast=False
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            # ImportError: a tokenizer needing a package Loupe does not install (released SigLIP: sentencepiece).
            raise EncoderLoadError(f"Could not load model {model_ref!r}: {exc}") from exc
        if not (hasattr(self.model, "get_text_features") and hasattr(self.model, "get_image_features")):
            raise EncoderLoadError(f"{model_ref!r} is not a text-image model (no get_text/image_features).")
        self.model.eval()
        # CLIPImageProcessor's steps without its overhead, equal to it bit for bit (collection.image_input);
        # LOUPE_FAST_IMAGE_INPUT=False keeps the processor itself (the reference, and the path before issue 22).
        self._image_input: ClipImageInput | None = (
            image_input_for(self.image_processor) if settings.LOUPE_FAST_IMAGE_INPUT else None
        )
        # DeviceUnavailable (a cuda request without CUDA) is raised here, when the model first loads.
        # full_precision: fp32 even on an accelerator (the fine-tune's encoder: its weights are written back).
        self.placement: Placement = resolve_placement(
            settings.LOUPE_DEVICE if device is None else device, full_precision=full_precision
        )
        if self.placement.is_accelerator:
            # Fingerprints name the stored fp32 weights: taken before the cast to half precision.
            _fingerprints = (self.fingerprint, hasattr(self.model, "vision_model") and self.vision_tower_fingerprint)
            self.model.to(device=self.placement.device, dtype=self.placement.dtype)
        self._fast_image: OnnxImageTower | None = None
        self._image_check: dict | None = None  # how to check the ONNX image tower, until it has been
        self.image_check = None  # the verdict (collection.fast_image.ImageTowerCheck) once checked
        card = self._read_model_card(model_ref)
        self.is_demo: bool = bool(card.get("demo", False))
        self.name: str = card.get("name") or model_ref
        # SigLIP was trained on fixed-length text; CLIP and ALIGN on padded batches.
        self._text_padding = "max_length" if self.model.config.model_type.startswith("siglip") else True
        self._max_text_tokens = min(getattr(self.tokenizer, "model_max_length", 77) or 77, 512)
        self._lock = threading.Lock()
        self._fast_text: OnnxTextTower | None = None
        # SigLIP pads every text to a fixed length: the one-text tokenizer (no padding) would not match it.
        self._one_text = (
            OneTextTokenizer.for_tokenizer(self.tokenizer, self._max_text_tokens)
            if (self._text_padding is True)
            else None
        )
        self.dimension: int = int(self.encode_texts(["a photo"]).shape[1])
        self.queries = QueryVectorCache(self.encode_texts, query_cache_size)

    @staticmethod
    def _read_model_card(model_ref: str) -> dict:
        path = Path(model_ref) / MODEL_CARD_FILE
        if path.is_file():
            return json.loads(path.read_text())
        return {}

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    # --- text ---------------------------------------------------------------------------------------
    def _tokenize(self, texts: list[str], tensors: str = "pt") -> dict:
        return self.tokenizer(
            texts, padding=self._text_padding, truncation=True, max_length=self._max_text_tokens, return_tensors=tensors
        )

    def _text_tower(self) -> PooledTextTower:
        return PooledTextTower(
            lambda ids, mask: self.model.get_text_features(input_ids=ids, attention_mask=mask), self.model
        )

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Encode texts into an (n, d) array of unit vectors."""
        out = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            if self._fast_text is not None:
                inputs = self._fast_inputs(batch)
                out.append(self._fast_text(inputs["input_ids"], inputs["attention_mask"]))
                continue
            with torch.inference_mode():
                tokens = {name: value.to(self.placement.device) for name, value in self._tokenize(batch).items()}
                features = self.model.get_text_features(**tokens)
            out.append(unit_rows(features))
        return np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """A query's vector, from the LRU cache when the same query was seen before (read-only)."""
        return self.queries.get(text)

    # --- images ---------------------------------------------------------------------------------------
    def encode_images(self, images: Sequence[PILImage.Image], batch_size: int = 32) -> np.ndarray:
        """Encode RGB images into an (n, d) array of unit vectors."""
        return self.encode_images_with_pooled(images, batch_size)[0]

    @property
    def has_projection_heads(self) -> bool:
        """CLIP-style: image features are visual_projection(vision_model(...).pooler_output)."""
        return hasattr(self.model, "vision_model") and hasattr(self.model, "visual_projection")

    @functools.cached_property
    def vision_tower_fingerprint(self) -> str:
        """sha256 of the vision tower alone: the key of its cached pooled outputs (see ranking.finetune.towers)."""
        return weights_fingerprint(self.model.vision_model)

    def pixels(self, image: PILImage.Image) -> np.ndarray:
        """One image as the model's input, (3, H, W) float32: the work a decode pool does ahead of the encoder."""
        if self._image_input is not None:
            return self._image_input(image)
        bounded = bounded_for_processor(image, self.image_processor)
        # PIL images are height x width x channels; said explicitly, since the processor guesses wrong for
        # tiny images (a 3-pixel-high image looks channels-first to it).
        inputs = self.image_processor(images=[bounded], return_tensors="np", input_data_format="channels_last")
        return inputs["pixel_values"][0]

    def encode_images_with_pooled(
        self, images: Sequence[PILImage.Image], batch_size: int = 32, *, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit vectors and the vision tower's pooled outputs from the same pass: what enters CLIP's visual
        projection, or for models without one (SigLIP, ALIGN) the image features before normalisation.

        ``exact``: eager PyTorch whatever serves (the fine-tuning cache of pooled outputs wants those).
        """
        out, pooled_out = [], []
        for start in range(0, len(images), batch_size):
            pixel_values = np.stack([self.pixels(image) for image in images[start : start + batch_size]])
            vectors, pooled = self.encode_pixels(pixel_values, exact=exact)
            out.append(vectors)
            pooled_out.append(pooled)
        vectors = np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)
        complete = bool(pooled_out) and all(p is not None for p in pooled_out)
        return vectors, (np.concatenate(pooled_out) if complete else None)

    def encode_pixels(self, pixel_values: np.ndarray, *, exact: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Vectors (and pooled outputs, when they are PyTorch's to within fp32 rounding) of a stacked batch.

        int8 pooled outputs are not returned: they would enter the fine-tuning cache, keyed by the fp32
        tower, as if exact.
        """
        if self._fast_image is not None and not exact:
            vectors, pooled = self._fast_image(pixel_values)
            return vectors, (None if self._fast_image.precision == "int8" else pooled)
        vectors, pooled = self._eager_pixels(pixel_values)
        if self._image_check is not None and len(pixel_values) >= MIN_SAMPLE:
            self._check_image_tower(pixel_values, vectors)
        return vectors, pooled

    def _eager_pixels(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        tensor = torch.from_numpy(pixel_values).to(device=self.placement.device, dtype=self.placement.dtype)
        with torch.inference_mode():
            if self.has_projection_heads:
                pooled = self.model.vision_model(pixel_values=tensor).pooler_output
                return unit_rows(self.model.visual_projection(pooled)), pooled.float().cpu().numpy()
            # SigLIP (attention-pooling head) and ALIGN (mean-pooled EfficientNet) have no image projection:
            # their features are the tower's pooled output itself.
            features = self.model.get_image_features(pixel_values=tensor)
            return unit_rows(features), features.float().cpu().numpy()

    # --- the image tower on ONNX Runtime ----------------------------------------------------------------
    def accelerate_images(self, cache_dir: Path, *, int8: bool = True, threads: int = 0) -> bool:
        """Let the ONNX Runtime (int8 when close enough) image tower serve once a batch of the collection's
        images has checked it (collection.fast_image); False on a GPU, where PyTorch is the fast path."""
        if self.placement.is_accelerator:
            return False
        self._image_check = {"cache_dir": cache_dir, "int8": int8, "threads": threads or torch.get_num_threads()}
        return True

    def _check_image_tower(self, pixel_values: np.ndarray, eager_vectors: np.ndarray) -> None:
        with self._lock:
            if self._image_check is None:
                return
            options, self._image_check = self._image_check, None
            self._fast_image, self.image_check = choose_image_tower(
                PooledImageTower(self.model),
                pixel_values,
                eager_vectors,
                key=tower_key(self.vision_tower_fingerprint),
                **options,
            )

    @property
    def image_runtime(self) -> str:
        if self._fast_image is None:
            return f"pytorch on {self.placement.label}"
        return "onnxruntime-int8" if self._fast_image.precision == "int8" else "onnxruntime"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the weights, in parameter-name order: independent of file format."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def offline_only(model_ref: str, local_files_only: bool = False) -> bool:
    """Whether loading must not touch the network: a folder, a hub id already cached, or no hub.

    Raises :class:`EncoderLoadError` at once for a path-like reference that is not a folder.
    """
    if model_ref.startswith(("/", "./", "../", "~")) and not Path(model_ref).expanduser().is_dir():
        raise EncoderLoadError(f"Could not load model {model_ref!r}: there is no such folder.")
    if local_files_only or Path(model_ref).is_dir():
        return local_files_only
    return _in_hub_cache(model_ref) or not _hub_reachable()


def _in_hub_cache(model_ref: str) -> bool:
    """Whether the hub id is already downloaded (then loading needs no network at all)."""

    try:
        return isinstance(try_to_load_from_cache(model_ref, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick probe of the hub, so that a machine without internet fails in seconds, not a minute
    of retries; offline mode (HF_HUB_OFFLINE=1) counts as unreachable."""

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def unit_rows(features: torch.Tensor) -> np.ndarray:
    array = features.detach().float().cpu().numpy()
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return (array / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class EncoderChoice:
    """Which model serves and why: the configured one, or the demo model with the reason."""

    encoder: Encoder
    requested_ref: str
    fallback_reason: str = ""

    @property
    def fell_back(self) -> bool:
        return bool(self.fallback_reason)


def load_configured_encoder(
    model_ref: str, *, demo_model_dir: Path, allow_fallback: bool, query_cache_size: int = 4096
) -> EncoderChoice:
    """Load the configured model; when that fails and fallback is allowed, the demo model.

    The fallback is never silent: the reason is logged as an error and travels with the choice,
    and the demo model's own card marks every result it serves as demo quality.
    """
    try:
        return EncoderChoice(Encoder(model_ref, query_cache_size=query_cache_size), model_ref)
    except EncoderLoadError as exc:
        if not allow_fallback:
            raise
        reason = str(exc)
    if not (demo_model_dir / MODEL_CARD_FILE).is_file():
        build_demo_model(demo_model_dir)
    logger.error(
        "Model %r could not be loaded (%s). Serving the offline demo model from %s instead. %s",
        model_ref,
        reason,
        demo_model_dir,
        DEMO_NOTICE,
    )
    encoder = Encoder(str(demo_model_dir), query_cache_size=query_cache_size, local_files_only=True)
    return EncoderChoice(encoder, model_ref, reason)


_choice: EncoderChoice | None = None
_choice_lock = threading.Lock()


def serving_encoder() -> EncoderChoice:
    """The process-wide encoder for the configured model (loaded once, on first use)."""
    global _choice
    if _choice is None:
        with _choice_lock:
            if _choice is None:
                configure_torch_threads(settings.LOUPE_TORCH_THREADS)
                choice = load_configured_encoder(
                    settings.LOUPE_CLIP_MODEL,
                    demo_model_dir=settings.LOUPE_DEMO_MODEL_DIR,
                    allow_fallback=settings.LOUPE_ENCODER_FALLBACK,
                    query_cache_size=settings.LOUPE_QUERY_CACHE_SIZE,
                )
                accelerate(choice.encoder)
                _choice = choice
    return _choice


def loaded_serving_choice() -> EncoderChoice | None:
    """The serving encoder if this process has loaded it (never loads it)."""
    return _choice


def reset_serving_encoder() -> None:
    """Forget the loaded encoder (tests, or after the configured model changed)."""
    global _choice
    with _choice_lock:
        _choice = None

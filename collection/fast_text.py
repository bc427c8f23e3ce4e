"""Text towers run with ONNX Runtime: the same weights, a fraction of eager PyTorch's per-query cost.

A query is a handful of tokens, so eager ``transformers`` spends most of its time in Python module
calls, not arithmetic. Each text tower (the CLIP text tower, the sentence model of the text channel)
is exported once per weights fingerprint to ``<var>/onnx/<key>.onnx`` and served by an ONNX Runtime
session. Before it is used, its vectors are compared with eager PyTorch on probe texts; if they
differ (cosine below ``MIN_COSINE``) or anything fails, the eager path stays and the reason is logged.
Weights that change (a fine-tuned encoder) have another fingerprint, hence another file.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from django.conf import settings
from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
# int8 weights (dynamic quantisation) read a quarter of the bytes per query; a query's handful of tokens
# makes the text tower memory-bound, so this is where most of its speed comes from. They serve only
# when every probe's vector stays within this cosine of eager PyTorch's (the bar: 0.99).
MIN_COSINE_INT8 = 0.99
PROBE_TEXTS = ["a photo of a dog", "two people riding bicycles down a busy city street at night", "x"]
INT8_PROBE_TEXTS = [
    *PROBE_TEXTS,
    "",
    "red",
    "a close-up photo of a tabby cat sleeping on a laptop keyboard",
    "NOT a cat",
    "3 apples and 2 oranges on a wooden table",
    "Eiffel Tower at sunset, Paris",
    "a diagram of the human heart",
    "🐶 dog emoji",
    "black and white photograph of an old train station in the snow",
]
_export_lock = threading.Lock()


class PooledTextTower(torch.nn.Module):
    """(input_ids, attention_mask) -> unit vectors, for export. ``features`` maps the inputs to raw vectors."""

    def __init__(self, features: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], owner: torch.nn.Module) -> None:
        super().__init__()
        self.owner = owner  # registered so export sees the weights as parameters
        self._features = features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self._features(input_ids, attention_mask), dim=-1)


def cpu_session(path: Path, threads: int):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads that do not spin when idle."""
    import onnxruntime  # noqa: PLC0415 - native libraries: only when a tower serves

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # By default idle pool threads spin for a while after each run. Between queries that steals the
    # cores PostgreSQL and the other text tower need (measured: +15 ms per search on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxTextTower:
    """An ONNX Runtime session over an exported text tower; call it with NumPy token arrays."""

    def __init__(self, path: Path, threads: int, precision: str = "fp32") -> None:
        self.path = path
        self.precision = precision
        self._session = cpu_session(path, threads)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        return np.ascontiguousarray(self._session.run(None, feeds)[0], dtype=np.float32)


class OneTextTokenizer:
    """Tokenises a single text with the fast tokenizer's Rust backend, skipping ``transformers``' batch machinery.

    A search encodes one query, and the ``transformers`` call around the Rust tokenizer costs ~1 ms of
    Python per query (measured in the search API profile) for what the backend does in microseconds.
    A private copy of the backend is configured once (truncation to ``max_length``, no padding: one text
    needs none), so the shared tokenizer's per-call settings are never touched. A test pins its output
    to the ``transformers`` call.
    """

    def __init__(self, hf_tokenizer, max_length: int) -> None:
        backend = hf_tokenizer.backend_tokenizer
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)

    @classmethod
    def for_tokenizer(cls, hf_tokenizer, max_length: int) -> OneTextTokenizer | None:
        """None for a slow (pure Python) tokenizer, which has no backend to call."""
        if not getattr(hf_tokenizer, "is_fast", False):
            return None
        return cls(hf_tokenizer, max_length)

    def __call__(self, text: str) -> dict[str, np.ndarray]:
        encoding = self._tokenizer.encode(text)
        return {
            "input_ids": np.asarray([encoding.ids], dtype=np.int64),
            "attention_mask": np.asarray([encoding.attention_mask], dtype=np.int64),
        }


class AcceleratedText:
    """Mixin for encoders with a text tower: ``accelerate_text`` swaps in ONNX Runtime when it matches.

    The encoder provides ``_text_tower()`` (a PooledTextTower), ``_tokenize(texts, tensors)``,
    ``fingerprint``, ``onnx_kind`` and a ``queries`` cache, and calls ``_fast_text`` when it is set.
    """

    onnx_kind = "text"
    _fast_text: OnnxTextTower | None = None
    _one_text: OneTextTokenizer | None = None

    def _fast_inputs(self, batch: list[str]) -> dict[str, np.ndarray]:
        """NumPy tokens for the ONNX session: a single text through the backend tokenizer directly."""
        if len(batch) == 1 and self._one_text is not None:
            return self._one_text(batch[0])
        return self._tokenize(batch, "np")

    def accelerate_text(self, cache_dir: Path, *, int8: bool = False, threads: int = 1) -> bool:
        """Serve text encoding from ONNX Runtime when it matches PyTorch (int8 when asked and close enough).

        ``threads``: ONNX Runtime intra-op threads. One query is a few tokens: a second thread buys ~0.2 ms
        and costs a core that PostgreSQL and the other text tower need (docs/performance.md).
        """
        key = f"{self.onnx_kind}-{self.fingerprint[:24]}"
        self._fast_text = accelerated_text_tower(
            self._text_tower(), lambda texts: self._tokenize(texts, "np"), key, cache_dir, int8=int8, threads=threads
        )
        self.queries.clear()  # vectors cached before came from PyTorch; keep one source
        return self._fast_text is not None

    @property
    def text_runtime(self) -> str:
        if self._fast_text is None:
            return "pytorch"
        return "onnxruntime-int8" if self._fast_text.precision == "int8" else "onnxruntime"


def onnx_cache_dir() -> Path:
    return Path(settings.VAR_DIR) / "onnx"


def accelerate(encoder: AcceleratedText) -> None:
    """Serve the encoder's towers with ONNX Runtime, as the settings say (exported once per weights).

    The image tower is checked on the first batch of the collection it embeds (collection.fast_image)."""

    placement = getattr(encoder, "placement", None)
    if placement is not None and placement.is_accelerator:
        return  # ONNX Runtime serves from the CPU; on a GPU the PyTorch model is the fast path
    if settings.LOUPE_ONNX_TEXT:
        encoder.accelerate_text(
            onnx_cache_dir(), int8=settings.LOUPE_TEXT_INT8, threads=settings.LOUPE_TEXT_TOWER_THREADS
        )
    if settings.LOUPE_ONNX_IMAGE and hasattr(encoder, "accelerate_images"):
        encoder.accelerate_images(
            onnx_cache_dir(), int8=settings.LOUPE_IMAGE_INT8, threads=settings.LOUPE_IMAGE_TOWER_THREADS
        )


def accelerated_text_tower(
    tower: PooledTextTower,
    tokenize: Callable[[list[str]], dict],
    key: str,
    cache_dir: Path | None = None,
    *,
    int8: bool = False,
    threads: int = 1,
) -> OnnxTextTower | None:
    """The ONNX Runtime version of ``tower``, checked against eager PyTorch; None when it cannot be used.

    ``tokenize`` turns a list of texts into a dict with NumPy ``input_ids`` and ``attention_mask``. With
    ``int8`` the int8 version serves if it stays within ``MIN_COSINE_INT8`` of PyTorch, else the fp32 one.
    """
    try:
        import onnxruntime  # noqa: F401, PLC0415
    except ImportError:
        logger.info("onnxruntime is not installed: text encoding stays on eager PyTorch.")
        return None
    folder = cache_dir or onnx_cache_dir()
    path = folder / f"{key}.onnx"
    try:
        with _export_lock:
            if not path.is_file():
                _export(tower, tokenize, path)
        fast = OnnxTextTower(path, threads)
        cosine = min_cosine_to_eager(tower, tokenize, fast, PROBE_TEXTS)
    except Exception as exc:  # noqa: BLE001 - any failure keeps the (correct, slower) eager path
        logger.warning("ONNX text tower %s unavailable (%s: %s); using eager PyTorch.", key, type(exc).__name__, exc)
        return None
    if cosine < MIN_COSINE:
        logger.warning("ONNX text tower %s differs from PyTorch (cosine %.5f); using eager PyTorch.", key, cosine)
        return None
    if int8:
        quantized = _int8_tower(tower, tokenize, path, threads)
        if quantized is not None:
            return quantized
    return fast


def min_cosine_to_eager(
    tower: PooledTextTower, tokenize: Callable[[list[str]], dict], fast: OnnxTextTower, texts: list[str]
) -> float:
    """The lowest cosine between eager PyTorch's vector and the ONNX session's, over ``texts``."""
    probes = tokenize(texts)
    with torch.inference_mode():
        eager = tower(torch.from_numpy(probes["input_ids"]), torch.from_numpy(probes["attention_mask"])).numpy()
    return float(np.min(np.sum(eager * fast(probes["input_ids"], probes["attention_mask"]), axis=1)))


def _int8_tower(
    tower: PooledTextTower, tokenize: Callable[[list[str]], dict], path: Path, threads: int
) -> OnnxTextTower | None:
    """The int8 (dynamically quantised) version of an exported tower, if its vectors stay close to PyTorch's."""
    try:
        fast = OnnxTextTower(quantized_once(path), threads, precision="int8")
        cosine = min_cosine_to_eager(tower, tokenize, fast, INT8_PROBE_TEXTS)
    except Exception as exc:  # noqa: BLE001 - the fp32 session serves instead
        logger.warning("int8 text tower %s unavailable (%s: %s); serving fp32.", path.stem, type(exc).__name__, exc)
        return None
    if cosine < MIN_COSINE_INT8:
        logger.info(
            "int8 text tower %s: cosine %.4f to PyTorch is below %.2f; serving fp32.",
            path.stem,
            cosine,
            MIN_COSINE_INT8,
        )
        return None
    logger.info("Text tower %s served in int8 (minimum cosine to PyTorch %.4f).", path.stem, cosine)
    return fast


def quantized_once(path: Path) -> Path:
    """``<stem>.int8.onnx`` beside an exported tower, quantised on first use."""
    quantized_path = path.with_name(f"{path.stem}.int8.onnx")
    with _export_lock:
        if not quantized_path.is_file():
            quantize_int8(path, quantized_path)
    return quantized_path


def quantize_int8(source: Path, target: Path) -> None:
    """int8 weights per output channel, activations quantised per call (no calibration data needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # noqa: PLC0415 - pulls in onnx: export only

    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial")
    logging.disable(logging.WARNING)  # the quantiser logs a line per tensor, and advice, on the root logger
    try:
        quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        logging.disable(logging.NOTSET)
    os.replace(partial, target)


def _export(tower: PooledTextTower, tokenize: Callable[[list[str]], dict], path: Path) -> None:
    """Export with dynamic batch and sequence axes; written to a temporary name, then renamed (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = tokenize(PROBE_TEXTS[:2])
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    tower.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constants and index ops, checked by the probe instead
        torch.onnx.export(
            tower,
            (torch.from_numpy(sample["input_ids"]), torch.from_numpy(sample["attention_mask"])),
            str(partial),
            input_names=["input_ids", "attention_mask"],
            output_names=["vectors"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    os.replace(partial, path)

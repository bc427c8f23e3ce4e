"""Fine-tuning the trainable top of the towers (``ranking.finetune.heads``) over cached inputs.

Arrays in, weights and a training curve out; nothing here reads the database. Each step:

- symmetric InfoNCE with the model's temperature (``ranking.finetune.contrastive``) on a batch of
  pairs, with extra negatives on the text side: the images users skipped above their click, and
  ``negatives`` random images of the collection, so a query learns to beat the collection and not only
  the batch (the held-out measure ranks the whole collection);
- an **anchor** (feature distillation to the start, as in ZSCL, Zheng et al. ICCV 2023): 1 - cosine
  between the new and the starting vectors of random collection images (never a guard or gate image:
  ``Anchor.rows``) and of anchor texts (captions outside the reference set), times ``anchor_weight``.
  Feedback moves the images and queries it is about; the anchor keeps the rest where it was. Measured
  on the Caltech simulation (see docs/finetuning.md): without it, fine-tuning from clicks cost a third
  of the reference recall.

Early stopping watches Recall@10 of the chosen images on the validation pairs (the history's
``validation_recall@10``: the set that chose the epoch, so not a held-out figure; the gate reads
other pairs, ``ranking.finetune.service``); epoch 0 is the start, so a run that never helps returns the
starting weights. ``early_stopping=False`` keeps the last epoch whatever it scores (the "harmful"
setting of the simulation uses it).

Where it trains: on ``device`` (the service passes what ``LOUPE_DEVICE`` resolves to,
``collection.device.resolve_device``). The heads live there in fp32; each step gathers its rows on the
host (the random draws come from one CPU generator, so a seed picks the same rows on every device) and
moves them there; on CUDA the loss runs under autocast (``collection.device.autocast_dtype``), with a
gradient scaler for fp16. On the CPU nothing is cast or scaled: a CPU fine-tune is bit for bit what it
was before training could move (``tests/unit/finetune/test_finetune_device.py``). Evaluation passes run
in fp32 on the device and return host tensors, so the gate reads the same arithmetic everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from collection.device import autocast_dtype
from ranking.finetune.contrastive import info_nce
from ranking.finetune.heads import TextStates, TowerHeads
from ranking.metrics import hit_at_k


@dataclass
class PairSet:
    """Pairs over cached inputs: rows of the query states and of the collection's image inputs.

    ``negatives[i]`` lists collection rows the user skipped above pair i's click (may be empty).
    """

    query_rows: np.ndarray
    image_rows: np.ndarray
    weights: np.ndarray
    negatives: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.query_rows)


@dataclass
class Anchor:
    """Where the start put things: the anchored collection images and the anchor texts (unit vectors).

    ``rows`` are the collection rows anchored (None: every row); ``image_vectors`` are their start vectors,
    in that order. The service leaves the guard and gate images out (``reference.anchor_rows``): anchoring
    them would hold the very images the forgetting check reads in place (audit of h4, finding 4).
    """

    image_vectors: torch.Tensor
    texts: TextStates | None = None
    text_vectors: torch.Tensor | None = None
    weight: float = 100.0
    images_per_step: int = 512
    texts_per_step: int = 256
    rows: torch.Tensor | None = None


def hit_rate_at_k(text_vectors: np.ndarray, image_vectors: np.ndarray, relevant: list[set[int]], k: int = 10) -> float:
    """Hit rate@k: the share of queries with a relevant image (any of them) among the k nearest images.

    Not recall (``ranking.metrics.recall_at_k`` counts the share of a query's relevant images found).
    """
    if len(text_vectors) == 0:
        return 0.0
    top = top_k(text_vectors, image_vectors, k)
    return float(np.mean([hit_at_k(top[i].tolist(), relevant[i], k) for i in range(len(top))]))


def top_k(text_vectors: np.ndarray, image_vectors: np.ndarray, k: int) -> np.ndarray:
    scores = np.asarray(text_vectors) @ np.asarray(image_vectors).T
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def recall_of_pairs(pairs: PairSet, query_vectors: np.ndarray, image_vectors: np.ndarray, k: int = 10) -> float:
    """Recall@k of the chosen images: the share of pairs whose image is among its query's k nearest images."""
    if not len(pairs):
        return 0.0
    queries = sorted(set(pairs.query_rows.tolist()))
    top = dict(zip(queries, top_k(query_vectors[queries], image_vectors, k), strict=True))
    hits = [int(i) in set(top[int(q)].tolist()) for q, i in zip(pairs.query_rows, pairs.image_rows, strict=True)]
    return float(np.mean(hits))


def device_of(heads: TowerHeads) -> torch.device:
    return heads.text_projection.weight.device


def collection_vectors(heads: TowerHeads, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit vectors of the whole collection through ``heads`` (no gradient), in host memory."""
    return _batched(heads.image, heads, inputs, batch_size, heads.visual_projection.out_features)


def collection_pooled(heads: TowerHeads, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The vision tower's pooled outputs of the whole collection under ``heads`` (no gradient), in host memory."""
    return _batched(heads.image_pooled, heads, inputs, batch_size, heads.visual_projection.in_features)


def text_vectors(heads: TowerHeads, texts: TextStates, batch_size: int = 1024) -> torch.Tensor:
    return _batched(heads.text, heads, texts, batch_size, heads.text_projection.out_features)


def _batched(forward, heads: TowerHeads, inputs, batch_size: int, width: int) -> torch.Tensor:
    """``forward`` over ``inputs`` in batches on the heads' device; fp32 host rows out."""
    device = device_of(heads)
    with torch.no_grad():
        if not len(inputs):
            return torch.zeros((0, width))
        return torch.cat(
            [forward(inputs[s : s + batch_size].to(device)).cpu() for s in range(0, len(inputs), batch_size)]
        )


def pairs_recall(heads: TowerHeads, pairs: PairSet, queries: TextStates, images: torch.Tensor) -> float:
    """Recall@10 of ``pairs`` through ``heads``: held out only when no choice was made on those pairs."""
    return recall_of_pairs(pairs, text_vectors(heads, queries).numpy(), collection_vectors(heads, images).numpy())


@dataclass
class ReferenceGuard:
    """Early stopping keeps only epochs whose reference score (of the collection's image vectors) holds a floor."""

    score: Callable[[TowerHeads, np.ndarray], float]
    floor: float


@dataclass
class FineTuneResult:
    state: dict[str, torch.Tensor]  # the kept epoch's weights, under the model's parameter names (host memory)
    history: list[dict]
    best_epoch: int
    device: str = "cpu"  # where it trained, and in what precision: "cpu (float32)", "cuda (bfloat16 autocast)"


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:  # the CPU: no context at all, so nothing about the arithmetic changes
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class TrainingSteps:
    """The optimiser steps of a fine-tune on one device: what ``fine_tune_heads`` runs each batch, and what
    ``bench/device_check.py`` times (the same code, so the device check's epoch is a real one).

    ``step(batch)`` takes rows of ``train``; the loss is the pairs' InfoNCE plus the weighted anchor.
    """

    def __init__(
        self,
        heads: TowerHeads,
        train: PairSet,
        queries: TextStates,
        images: torch.Tensor,
        logit_scale: float,
        *,
        anchor: Anchor | None,
        learning_rate: float,
        negatives: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        heads.to(device=device, dtype=torch.float32)  # fp32 weights; autocast (CUDA) casts per operation
        self.heads, self.train, self.queries, self.images = heads, train, queries, images
        self.logit_scale, self.anchor, self.negatives, self.generator = logit_scale, anchor, negatives, generator
        self.device = device
        self.weights = torch.as_tensor(train.weights, dtype=torch.float32)
        self.optimiser = torch.optim.AdamW(
            [p for p in heads.parameters() if p.requires_grad], lr=learning_rate, weight_decay=0.0
        )
        self.autocast = autocast_dtype(device)
        self.scaler = torch.amp.GradScaler(device.type) if self.autocast == torch.float16 else None

    @property
    def label(self) -> str:
        precision = "float32" if self.autocast is None else f"{str(self.autocast).removeprefix('torch.')} autocast"
        return f"{self.device.type} ({precision})"

    def step(self, batch: np.ndarray) -> torch.Tensor:
        """One optimiser step on ``batch`` (rows of the training pairs); returns the loss (detached)."""
        with _autocast(self.device, self.autocast):
            loss = _pairs_loss(
                self.heads,
                self.train,
                batch,
                self.weights,
                self.queries,
                self.images,
                self.logit_scale,
                self.negatives,
                self.generator,
            )
            if self.anchor is not None:
                loss = loss + self.anchor.weight * _anchor_loss(self.heads, self.anchor, self.images, self.generator)
        self.optimiser.zero_grad()
        if self.scaler is None:
            loss.backward()
            self.optimiser.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimiser)
            self.scaler.update()
        return loss.detach()


def fine_tune_heads(
    heads: TowerHeads,
    train: PairSet,
    valid: PairSet,
    queries: TextStates,
    images: torch.Tensor,
    logit_scale: float,
    *,
    anchor: Anchor | None = None,
    learning_rate: float = 1e-4,
    epochs: int = 30,
    batch_size: int = 256,
    patience: int = 4,
    negatives: int = 1024,
    early_stopping: bool = True,
    guard: ReferenceGuard | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> FineTuneResult:
    """Train ``heads`` in place on ``train``; returns the best (or, without early stopping, the last) epoch.

    With a ``guard``, the best epoch is the best one whose reference score stays at or above its floor:
    the constraint WiSE-FT applies along the line to the start, applied along the training path too, so
    the tuned end of that line is one that kept what the model knew.

    ``device``: where to train (None: the CPU); ``heads`` are moved there, inputs stay where they are and
    each batch's rows are moved.
    """
    generator = torch.Generator().manual_seed(seed)
    steps = TrainingSteps(
        heads,
        train,
        queries,
        images,
        logit_scale,
        anchor=anchor,
        learning_rate=learning_rate,
        negatives=negatives,
        generator=generator,
        device=torch.device("cpu") if device is None else device,
    )
    start, reference = _evaluate(heads, valid, queries, images, guard)
    best = {"recall": start, "epoch": 0, "state": heads.model_state()}
    history = [{"epoch": 0, "validation_recall@10": start, **reference}]
    for epoch in range(1, epochs + 1):
        heads.train()
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for begin in range(0, len(order), batch_size):
            batch = order[begin : begin + batch_size].numpy()
            total += float(steps.step(batch)) * len(batch)
        heads.eval()
        recall, reference = _evaluate(heads, valid, queries, images, guard)
        history.append(
            {"epoch": epoch, "loss": total / max(len(train), 1), "validation_recall@10": recall, **reference}
        )
        holds = guard is None or reference["reference"] >= guard.floor
        if not early_stopping or (holds and recall > best["recall"] + 1e-9):  # without early stopping: the last
            best = {"recall": recall, "epoch": epoch, "state": heads.model_state()}
        elif epoch - best["epoch"] >= patience:
            break
    return FineTuneResult(best["state"], history, best["epoch"], steps.label)


def _evaluate(heads, valid: PairSet, queries, images, guard: ReferenceGuard | None) -> tuple[float, dict]:
    image_vectors = collection_vectors(heads, images).numpy()
    recall = recall_of_pairs(valid, text_vectors(heads, queries).numpy(), image_vectors)
    return recall, ({"reference": guard.score(heads, image_vectors)} if guard is not None else {})


def _pairs_loss(heads, train: PairSet, batch, weights, queries, images, logit_scale, negatives, generator):
    rows = train.image_rows[batch]
    extra = set()
    if train.negatives:
        extra = set(np.concatenate([train.negatives[j] for j in batch] + [np.zeros(0, int)]).tolist())
    if negatives:
        extra |= set(torch.randint(0, len(images), (negatives,), generator=generator).tolist())
    extra -= set(rows.tolist())  # an image that is some pair's positive here is not a negative
    device = device_of(heads)
    extra_vectors = heads.image(images[sorted(extra)].to(device)) if extra else None
    return info_nce(
        heads.text(queries[train.query_rows[batch]].to(device)),
        heads.image(images[rows].to(device)),
        logit_scale,
        weights[batch],
        extra_vectors,
    )


def _anchor_loss(heads: TowerHeads, anchor: Anchor, images: torch.Tensor, generator) -> torch.Tensor:
    device = device_of(heads)
    anchored = len(anchor.image_vectors)
    picked = torch.randint(0, anchored, (min(anchor.images_per_step, anchored),), generator=generator)
    rows = picked if anchor.rows is None else anchor.rows[picked]
    loss = (1 - (heads.image(images[rows].to(device)) * anchor.image_vectors[picked].to(device)).sum(-1)).mean()
    if anchor.texts is not None and len(anchor.texts):
        picked = torch.randint(
            0, len(anchor.texts), (min(anchor.texts_per_step, len(anchor.texts)),), generator=generator
        )
        texts, targets = anchor.texts[picked].to(device), anchor.text_vectors[picked].to(device)
        loss = loss + (1 - (heads.text(texts) * targets).sum(-1)).mean()
    return loss

"""Fine-tuning CLIP's two projection matrices over cached tower outputs.

Both towers stay frozen, so their pooled outputs are computed once (``ranking.finetune.towers``) and an
epoch is a few matrix products: on CPU this is what makes fine-tuning from feedback practical, and it
is the parameter-efficient choice (the projections are 0.6 M of ViT-B/32's 151 M parameters). Early
stopping watches held-out Recall@10 over the whole collection; the best epoch's weights are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ranking.finetune.contrastive import info_nce


@dataclass
class Projections:
    """``nn.Linear`` weights: text (d, hidden_text) and image (d, hidden_vision)."""

    text: torch.Tensor
    image: torch.Tensor

    def state(self) -> dict[str, torch.Tensor]:
        return {"text_projection.weight": self.text, "visual_projection.weight": self.image}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Projections:
        return cls(state["text_projection.weight"], state["visual_projection.weight"])


def project(pooled: np.ndarray | torch.Tensor, weight: torch.Tensor) -> np.ndarray:
    """Unit vectors of pooled tower outputs through a projection (what get_*_features returns, normalised)."""
    with torch.no_grad():
        out = torch.as_tensor(np.asarray(pooled), dtype=torch.float32) @ weight.T
        return torch.nn.functional.normalize(out, dim=-1).numpy()


@dataclass
class PairSet:
    """Training pairs over cached pooled outputs: query rows of ``text_pooled``, image rows of the collection.

    ``negatives[i]`` lists collection rows the user skipped above pair i's click (may be empty).
    """

    text_pooled: np.ndarray
    query_rows: np.ndarray
    image_rows: np.ndarray
    weights: np.ndarray
    negatives: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.query_rows)


def recall_at_k(text_vectors: np.ndarray, image_vectors: np.ndarray, relevant: list[set[int]], k: int = 10) -> float:
    """Share of queries whose relevant image (any of them) is among the k nearest collection images."""
    if len(text_vectors) == 0:
        return 0.0
    scores = text_vectors @ image_vectors.T
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float(np.mean([bool(relevant[i] & set(top[i].tolist())) for i in range(len(top))]))


def held_out_recall(pairs: PairSet, image_pooled: np.ndarray, projections: Projections, k: int = 10) -> float:
    """Recall@k of each held-out query's clicked images, searching the whole collection."""
    return recall_of_pairs(pairs, project(image_pooled, projections.image), projections.text, k)


def recall_of_pairs(pairs: PairSet, image_vectors: np.ndarray, text_weight: torch.Tensor, k: int = 10) -> float:
    """``held_out_recall`` with the collection's image vectors already projected."""
    queries = sorted(set(pairs.query_rows.tolist()))
    relevant = {q: set() for q in queries}
    for q, i in zip(pairs.query_rows.tolist(), pairs.image_rows.tolist(), strict=True):
        relevant[q].add(i)
    text = project(pairs.text_pooled[queries], text_weight)
    return recall_at_k(text, image_vectors, [relevant[q] for q in queries], k)


@dataclass
class FineTuneResult:
    projections: Projections
    history: list[dict]
    best_epoch: int


def fine_tune_projections(
    train: PairSet,
    valid: PairSet,
    image_pooled: np.ndarray,
    start: Projections,
    logit_scale: float,
    *,
    learning_rate: float = 1e-4,
    epochs: int = 30,
    batch_size: int = 256,
    patience: int = 4,
    train_text: bool = True,
    train_image: bool = True,
    seed: int = 0,
) -> FineTuneResult:
    """Symmetric InfoNCE on the pairs (in-batch and skipped-image negatives), AdamW, early stopping."""
    generator = torch.Generator().manual_seed(seed)
    text_w = torch.nn.Parameter(start.text.detach().clone(), requires_grad=train_text)
    image_w = torch.nn.Parameter(start.image.detach().clone(), requires_grad=train_image)
    params = [p for p in (text_w, image_w) if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    texts = torch.as_tensor(train.text_pooled, dtype=torch.float32)
    images = torch.as_tensor(image_pooled, dtype=torch.float32)
    weights = torch.as_tensor(train.weights, dtype=torch.float32)
    best = {"recall": held_out_recall(valid, image_pooled, start), "epoch": 0, "state": start}
    history = [{"epoch": 0, "held_out_recall@10": best["recall"]}]
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train), generator=generator)
        total = 0.0
        for begin in range(0, len(order), batch_size):
            batch = order[begin : begin + batch_size]
            q, i = train.query_rows[batch.numpy()], train.image_rows[batch.numpy()]
            negatives = None
            if train.negatives:
                extra = set(np.concatenate([train.negatives[j] for j in batch.tolist()] + [np.zeros(0, int)]).tolist())
                extra -= set(i.tolist())  # an image that is some pair's positive is not a negative here
                if extra:
                    negatives = images[sorted(extra)] @ image_w.T
            loss = info_nce(texts[q] @ text_w.T, images[i] @ image_w.T, logit_scale, weights[batch], negatives)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        current = Projections(text_w.detach().clone(), image_w.detach().clone())
        recall = held_out_recall(valid, image_pooled, current)
        history.append({"epoch": epoch, "loss": total / len(train), "held_out_recall@10": recall})
        if recall > best["recall"] + 1e-9:
            best = {"recall": recall, "epoch": epoch, "state": current}
        elif epoch - best["epoch"] >= patience:
            break
    return FineTuneResult(best["state"], history, best["epoch"])

"""The CLIP pre-training loss, with weights per pair and extra negatives, as a pure function of tensors.

Symmetric InfoNCE (Radford et al. 2021): for a batch of (text, image) pairs, logits = scale · T·Iᵀ
over unit vectors; each text must pick its image among the batch's images and each image its text
among the batch's texts; the loss is the mean of the two cross-entropies. ``weights`` scale each
pair's terms (inverse propensities: a click at position 9 says more than one at position 1);
``negatives`` are extra images only the text side sees (results the user skipped above the click).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(
    text: torch.Tensor,
    image: torch.Tensor,
    logit_scale: torch.Tensor | float,
    weights: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted symmetric InfoNCE of (n, d) text and image vectors (row i pairs with row i)."""
    text, image = F.normalize(text, dim=-1), F.normalize(image, dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=text.dtype, device=text.device)
    candidates = image if negatives is None else torch.cat([image, F.normalize(negatives, dim=-1)])
    logits_text = scale * text @ candidates.T  # (n, n + m): each text against every image
    logits_image = scale * image @ text.T  # (n, n): each image against every text
    # Made where the vectors are, so the same loss trains on a GPU (bench/device_check.py).
    target = torch.arange(len(text), device=text.device)
    weights = torch.ones(len(text), device=text.device) if weights is None else weights.to(text.device)
    weights = weights / weights.sum()
    loss_text = (F.cross_entropy(logits_text, target, reduction="none") * weights).sum()
    loss_image = (F.cross_entropy(logits_image, target, reduction="none") * weights).sum()
    return (loss_text + loss_image) / 2

"""WiSE-FT (Wortsman et al. 2022): interpolate the fine-tuned weights with the weights they started from.

θ(α) = (1 − α)·θ₀ + α·θ₁. Fine-tuning on a narrow signal moves the weights toward it and away from
everything else the model knew; a point on the line between the two often keeps most of the gain and
most of the old knowledge. α is chosen on held-out data (``choose_alpha``), with the reference set as a
constraint, so α = 0 (keep the old weights) is always a candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch


def interpolate(start: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float) -> dict:
    """(1 − alpha)·start + alpha·tuned, key by key; both must hold the same keys and shapes."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1].")
    if start.keys() != tuned.keys():
        raise ValueError("The two state dicts do not hold the same parameters.")
    out = {}
    for key, value in start.items():
        if value.shape != tuned[key].shape:
            raise ValueError(f"{key}: shapes differ ({tuple(value.shape)} vs {tuple(tuned[key].shape)}).")
        out[key] = value if not value.is_floating_point() else (1 - alpha) * value + alpha * tuned[key]
    return out


def choose_alpha(
    score: Callable[[float], tuple[float, float]],
    *,
    reference_floor: float,
    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
) -> tuple[float, list[dict]]:
    """The alpha with the best held-out score whose reference score stays at or above ``reference_floor``.

    ``score(alpha)`` returns (held-out score, reference score). Returns the alpha and every alpha's scores.
    """
    table = []
    best_alpha, best = 0.0, float("-inf")
    for alpha in alphas:
        held_out, reference = score(alpha)
        table.append({"alpha": alpha, "held_out": held_out, "reference": reference})
        if reference >= reference_floor and held_out > best:
            best_alpha, best = alpha, held_out
    return best_alpha, table

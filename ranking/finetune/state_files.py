"""Where the fine-tuning hidden states are kept on disk (``ranking.finetune.tower_inputs``), and dropping
taken-down images from them: numpy only, so the takedown's receiver loads no model library."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.conf import settings


def states_root() -> Path:
    return Path(settings.VAR_DIR) / "tower_states"


def forget_image_states(image_ids: Sequence[int]) -> int:
    """Rewrite every cached chunk that holds any of these images without them; returns how many images'
    states were dropped. Each chunk is replaced atomically, as ``fill_state_cache`` writes it."""
    gone = np.asarray(sorted(image_ids), dtype=np.int64)
    dropped = 0
    for part in sorted(states_root().glob("*/part-*.npz")):
        with np.load(part) as data:
            keep = ~np.isin(data["ids"], gone)
            if keep.all():
                continue
            ids, states = data["ids"][keep], data["states"][keep]
        dropped += int((~keep).sum())
        partial = part.with_name(f".{part.stem}.tmp.npz")
        np.savez(partial, ids=ids, states=states)
        os.replace(partial, part)
    return dropped


def forget_removed_images(sender, image_ids: Sequence[int], **kwargs) -> None:
    """``collection.takedown.images_removed`` receiver: no taken-down image's states stay on disk."""
    forget_image_states(image_ids)

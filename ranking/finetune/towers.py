"""The image tower's pooled outputs (what the projections read), cached in Postgres.

For CLIP, ``get_text_features`` = text_projection(text_model(...).pooler_output) and likewise for
images. With the towers frozen, only the projections train, so the pooled outputs are inputs that
never change: images' are stored in ``ImageTowerOutput`` (keyed by a fingerprint of the vision tower
alone, so every projection-only fine-tune of the same tower shares them) and filled resumably.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from PIL import Image as PILImage

from collection.models import Image, ImageTowerOutput


def fill_image_cache(encoder, *, batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> str:
    """Compute the pooled image outputs the cache lacks for this encoder's vision tower; returns the tower key.

    Resumable: each batch commits on its own, and a rerun starts with what is missing.
    """
    tower = encoder.vision_tower_fingerprint  # embedding the collection fills most of it already
    missing = Image.objects.exclude(tower_outputs__tower=tower).order_by("pk")
    total = missing.count()
    done = 0
    ids = list(missing.values_list("pk", "file"))
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        kept, opened = open_stored(batch)
        if opened:
            pooled = encoder.encode_images_with_pooled(opened, exact=True)[1]  # PyTorch's pooled outputs, never int8
            store_tower_outputs(tower, kept, pooled)
        done += len(batch)
        if progress:
            progress(done, total)
    return tower


def store_tower_outputs(tower: str, image_ids: Sequence[int], pooled: np.ndarray, *, batch: int = 2000) -> None:
    """Cache pooled vision outputs under ``tower`` (a vision tower's fingerprint), a transaction per batch."""
    for start in range(0, len(image_ids), batch):
        chunk = zip(image_ids[start : start + batch], pooled[start : start + batch], strict=True)
        rows = [ImageTowerOutput(image_id=int(pk), tower=tower, pooled=vector) for pk, vector in chunk]
        with transaction.atomic():
            ImageTowerOutput.objects.bulk_create(rows, ignore_conflicts=True)


def open_stored(rows: list[tuple[int, str]]) -> tuple[list[int], list[PILImage.Image]]:
    """(ids, RGB images) of the (id, stored file name) rows whose file opens; a file gone from disk is
    skipped here (the embedding step reports it)."""
    kept, opened = [], []
    for pk, name in rows:
        try:
            with PILImage.open(Path(settings.MEDIA_ROOT) / name) as handle:
                opened.append(handle.convert("RGB"))
            kept.append(pk)
        except OSError:
            continue
    return kept, opened


def cached_image_pooled(tower: str) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, (n, hidden) pooled outputs) of every cached image under ``tower``, by image id."""
    rows = list(ImageTowerOutput.objects.filter(tower=tower).order_by("image_id").values_list("image_id", "pooled"))
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = np.asarray([r[0] for r in rows], dtype=np.int64)
    return ids, np.stack([np.asarray(r[1], dtype=np.float32) for r in rows])

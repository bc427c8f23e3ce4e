"""An item's bytes read, validated and thumbnailed, with the image tower's input: the decode pool's work.

The bytes are decoded once: validation's full decode also makes the thumbnail and, with ``tower_input``
(``Encoder.pixels``), the tower's input, from the image as stored (no EXIF transpose, as
``collection.embedding.stored_pixels`` reads it back). Shared by ``manage.py ingest`` and ingest jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from collection.images import CheckedImage, decode_image, thumbnail_jpeg, upright
from collection.ingestion.sources import IngestItem

TowerInput = Callable  # PIL image -> the tower's input array (Encoder.pixels)


@dataclass(frozen=True)
class ReadFile:
    """An item's file, read, validated and thumbnailed (the CPU-bound part, done in the decode pool)."""

    checked: CheckedImage
    thumbnail: bytes
    source: str  # where the bytes came from (a path or a URL), recorded as the image's source
    pixels: np.ndarray | None = None  # the image tower's input, when the pass embeds too


def read_bytes(data: bytes, source: str, tower_input: TowerInput | None = None) -> ReadFile:
    """Raises InvalidImage (``read_image``'s rules)."""
    checked, decoded = decode_image(data)
    pixels = tower_input(decoded.convert("RGB")) if tower_input is not None else None
    return ReadFile(checked, thumbnail_jpeg(upright(decoded)), source, pixels)


def read_item_file(item: IngestItem, tower_input: TowerInput | None = None) -> ReadFile | None:
    """Raises OSError (unreadable) or InvalidImage, exactly as the serial path did; None for an item its
    source refused (not read)."""
    if item.problem:
        return None
    return read_bytes(item.path.read_bytes(), str(item.path), tower_input)

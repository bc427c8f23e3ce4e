"""Adding images to the collection: validate, store by content, record with captions and tags."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from django.conf import settings
from django.db import transaction

from collection.decode_pool import prepared_in_order
from collection.embedding import ImageVectorBatches
from collection.images import (
    CheckedImage,
    InvalidImage,
    decode_image,
    store_original,
    store_thumbnail,
    thumbnail_jpeg,
    upright,
)
from collection.ingestion.sources import IngestItem
from collection.metadata import InvalidMetadata, validate_metadata
from collection.models import Caption, Image
from collection.tags import clean_tags
from collection.text_index import refresh_text_documents
from core.links import InvalidLink, checked_http_url

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def add_image(
    checked: CheckedImage,
    *,
    captions: Iterable[str] = (),
    tags: Iterable[str] = (),
    licence: str = "",
    attribution: str = "",
    source: str = "",
    thumbnail: bytes | None = None,
    metadata: dict | None = None,
) -> tuple[Image, bool]:
    """Store a validated image unless the same bytes are already in; returns (image, created).

    Files are written before the row (atomically, under their content hash), so a failed insert
    leaves at most a file that the next ingestion of the same image reuses, never a row without a file.
    The attribution becomes a link on the image page, so anything but an http(s) URL is refused
    (``InvalidLink``) before anything is written. ``thumbnail``: its JPEG bytes, when made ahead.
    """
    attribution = checked_http_url(attribution.strip(), field="attribution")
    cleaned_metadata = validate_metadata(metadata or {})
    existing = Image.objects.filter(sha256=checked.sha256).first()
    if existing is not None:
        return existing, False
    file_name = store_original(checked)
    thumb_name = store_thumbnail(checked, jpeg=thumbnail)
    unique_captions = list(dict.fromkeys(c.strip() for c in captions if c and c.strip()))
    with transaction.atomic():
        image, created = Image.objects.get_or_create(
            sha256=checked.sha256,
            defaults={
                "file": file_name,
                "thumbnail": thumb_name,
                "width": checked.width,
                "height": checked.height,
                "format": checked.format.lower(),
                "byte_size": len(checked.data),
                "tags": clean_tags(tags),
                "source": source[:2000],
                "licence": licence[:300],
                "attribution": attribution,
                "metadata": cleaned_metadata,
            },
        )
        if created:
            Caption.objects.bulk_create(
                Caption(image=image, text=text, position=i) for i, text in enumerate(unique_captions)
            )
            refresh_text_documents([image.pk])
    return image, created


@dataclass(frozen=True)
class ReadFile:
    """An item's file, read, validated and thumbnailed (the CPU-bound part, done in the decode pool)."""

    checked: CheckedImage
    thumbnail: bytes
    pixels: np.ndarray | None = None  # the image tower's input, when the pass embeds too


def read_item_file(item: IngestItem, tower_input: Callable | None = None) -> ReadFile | None:
    """Raises OSError (unreadable) or InvalidImage (``read_image``'s rules), exactly as the serial path did.

    The bytes are decoded once: validation's full decode also makes the thumbnail and, with
    ``tower_input`` (``Encoder.pixels``), the tower's input, from the image as stored (no EXIF transpose,
    as ``collection.embedding.stored_pixels`` reads it back).
    """
    if item.problem:  # refused by its source: not read
        return None
    checked, decoded = decode_image(item.path.read_bytes())
    pixels = tower_input(decoded.convert("RGB")) if tower_input is not None else None
    return ReadFile(checked, thumbnail_jpeg(upright(decoded)), pixels)


def ingest_items(
    items: Iterable[IngestItem],
    *,
    progress: Callable[[IngestItem], None] | None = None,
    workers: int | None = None,
    embed: ImageVectorBatches | None = None,
) -> IngestReport:
    """Ingest each item; a bad file, or an item its source refused, is reported and skipped, never stops the run.

    Files are read, checked and thumbnailed in ``workers`` threads (default LOUPE_DECODE_WORKERS) ahead of
    this thread, which alone touches the database, in the items' order. With ``embed``, each added image
    is embedded in the same pass: the threads make its tower input too, a batch ahead of the encoder, so
    they decode the next batch while the tower runs this one.
    """
    report = IngestReport()
    workers = settings.LOUPE_DECODE_WORKERS if workers is None else workers
    tower_input = embed.encoder.pixels if embed is not None else None
    window = 2 * embed.batch_size if embed is not None and workers > 0 else None
    read = (lambda item: read_item_file(item, tower_input)) if embed is not None else read_item_file
    for prepared in prepared_in_order(read, items, workers=workers, window=window):
        item = prepared.item
        if item.problem:  # its source refused it (a bad row); the file, if any, is not stored
            report.failed.append((str(item.path), item.problem))
            logger.warning("Skipped %s: %s", item.path, item.problem)
            if progress:
                progress(item)
            continue
        try:
            if prepared.error is not None:
                raise prepared.error
            image, created = add_image(
                prepared.result.checked,
                captions=item.captions,
                tags=item.tags,
                licence=item.licence,
                attribution=item.attribution,
                source=str(item.path),
                thumbnail=prepared.result.thumbnail,
                metadata=item.metadata,
            )
        except (OSError, InvalidImage, InvalidLink, InvalidMetadata) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            report.failed.append((str(item.path), reason))
            logger.warning("Skipped %s: %s", item.path, reason)
        else:
            if created:
                report.added += 1
                if embed is not None:
                    embed.add(image, prepared.result.pixels)
            else:
                report.duplicates += 1  # embedded already, or by the run's embed_images pass
        if progress:
            progress(item)
    if embed is not None:
        embed.flush()
    return report

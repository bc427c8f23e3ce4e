"""Adding images to the collection: validate, store by content, record with captions and tags."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from collection.decode_pool import prepared_in_order
from collection.images import (
    CheckedImage,
    InvalidImage,
    read_image,
    store_original,
    store_thumbnail,
    thumbnail_jpeg,
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
    ingested_by: str = "",
) -> tuple[Image, bool]:
    """Store a validated image unless the same bytes are already in; returns (image, created).

    Files are written before the row (atomically, under their content hash), so a failed insert
    leaves at most a file that the next ingestion of the same image reuses, never a row without a file.
    The attribution becomes a link on the image page, so anything but an http(s) URL is refused
    (``InvalidLink``) before anything is written. ``thumbnail``: its JPEG bytes, when made ahead.
    ``ingested_by``: the partner key's prefix (API ingests), the one key that may take the image down.
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
                "ingested_by": ingested_by,
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


def read_item_file(item: IngestItem) -> ReadFile | None:
    """Raises OSError (unreadable) or InvalidImage (``read_image``'s rules), exactly as the serial path did."""
    if item.problem:  # refused by its source: not read
        return None
    checked = read_image(item.path.read_bytes())
    return ReadFile(checked, thumbnail_jpeg(checked.open()))


def ingest_items(
    items: Iterable[IngestItem],
    *,
    progress: Callable[[IngestItem], None] | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Ingest each item; a bad file, or an item its source refused, is reported and skipped, never stops the run.

    Files are read, checked and thumbnailed in ``workers`` threads (default LOUPE_DECODE_WORKERS) ahead of
    this thread, which alone touches the database, in the items' order.
    """
    report = IngestReport()
    workers = settings.LOUPE_DECODE_WORKERS if workers is None else workers
    for prepared in prepared_in_order(read_item_file, items, workers=workers):
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
            _, created = add_image(
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
            else:
                report.duplicates += 1
        if progress:
            progress(item)
    return report

"""Adding images to the collection: validate, store by content, record with captions and tags."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from django.conf import settings
from django.db import transaction

from collection.decode_pool import prepared_in_order
from collection.image_changes import ContentElsewhere, ImageChanges, apply_changes, replace_file, unique_captions
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
from core.locks import transaction_lock

logger = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: int = 0
    duplicates: int = 0
    updated: int = 0  # rows whose external id was known: that image was updated
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class Outcome(StrEnum):
    STORED = "stored"  # a new image
    DUPLICATE = "duplicate"  # the same bytes were already in, without an external id to update
    UPDATED = "updated"  # its external id was known: that image took the item's captions, tags, ... (and file)


@dataclass(frozen=True)
class Stored:
    image: Image
    outcome: Outcome


def add_image(checked: CheckedImage, **item) -> tuple[Image, bool]:
    """``store_image``, answering (image, created) for callers that only add."""
    stored = store_image(checked, **item)
    return stored.image, stored.outcome == Outcome.STORED


def store_image(
    checked: CheckedImage,
    *,
    captions: Iterable[str] = (),
    tags: Iterable[str] = (),
    licence: str = "",
    attribution: str = "",
    source: str = "",
    thumbnail: bytes | None = None,
    metadata: dict | None = None,
    catalogue: str = "",
    external_id: str | None = None,
    changes: ImageChanges | None = None,
) -> Stored:
    """Store a validated image unless the same bytes are already in; with an ``external_id`` already in
    ``catalogue``, update that image instead (an upsert: never a second image for one partner id).

    Files are written before the row (atomically, under their content hash), so a failed insert
    leaves at most a file that the next ingestion of the same image reuses, never a row without a file.
    The attribution becomes a link on the image page, so anything but an http(s) URL is refused
    (``InvalidLink``) before anything is written. ``thumbnail``: its JPEG bytes, when made ahead.
    ``changes``: what an upsert sets on the known image (default: every non-empty value given here).
    """
    attribution = checked_http_url(attribution.strip(), field="attribution")
    cleaned_metadata = validate_metadata(metadata or {})
    unique = unique_captions(captions)
    if external_id:
        changes = changes or ImageChanges(
            captions=tuple(unique) or None,
            tags=tuple(tags) or None,
            metadata=cleaned_metadata or None,
            licence=licence or None,
            attribution=attribution or None,
            replace_metadata=True,
        )
        return _upsert(checked, catalogue, external_id, changes, source=source, thumbnail=thumbnail)
    existing = Image.objects.filter(sha256=checked.sha256).first()
    if existing is not None:
        return Stored(existing, Outcome.DUPLICATE)
    file_name = store_original(checked)
    thumb_name = store_thumbnail(checked, jpeg=thumbnail)
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
                "catalogue": catalogue,
                "external_id": external_id or None,
            },
        )
        if created:
            Caption.objects.bulk_create(Caption(image=image, text=text, position=i) for i, text in enumerate(unique))
            refresh_text_documents([image.pk])
    return Stored(image, Outcome.STORED if created else Outcome.DUPLICATE)


def _upsert(
    checked: CheckedImage,
    catalogue: str,
    external_id: str,
    changes: ImageChanges,
    *,
    source: str,
    thumbnail: bytes | None,
) -> Stored:
    """The image of ``(catalogue, external_id)`` updated, or stored new under it.

    Two requests with one external id (or one file) wait for each other on transaction-scoped advisory
    locks, taken in one order (id, then content) so they cannot deadlock: the second finds the first's
    row and updates it instead of inserting a duplicate.
    """
    file_name = store_original(checked)  # before the row; content-addressed, so harmless if unused
    thumb_name = store_thumbnail(checked, jpeg=thumbnail)
    with transaction.atomic():
        transaction_lock(f"image-external-id:{catalogue}:{external_id}")
        transaction_lock(f"image-content:{checked.sha256}")
        known = Image.objects.select_for_update().filter(catalogue=catalogue, external_id=external_id).first()
        same_bytes = Image.objects.filter(sha256=checked.sha256).first()
        if known is None and same_bytes is not None:
            if same_bytes.catalogue != catalogue or same_bytes.external_id is not None:
                raise ContentElsewhere(
                    f"These bytes are already image {same_bytes.pk}"
                    + (
                        " of another catalogue."
                        if same_bytes.catalogue != catalogue
                        else f" (external id {same_bytes.external_id!r})."
                    )
                )
            # The partner's own image, sent before without an id: it takes the id.
            Image.objects.filter(pk=same_bytes.pk).update(external_id=external_id)
            known = same_bytes
        if known is None:
            image = Image.objects.create(
                sha256=checked.sha256,
                file=file_name,
                thumbnail=thumb_name,
                width=checked.width,
                height=checked.height,
                format=checked.format.lower(),
                byte_size=len(checked.data),
                source=source[:2000],
                catalogue=catalogue,
                external_id=external_id,
            )
            apply_changes(image, changes)
            return Stored(Image.objects.get(pk=image.pk), Outcome.STORED)
        if known.sha256 != checked.sha256:
            if same_bytes is not None:
                raise ContentElsewhere(
                    f"These bytes are already image {same_bytes.pk}; image {known.pk} keeps its file."
                )
            replace_file(known, checked, file_name=file_name, thumbnail_name=thumb_name, source=source)
        return Stored(apply_changes(known, changes), Outcome.UPDATED)


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
            stored = store_image(
                prepared.result.checked,
                captions=item.captions,
                tags=item.tags,
                licence=item.licence,
                attribution=item.attribution,
                source=str(item.path),
                thumbnail=prepared.result.thumbnail,
                metadata=item.metadata,
                external_id=item.external_id or None,
            )
        except (OSError, InvalidImage, InvalidLink, InvalidMetadata, ContentElsewhere) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            report.failed.append((str(item.path), reason))
            logger.warning("Skipped %s: %s", item.path, reason)
        else:
            report.added += stored.outcome == Outcome.STORED
            report.duplicates += stored.outcome == Outcome.DUPLICATE
            report.updated += stored.outcome == Outcome.UPDATED
        if progress:
            progress(item)
    return report

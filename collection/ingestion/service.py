"""Adding images to the collection: validate, store by content, record with captions and tags."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from collection.decode_pool import Prepared, chunked, prepared_in_order
from collection.embedding import ImageVectorBatches
from collection.image_changes import ContentElsewhere, ImageChanges, apply_changes, replace_file, unique_captions
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
from collection.metadata import InvalidMetadata, declared_fields, validate_metadata
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
    if not external_id:
        # A plain add is the batched writer's (add_images) with one image: one code path for new rows.
        one = NewImage(checked, captions, tags, licence, attribution, source, thumbnail, metadata, catalogue)
        added = add_images([one])[0]
        if added.error is not None:
            raise added.error
        return Stored(added.image, Outcome.STORED if added.created else Outcome.DUPLICATE)
    attribution = checked_http_url(attribution.strip(), field="attribution")
    cleaned_metadata = validate_metadata(metadata or {})
    unique = unique_captions(captions)
    changes = changes or ImageChanges(
        captions=tuple(unique) or None,
        tags=tuple(tags) or None,
        metadata=cleaned_metadata or None,
        licence=licence or None,
        attribution=attribution or None,
        replace_metadata=True,
    )
    return _upsert(checked, catalogue, external_id, changes, source=source, thumbnail=thumbnail)


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
            Image.objects.filter(pk=same_bytes.pk).update(external_id=external_id, updated_at=Now())
            known = same_bytes
        if known is None:
            image = Image.objects.create(
                **checked.file_fields(file_name, thumb_name, source), catalogue=catalogue, external_id=external_id
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
class NewImage:
    """A validated image to add, with what is recorded beside it."""

    checked: CheckedImage
    captions: Iterable[str] = ()
    tags: Iterable[str] = ()
    licence: str = ""
    attribution: str = ""
    source: str = ""
    thumbnail: bytes | None = None  # its JPEG bytes, when made ahead (by a decode pool)
    metadata: dict | None = None
    catalogue: str = ""  # whose image it is: the partner key's name, "" for admin and CLI ingests


@dataclass(frozen=True)
class Added:
    """What adding one image did: the row (new or already there), or the refusal that stopped it."""

    image: Image | None
    created: bool = False
    error: InvalidLink | InvalidMetadata | OSError | None = None


# Rows written per round trip set. Adding images one at a time took 7 queries each (duplicate check,
# metadata schema, get_or_create, captions, text document, savepoints): 67 ms an image of a 75 ms ingest
# on a loaded 2-core machine (cProfile, bench/ingest_speed.py); 32 at a time take those 7 queries once.
ROWS_PER_BATCH = 32


def add_images(new: list[NewImage]) -> list[Added]:
    """Add many images in one transaction; one :class:`Added` per image, in order.

    Files are written before the rows (atomically, under their content hash), so a failed insert leaves
    at most files that the next ingestion of the same images reuses, never a row without a file. The
    attribution becomes a link on the image page, so anything but an http(s) URL is refused
    (``InvalidLink``) before anything of that image is written. The same bytes twice in ``new``: the
    first is added, the second is a duplicate of it.
    """
    results: list[Added | None] = [None] * len(new)
    fields = declared_fields() if any(one.metadata for one in new) else {}
    valid: list[tuple[int, NewImage, str, dict]] = []
    for position, one in enumerate(new):
        try:
            attribution = checked_http_url(one.attribution.strip(), field="attribution")
            valid.append((position, one, attribution, validate_metadata(one.metadata or {}, fields)))
        except (InvalidLink, InvalidMetadata) as exc:
            results[position] = Added(None, error=exc)
    existing = Image.objects.in_bulk([one.checked.sha256 for _, one, _, _ in valid], field_name="sha256")
    rows: dict[str, Image] = {}
    captions: dict[str, list[str]] = {}
    firsts: list[tuple[int, str]] = []
    for position, one, attribution, metadata in valid:
        sha256 = one.checked.sha256
        if sha256 in existing or sha256 in rows:
            continue
        rows[sha256] = _image_row(one, attribution, metadata)
        captions[sha256] = list(dict.fromkeys(c.strip() for c in one.captions if c and c.strip()))
        firsts.append((position, sha256))
    if rows:
        try:
            with transaction.atomic():
                Image.objects.bulk_create(rows.values())
                Caption.objects.bulk_create(
                    Caption(image=rows[sha256], text=text, position=i)
                    for sha256, texts in captions.items()
                    for i, text in enumerate(texts)
                )
                refresh_text_documents([row.pk for row in rows.values()])
        except IntegrityError:
            if len(new) == 1:  # the same bytes were added by another process meanwhile
                return [Added(Image.objects.get(sha256=new[0].checked.sha256), False)]
            return [added for one in new for added in add_images([one])]  # which one clashed: one by one
    created_at = dict((sha256, position) for position, sha256 in firsts)
    for position, one, _, _ in valid:
        sha256 = one.checked.sha256
        image = existing.get(sha256) or rows[sha256]
        results[position] = Added(image, created=created_at.get(sha256) == position)
    return results


def _image_row(one: NewImage, attribution: str, metadata: dict) -> Image:
    """The row of a new image, its original and thumbnail written first."""
    file_name = store_original(one.checked)
    thumb_name = store_thumbnail(one.checked, jpeg=one.thumbnail)
    return Image(
        **one.checked.file_fields(file_name, thumb_name, one.source),
        tags=clean_tags(one.tags),
        licence=one.licence[:300],
        attribution=attribution,
        metadata=metadata,
        catalogue=one.catalogue,
    )


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
    # Two batches in flight: the threads fill the next while this thread writes rows and runs the tower. Memory
    # is bounded by that many files' bytes (64 x a few MB for photos; LOUPE_MAX_UPLOAD_BYTES at worst).
    window = max(2 * (embed.batch_size if embed is not None else 0), 2 * ROWS_PER_BATCH) if workers > 0 else None
    read = (lambda item: read_item_file(item, tower_input)) if embed is not None else read_item_file
    for group in chunked(prepared_in_order(read, items, workers=workers, window=window), ROWS_PER_BATCH):
        for item, outcome in zip((p.item for p in group), _ingest_group(group, embed), strict=True):
            if not isinstance(outcome, Outcome):
                report.failed.append((str(item.path), outcome))
                logger.warning("Skipped %s: %s", item.path, outcome)
            else:
                report.added += outcome == Outcome.STORED
                # Duplicates were embedded already (or are, by the run's embed_images pass), as are updates.
                report.duplicates += outcome == Outcome.DUPLICATE
                report.updated += outcome == Outcome.UPDATED
            if progress:
                progress(item)
    if embed is not None:
        embed.flush()
    return report


def _ingest_group(group: list[Prepared], embed: ImageVectorBatches | None) -> list[Outcome | str]:
    """Each prepared item's outcome, in order, or why it was skipped.

    Items without an external id are added together (``add_images``); an item naming one is an upsert,
    which takes its own locks (``store_image``), so it goes alone.
    """
    outcomes: list[Outcome | str] = []
    readable: list[tuple[int, Prepared]] = []
    for prepared in group:
        if prepared.item.problem:  # its source refused it (a bad row); the file, if any, is not stored
            outcomes.append(prepared.item.problem)
        elif prepared.error is not None:
            if not isinstance(prepared.error, OSError | InvalidImage):
                raise prepared.error
            outcomes.append(_reason(prepared.error))
        elif prepared.item.external_id:
            outcomes.append(_upsert_item(prepared, embed))
        else:
            readable.append((len(outcomes), prepared))
            outcomes.append(Outcome.DUPLICATE)
    new = [_new_image(prepared) for _, prepared in readable]
    try:
        added = add_images(new)
    except OSError:  # a file could not be written: find which, one at a time
        added = [_add_alone(one) for one in new]
    for (position, prepared), result in zip(readable, added, strict=True):
        if result.error is not None:
            outcomes[position] = _reason(result.error)
        elif result.created:
            outcomes[position] = Outcome.STORED
            if embed is not None:
                embed.add(result.image, prepared.result.pixels)
    return outcomes


def _upsert_item(prepared: Prepared, embed: ImageVectorBatches | None) -> Outcome | str:
    item, read = prepared.item, prepared.result
    try:
        stored = store_image(
            read.checked,
            captions=item.captions,
            tags=item.tags,
            licence=item.licence,
            attribution=item.attribution,
            source=str(item.path),
            thumbnail=read.thumbnail,
            metadata=item.metadata,
            external_id=item.external_id,
        )
    except (OSError, InvalidLink, InvalidMetadata, ContentElsewhere) as exc:
        return _reason(exc)
    if stored.outcome == Outcome.STORED and embed is not None:
        embed.add(stored.image, read.pixels)
    return stored.outcome


def _new_image(prepared: Prepared) -> NewImage:
    item, read = prepared.item, prepared.result
    return NewImage(
        read.checked,
        captions=item.captions,
        tags=item.tags,
        licence=item.licence,
        attribution=item.attribution,
        source=str(item.path),
        thumbnail=read.thumbnail,
        metadata=item.metadata,
    )


def _add_alone(one: NewImage) -> Added:
    try:
        return add_images([one])[0]
    except OSError as exc:
        return Added(None, error=exc)


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)

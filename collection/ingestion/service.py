"""Adding images to the collection: validate, store by content, record with captions and tags."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from django.db import IntegrityError, transaction
from django.db.models.functions import Now

from collection.image_changes import ContentElsewhere, ImageChanges, apply_changes, replace_file, unique_captions
from collection.images import CheckedImage, store_original, store_thumbnail
from collection.ingestion.reading import ReadFile
from collection.ingestion.sources import IngestItem
from collection.metadata import InvalidMetadata, declared_fields, validate_metadata
from collection.models import Caption, Image
from collection.tags import clean_tags
from collection.text_index import refresh_text_documents
from core.links import InvalidLink, checked_http_url
from core.locks import transaction_lock

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    STORED = "stored"  # a new image
    DUPLICATE = "duplicate"  # the same bytes were already in, without an external id to update
    UPDATED = "updated"  # its external id was known: that image took the item's captions, tags, ... (and file)


@dataclass(frozen=True)
class Stored:
    image: Image
    outcome: Outcome
    file_replaced: bool = False  # an update that brought new bytes: its vectors went, to be made again


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
    """:func:`store_new_image` of an image and what is recorded beside it."""
    one = NewImage(checked, captions, tags, licence, attribution, source, thumbnail, metadata, catalogue)
    return store_new_image(one, external_id=external_id, changes=changes)


def store_new_image(one: NewImage, *, external_id: str | None = None, changes: ImageChanges | None = None) -> Stored:
    """Store a validated image unless the same bytes are already in; with an ``external_id`` already in
    its catalogue, update that image instead (an upsert: never a second image for one partner id).

    Files are written before the row (atomically, under their content hash), so a failed insert
    leaves at most a file that the next ingestion of the same image reuses, never a row without a file.
    The attribution becomes a link on the image page, so anything but an http(s) URL is refused
    (``InvalidLink``) before anything is written. ``changes``: what an upsert sets on the known image
    (default: every non-empty value of ``one``).
    """
    if not external_id:
        # A plain add is the batched writer's (add_images) with one image: one code path for new rows.
        added = add_images([one])[0]
        if added.error is not None:
            raise added.error
        return Stored(added.image, Outcome.STORED if added.created else Outcome.DUPLICATE)
    attribution = checked_http_url(one.attribution.strip(), field="attribution")
    cleaned_metadata = validate_metadata(one.metadata or {})
    unique = unique_captions(one.captions)
    changes = changes or ImageChanges(
        captions=tuple(unique) or None,
        tags=tuple(one.tags) or None,
        metadata=cleaned_metadata or None,
        licence=one.licence or None,
        attribution=attribution or None,
        replace_metadata=True,
    )
    return _upsert(one.checked, one.catalogue, external_id, changes, source=one.source, thumbnail=one.thumbnail)


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
            return Stored(apply_changes(known, changes), Outcome.UPDATED, file_replaced=True)
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

    @classmethod
    def from_item(cls, item: IngestItem, read: ReadFile, catalogue: str = "") -> NewImage:
        """An ingested item's image: its file as the decode pool read it, its fields as its source gave them."""
        return cls(
            read.checked,
            captions=item.captions,
            tags=item.tags,
            licence=item.licence,
            attribution=item.attribution,
            source=read.source,
            thumbnail=read.thumbnail,
            metadata=item.metadata,
            catalogue=catalogue,
        )


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

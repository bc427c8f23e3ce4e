"""Changing a stored image: captions, tags, metadata, licence, attribution, and (by an upsert) its file.

One function, :func:`apply_changes`, is what ``PATCH /api/v1/images/<id>`` and an ingest naming a known
external id both call. Everything an edit touches follows in the edit's own transaction: the caption rows,
the full-text document (``collection.text_index``), the caption vectors of both text channels and the
catalogue revision that keys every process's result cache (``collection.revisions``), so the first search
after the commit sees the new text, in any process. Nothing is half-written: a value that fails its check
refuses the whole edit before a row changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from collection.embedding import embed_captions_of
from collection.images import CheckedImage
from collection.metadata import validate_metadata
from collection.models import Caption, Image, ImageEmbedding, ImageTowerOutput
from collection.revisions import bump_revision
from collection.tags import clean_tags
from collection.text_index import refresh_text_documents
from core.errors import Refused, UnknownImage
from core.links import checked_http_url

logger = logging.getLogger(__name__)

MAX_CAPTIONS = 20


class OtherCatalogue(Refused):
    """The image belongs to another partner's catalogue: it can be read, not changed, by this caller."""

    code = "other_catalogue"
    status = 403


class ContentElsewhere(Refused):
    """The bytes are already stored as another image, which an external id cannot take over."""

    code = "duplicate_content"
    status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message, field="image")


@dataclass(frozen=True)
class ImageChanges:
    """What an edit sets; None leaves that part as it is. ``metadata`` is merged (JSON merge patch, RFC 7396:
    a field set to null is removed) unless ``replace_metadata``, which ingest upserts use."""

    captions: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    metadata: dict | None = None
    licence: str | None = None
    attribution: str | None = None
    replace_metadata: bool = False

    @property
    def text_changes(self) -> bool:
        return self.captions is not None or self.tags is not None


def unique_captions(captions: Iterable[str]) -> list[str]:
    """Captions trimmed, blanks and repeats dropped, first-seen order kept (a caption is unique per image)."""
    return list(dict.fromkeys(c.strip() for c in captions if c and c.strip()))


def merged_metadata(current: dict, patch: dict) -> dict:
    """``current`` with ``patch`` applied as a JSON merge patch: a value replaces, null removes the field."""
    merged = {**current, **patch}
    return {name: value for name, value in merged.items() if value is not None}


def image_in_catalogue(catalogue: str, external_id: str) -> Image | None:
    return Image.objects.filter(catalogue=catalogue, external_id=external_id).first()


def find_image(catalogue: str, *, image_id: int | None = None, external_id: str | None = None) -> Image:
    """The image by Loupe's id (any catalogue: images are public to read) or by the caller's external id."""
    if external_id is not None:
        image = image_in_catalogue(catalogue, external_id)
        if image is None:
            raise UnknownImage(f"There is no image with external id {external_id!r} in this catalogue.")
        return image
    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        raise UnknownImage(f"There is no image {image_id}.")
    return image


def own_image(catalogue: str, *, image_id: int | None = None, external_id: str | None = None) -> Image:
    """``find_image``, refused (403) when the image is another catalogue's: a partner edits only its own."""
    image = find_image(catalogue, image_id=image_id, external_id=external_id)
    if image.catalogue != catalogue:
        raise OtherCatalogue(f"Image {image.pk} belongs to another catalogue; this key cannot change it.")
    return image


def apply_changes(image: Image, changes: ImageChanges) -> Image:
    """Apply ``changes`` to ``image`` in one transaction (the caller's, when it has one); returns it reloaded.

    Values are checked first (attribution as an http(s) link, metadata against the declared fields),
    so a refusal leaves the image as it was.
    """
    attribution = (
        checked_http_url(changes.attribution.strip(), field="attribution") if changes.attribution is not None else None
    )
    captions = unique_captions(changes.captions) if changes.captions is not None else None
    if captions is not None and len(captions) > MAX_CAPTIONS:
        raise Refused(f"At most {MAX_CAPTIONS} captions an image.", field="captions")
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image.pk)
        if changes.metadata is not None:
            base = {} if changes.replace_metadata else image.metadata
            image.metadata = validate_metadata(merged_metadata(base, changes.metadata))
        if changes.tags is not None:
            image.tags = clean_tags(changes.tags)
        if changes.licence is not None:
            image.licence = changes.licence.strip()[:300]
        if attribution is not None:
            image.attribution = attribution
        image.save()
        if captions is not None:
            _replace_captions(image, captions)
        if changes.text_changes:
            refresh_text_documents([image.pk])
        bump_revision()
    return Image.objects.get(pk=image.pk)


def text_edited(image_id: int) -> None:
    """Captions or tags changed by a form (the admin's): the full-text document, the vectors of new captions
    and the caches follow, as after ``apply_changes``. Call inside the form's transaction."""
    refresh_text_documents([image_id])
    _embed_captions(image_id)
    bump_revision()


def _replace_captions(image: Image, captions: list[str]) -> None:
    """Keep the captions that stay (and their vectors), drop the others, add the new ones with their vectors."""
    kept = {caption.text: caption for caption in image.captions.all()}
    Caption.objects.filter(image=image).exclude(text__in=captions).delete()
    for position, text in enumerate(captions):
        caption = kept.get(text)
        if caption is None:
            Caption.objects.create(image=image, text=text, position=position)
        elif caption.position != position:
            Caption.objects.filter(pk=caption.pk).update(position=position)
    _embed_captions(image.pk)


def _embed_captions(image_id: int) -> None:
    try:
        with transaction.atomic():  # a savepoint: the text is stored even if the encoders cannot run now
            embed_captions_of([image_id])
    except Exception:  # noqa: BLE001 - the periodic embedding task embeds captions still without vectors
        logger.exception("Could not embed the new captions of image %s now; the periodic task will.", image_id)


def replace_file(image: Image, checked: CheckedImage, *, file_name: str, thumbnail_name: str, source: str) -> None:
    """New bytes under a known external id: the image takes the new file, and its vectors (every encoder
    version) and cached tower outputs go, to be embedded again from the new pixels. Call inside the
    upsert's transaction; the old files are removed once it commits."""
    old_files = [image.file.name, image.thumbnail.name]
    Image.objects.filter(pk=image.pk).update(**checked.file_fields(file_name, thumbnail_name, source))
    ImageEmbedding.objects.filter(image=image).delete()
    ImageTowerOutput.objects.filter(image=image).delete()
    bump_revision()
    transaction.on_commit(lambda: _remove_files(old_files))


def _remove_files(names: list[str]) -> None:
    for name in names:
        if name and not Image.objects.filter(file=name).exists() and not Image.objects.filter(thumbnail=name).exists():
            (Path(settings.MEDIA_ROOT) / name).unlink(missing_ok=True)

"""The catalogue as a partner reconciles it: its images in the order they last changed, a page at a time.

``GET /api/v1/images?updated_since=…&cursor=…`` (searchapp.api.ingest) reads it. The order is
``(updated_at, id)``, and the cursor is the last row's pair, so a page never repeats or skips a row
however many change meanwhile: a row that changes again moves behind the cursor and comes once more,
later, with its new state. Polling with the last cursor returns what changed since.

Taken-down images come in the same walk as tombstones (``RemovedImage``: id, external id, when), at
the time they were removed, so a partner learns what is gone as it learns what changed.

A row's ``updated_at`` is the time its transaction wrote it, not when it committed: a change committing
a moment after a later one could land behind a cursor already handed out. Rows are therefore listed
only once they are ``LOUPE_CATALOGUE_SETTLE_SECONDS`` old (longer than any catalogue write's
transaction), the usual guard of timestamp-ordered change feeds.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from collection.models import Image, RemovedImage
from core.errors import Refused

MAX_PAGE = 500


class InvalidCursor(Refused):
    code = "invalid_cursor"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="cursor")


@dataclass(frozen=True)
class CataloguePage:
    images: list[Image]
    removed: list[RemovedImage]  # tombstones: images of the catalogue taken down in this stretch
    next_cursor: str  # pass it back for the rows after these; with has_more False, poll with it later
    has_more: bool


def encode_cursor(updated_at: dt.datetime, image_id: int) -> str:
    raw = f"{updated_at.astimezone(dt.UTC).isoformat()}|{image_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, image_id = raw.split("|")
        parsed = dt.datetime.fromisoformat(when)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, int(image_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor("cursor is not one this API handed out; start again with updated_since.") from None


def catalogue_page(
    catalogue: str, *, updated_since: dt.datetime | None = None, cursor: str | None = None, limit: int = 100
) -> CataloguePage:
    """The next ``limit`` images of ``catalogue`` that changed after the cursor (or at or after ``updated_since``)."""
    if not 1 <= limit <= MAX_PAGE:
        raise Refused(f"limit is between 1 and {MAX_PAGE}.", field="limit")
    settled = timezone.now() - dt.timedelta(seconds=settings.LOUPE_CATALOGUE_SETTLE_SECONDS)
    images = Image.objects.filter(catalogue=catalogue, updated_at__lt=settled)
    removed = RemovedImage.objects.filter(catalogue=catalogue, removed_at__lt=settled)
    if cursor:
        after, image_id = decode_cursor(cursor)
        images = images.filter(Q(updated_at__gt=after) | Q(updated_at=after, id__gt=image_id))
        removed = removed.filter(Q(removed_at__gt=after) | Q(removed_at=after, image_id__gt=image_id))
        start = cursor
    else:
        since = updated_since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        images, removed = images.filter(updated_at__gte=since), removed.filter(removed_at__gte=since)
        # Nothing yet: polling again from just before ``since`` finds what changes from now on.
        start = encode_cursor(since - dt.timedelta(microseconds=1), 2**63 - 1)
    # Two streams in one order, (time, id): take each's next limit + 1 and merge (image ids are never reused,
    # so an id is in one stream only).
    changed = [
        (i.updated_at, i.pk, i) for i in images.order_by("updated_at", "id").prefetch_related("captions")[: limit + 1]
    ]
    gone = [(r.removed_at, r.image_id, r) for r in removed.order_by("removed_at", "image_id")[: limit + 1]]
    merged = sorted(changed + gone, key=lambda entry: entry[:2])
    page = merged[:limit]
    next_cursor = encode_cursor(*page[-1][:2]) if page else start
    return CataloguePage(
        [row for *_, row in page if isinstance(row, Image)],
        [row for *_, row in page if isinstance(row, RemovedImage)],
        next_cursor,
        len(merged) > limit,
    )

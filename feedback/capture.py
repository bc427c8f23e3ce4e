"""Record clicks and ratings: validated, idempotent, capped per user, written straight to Postgres.

Each item carries a sender-chosen ``client_id``. Sending the same item again returns the stored
row instead of a second one; reusing a client id for a different item is a conflict (409). A
click must name an image that the event really showed at that position. One user key may add at
most ``LOUPE_FEEDBACK_HOURLY_CAP`` clicks and ratings per hour, so one user or bot cannot outweigh
everyone else in training. A per-user advisory lock makes the duplicate check and the cap exact
even when the same user's requests race.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from collection.models import Image
from core.errors import Refused, UnknownImage
from core.ids import created_seconds_ago
from core.locks import transaction_lock
from core.metrics import counted_feedback
from feedback.identity import Viewer
from feedback.log_writer import current_writer, flush_queued_logs
from feedback.models import Click, Impression, Rating, SearchEvent

CLIENT_ID = re.compile(r"^[\w.:-]{1,64}$")
MAX_DWELL_MS = 24 * 3600 * 1000


class FeedbackError(Refused):
    """Feedback we refuse."""

    code = "invalid_feedback"


class UnknownEvent(FeedbackError):
    code = "unknown_event"
    status = 404


class NotShown(FeedbackError):
    code = "not_shown"


class ClientIdConflict(FeedbackError):
    code = "client_id_conflict"
    status = 409


class CapReached(FeedbackError):
    code = "feedback_cap"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ClickInput:
    event_id: str
    image_id: int
    position: int
    client_id: str
    dwell_ms: int | None = None


@dataclass(frozen=True)
class RatingInput:
    image_id: int
    value: int
    client_id: str
    scale: str = Rating.Scale.THUMBS
    event_id: str | None = None
    query_text: str = ""


@dataclass(frozen=True)
class Recorded:
    """A stored click or rating and whether this call created it (False: it was a resend)."""

    item: Click | Rating
    created: bool


@counted_feedback("click")
def record_click(viewer: Viewer, given: ClickInput) -> Recorded:
    """Store a click on an image of an event's list (or return the one already stored under its client id)."""
    _check_client_id(given.client_id)
    if given.dwell_ms is not None and not 0 <= given.dwell_ms <= MAX_DWELL_MS:
        raise FeedbackError("dwell_ms must be between 0 and 86,400,000 (one day).", field="dwell_ms")
    if given.position < 1:
        raise FeedbackError("position starts at 1.", field="position")
    event = owned_event(viewer, given.event_id)
    with transaction.atomic():
        _lock_user(event.user_key)
        existing = Click.objects.filter(user_key=event.user_key, client_id=given.client_id).first()
        if existing is not None:
            return Recorded(_same_click(existing, event, given), created=False)
        _check_cap(event.user_key)
        if not Impression.objects.filter(event=event, image_id=given.image_id, position=given.position).exists():
            raise NotShown(
                f"Image {given.image_id} was not shown at position {given.position} in search {event.pk}.",
                field="position",
            )
        click = Click.objects.create(
            event=event,
            image_id=given.image_id,
            position=given.position,
            user_key=event.user_key,
            client_id=given.client_id,
            dwell_ms=given.dwell_ms,
        )
    return Recorded(click, created=True)


@counted_feedback("rating")
def record_rating(viewer: Viewer, given: RatingInput) -> Recorded:
    """Store a rating of an image, optionally tied to the search that showed it."""
    _check_client_id(given.client_id)
    _check_value(given.scale, given.value)
    if len(given.query_text) > settings.LOUPE_MAX_QUERY_CHARS:
        raise FeedbackError(f"query is limited to {settings.LOUPE_MAX_QUERY_CHARS} characters.", field="query")
    event = owned_event(viewer, given.event_id) if given.event_id else None
    user_key = event.user_key if event is not None else viewer.user_key
    if not Image.objects.filter(pk=given.image_id).exists():
        raise UnknownImage(f"There is no image {given.image_id}.", field="image_id")
    with transaction.atomic():
        _lock_user(user_key)
        existing = Rating.objects.filter(user_key=user_key, client_id=given.client_id).first()
        if existing is not None:
            if (existing.image_id, existing.scale, existing.value) != (given.image_id, given.scale, given.value):
                raise ClientIdConflict(f"client_id {given.client_id!r} was already used for another rating.")
            return Recorded(existing, created=False)
        _check_cap(user_key)
        if event is not None and not Impression.objects.filter(event=event, image_id=given.image_id).exists():
            raise NotShown(f"Image {given.image_id} was not in the results of search {event.pk}.", field="image_id")
        rating = Rating.objects.create(
            user_key=user_key,
            image_id=given.image_id,
            event=event,
            query_text=event.query_text if event is not None else given.query_text,
            scale=given.scale,
            value=given.value,
            client_id=given.client_id,
        )
    return Recorded(rating, created=True)


def _check_client_id(client_id: str) -> None:
    if not CLIENT_ID.match(client_id or ""):
        raise FeedbackError(
            "client_id must be 1-64 characters: letters, digits, '_', '-', '.', ':'.", field="client_id"
        )


def _check_value(scale: str, value: int) -> None:
    if scale == Rating.Scale.THUMBS and value not in (-1, 1):
        raise FeedbackError("A thumbs rating is 1 (up) or -1 (down).", field="value")
    if scale == Rating.Scale.STARS and not 1 <= value <= 5:
        raise FeedbackError("A star rating is 1 to 5.", field="value")
    if scale not in Rating.Scale.values:
        raise FeedbackError("scale is 'thumbs' or 'stars'.", field="scale")


def owned_event(viewer: Viewer, event_id: str) -> SearchEvent:
    """The event, if this viewer may give feedback on it: their own search, or their partner app's."""
    try:
        pk = uuid.UUID(str(event_id))
    except ValueError:
        raise FeedbackError("event_id is not a valid search event id.", field="event_id") from None
    event = _find_event(pk)
    mine = event is not None and (
        event.partner_id == viewer.partner_id if viewer.partner_id is not None else event.user_key == viewer.user_key
    )
    if not mine:
        raise UnknownEvent(f"There is no search event {event_id} of yours.", field="event_id")
    return event


def _find_event(pk: uuid.UUID) -> SearchEvent | None:
    """The event; for one made seconds ago, waiting a moment: its log may still be queued (``feedback.log_writer``).

    (Inside a batch's transaction too: each query of a READ COMMITTED transaction sees what was committed
    before it began.)
    """
    events = SearchEvent.objects.filter(pk=pk).only("pk", "user_key", "partner_id", "query_text")
    event = events.first()
    age = created_seconds_ago(pk)
    wait = settings.LOUPE_EVENT_WAIT_SECONDS
    if event is not None or age is None or not -1.0 <= age <= wait + 5.0:
        return event
    deadline = time.monotonic() + wait
    while event is None and time.monotonic() < deadline:
        if _queued_here(pk):
            flush_queued_logs(timeout=max(0.0, deadline - time.monotonic()))
        else:
            time.sleep(0.02)  # perhaps queued in another process: its writer is milliseconds behind
        event = events.first()
    return event


def _queued_here(pk: uuid.UUID) -> bool:
    found = current_writer()
    return found is not None and found.is_pending(pk)


def _same_click(existing: Click, event: SearchEvent, given: ClickInput) -> Click:
    """A resent click: the same click again (perhaps now with its dwell time), or a conflict."""
    if (existing.event_id, existing.image_id, existing.position) != (event.pk, given.image_id, given.position):
        raise ClientIdConflict(f"client_id {given.client_id!r} was already used for another click.")
    if given.dwell_ms is not None and given.dwell_ms > (existing.dwell_ms or 0):
        existing.dwell_ms = given.dwell_ms
        existing.save(update_fields=["dwell_ms"])
    return existing


def _lock_user(user_key: str) -> None:
    """Serialise one user's feedback writes until the transaction ends (other users are not blocked)."""
    transaction_lock(user_key)


def _check_cap(user_key: str) -> None:
    cap = settings.LOUPE_FEEDBACK_HOURLY_CAP
    since = timezone.now() - timedelta(hours=1)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM feedback_click WHERE user_key = %(u)s AND created_at > %(since)s)"
            " + (SELECT count(*) FROM feedback_rating WHERE user_key = %(u)s AND created_at > %(since)s),"
            " least((SELECT min(created_at) FROM feedback_click WHERE user_key = %(u)s AND created_at > %(since)s),"
            "       (SELECT min(created_at) FROM feedback_rating WHERE user_key = %(u)s AND created_at > %(since)s))",
            {"u": user_key, "since": since},
        )
        recent, oldest = cursor.fetchone()
    if recent >= cap:
        retry_after = max(1, int((oldest + timedelta(hours=1) - timezone.now()).total_seconds()) + 1) if oldest else 60
        raise CapReached(
            f"This user has given {recent} clicks and ratings in the last hour; the limit is {cap}.",
            retry_after=retry_after,
        )


def record_many(items: list[tuple[Viewer, ClickInput | RatingInput]]) -> list[Recorded | FeedbackError]:
    """Record a batch in one transaction (one commit for all), each item in its own savepoint.

    An item that is refused rolls back only its savepoint. Items are processed in user-key order so
    that two batches running at once take their per-user locks in the same order and never deadlock;
    results come back in the order given.
    """
    keys = _user_keys(items)
    results: list[Recorded | FeedbackError | None] = [None] * len(items)
    with transaction.atomic():
        for index in sorted(range(len(items)), key=lambda i: keys[i]):
            viewer, given = items[index]
            record = record_click if isinstance(given, ClickInput) else record_rating
            try:
                results[index] = record(viewer, given)
            except FeedbackError as exc:
                results[index] = exc
    return results


def _user_keys(items: list[tuple[Viewer, ClickInput | RatingInput]]) -> list[str]:
    """The user key each item will be recorded under (its event's, else the viewer's), in one query."""
    event_ids = set()
    for _, given in items:
        try:
            if given.event_id:
                event_ids.add(uuid.UUID(str(given.event_id)))
        except ValueError:
            pass
    owners = dict(SearchEvent.objects.filter(pk__in=event_ids).values_list("pk", "user_key"))
    keys = []
    for viewer, given in items:
        try:
            owner = owners.get(uuid.UUID(str(given.event_id))) if given.event_id else None
        except ValueError:
            owner = None
        keys.append(owner or viewer.user_key)
    return keys

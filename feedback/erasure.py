"""A user's right to be forgotten and to see what we hold: erase or export every search, click and rating of a key.

Erasure deletes, it does not anonymise (docs/security.md, "User erasure"): a search log is not made
anonymous by swapping the key for a tombstone, since the queries themselves identify people (the AOL
release of 2006 was re-identified from query text alone), and a log stripped of its queries cannot train.
Deleting a search with its impressions, clicks and ratings together keeps every remaining statistic
unbiased: click-through rates and the position curve lose a click only with the impression it was on,
and an experiment, whose unit is the user, loses one whole user from one arm.

The marker row (``ErasedUser``) is written first, in its own commit; every reader that learns from
feedback leaves out the key's rows from then on (``exclude_erased`` and ``NOT_ERASED_SQL``), so the
deletion can run in small batches (bounded lock time) and a training build in the middle of it sees
none of the user's rows rather than some.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, Func, OuterRef, QuerySet, TextField, Value
from django.dispatch import Signal
from django.utils import timezone

from collection.models import Image
from feedback.log_writer import flush_queued_logs
from feedback.models import ApiKey, Click, ErasedUser, Impression, Rating, SearchEvent

BATCH = 500  # searches per delete: each batch (with its impressions, ~20 per search) commits in milliseconds
# A deferred search log is written a few milliseconds after the search (feedback.log_writer); a minute
# covers every web process's queue without fencing off a returning user's new searches for long.
LATE_LOG_GRACE = timedelta(minutes=1)
ERASED_TABLE = ErasedUser._meta.db_table
# Sent with ``user_key`` once the marker is written: what a higher layer keeps per user in memory (the result
# cache's personalised orders, searchapp.result_cache) is dropped by its receiver.
user_erased = Signal()


def key_digest(user_key: str) -> str:
    return hashlib.sha256(user_key.encode()).hexdigest()


class KeyDigest(Func):
    """``key_digest`` in SQL (Postgres's built-in sha256), so a fence needs no list of keys in Python."""

    template = "encode(sha256(convert_to(%(expressions)s, 'UTF8')), 'hex')"
    output_field = TextField()


def exclude_erased(rows: QuerySet, user_key: str = "user_key", created_at: str = "created_at") -> QuerySet:
    """``rows`` (searches, clicks or ratings) without those of erased keys dated before their erasure."""
    dated = ExpressionWrapper(OuterRef(created_at) - Value(LATE_LOG_GRACE), output_field=DateTimeField())
    fence = ErasedUser.objects.filter(key_digest=KeyDigest(OuterRef(user_key)), erased_at__gte=dated)
    return rows.exclude(Exists(fence))


def not_erased_sql(alias: str) -> str:
    """The same fence as ``exclude_erased`` for raw SQL over search events aliased ``alias``."""
    return (
        f"NOT EXISTS (SELECT 1 FROM {ERASED_TABLE} erased "
        f"WHERE erased.key_digest = encode(sha256(convert_to({alias}.user_key, 'UTF8')), 'hex') "
        f"AND {alias}.created_at <= erased.erased_at + interval '{int(LATE_LOG_GRACE.total_seconds())} seconds')"
    )


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed."""

    user: str  # the id as the caller gave it (a partner's user id, or the Loupe key from the admin)
    searches: int
    clicks: int
    ratings: int
    erased_at: str


def erase_user_key(user_key: str, *, partner: ApiKey | None, requested_by: str, given: str = "") -> Erasure:
    """Delete every search (with its impressions and clicks), click and rating of ``user_key``, in batches."""
    flush_queued_logs()  # this process's queued searches first; other processes' are fenced by LATE_LOG_GRACE
    now = timezone.now()
    marker, _ = ErasedUser.objects.update_or_create(
        key_digest=key_digest(user_key),
        defaults={"partner": partner, "requested_by": requested_by[:200], "erased_at": now, "finished_at": None},
    )
    user_erased.send(sender=ErasedUser, user_key=user_key)
    ratings = _delete_in_batches(Rating.objects.filter(user_key=user_key))
    clicks = _delete_in_batches(Click.objects.filter(user_key=user_key))
    searches = 0
    while ids := list(SearchEvent.objects.filter(user_key=user_key).values_list("pk", flat=True)[:BATCH]):
        # One statement per table per batch: the impressions and any clicks go with their search, ratings
        # of other users on it (none in practice) lose the link, as the foreign keys say.
        _, deleted = SearchEvent.objects.filter(pk__in=ids).delete()
        searches += deleted.get(SearchEvent._meta.label, 0)
        clicks += deleted.get(Click._meta.label, 0)
    ErasedUser.objects.filter(pk=marker.pk).update(
        finished_at=timezone.now(),
        searches=F("searches") + searches,
        clicks=F("clicks") + clicks,
        ratings=F("ratings") + ratings,
    )
    return Erasure(given or user_key, searches, clicks, ratings, now.isoformat())


def _delete_in_batches(rows: QuerySet) -> int:
    deleted = 0
    while ids := list(rows.values_list("pk", flat=True)[:BATCH]):
        deleted += rows.model.objects.filter(pk__in=ids).delete()[0]
    return deleted


def _external_ids(user_key: str, catalogue: str) -> dict[int, str]:
    """Image id -> the partner's external id, for the images of ``catalogue`` this user saw, clicked or rated."""
    seen = Impression.objects.filter(event__user_key=user_key).values("image_id")
    touched = seen.union(
        Click.objects.filter(user_key=user_key).values("image_id"),
        Rating.objects.filter(user_key=user_key).values("image_id"),
    )
    images = Image.objects.filter(pk__in=touched, catalogue=catalogue, external_id__isnull=False)
    return dict(images.values_list("pk", "external_id"))


def export_user_key(user_key: str, given: str = "", catalogue: str = "") -> dict:
    """Every search (with the list as shown), click and rating we hold for ``user_key``, oldest first; images
    of ``catalogue`` (the asking partner's) carry its external ids beside Loupe's."""
    events = SearchEvent.objects.filter(user_key=user_key).order_by("created_at", "pk")
    external = _external_ids(user_key, catalogue)
    shown: dict = {}
    for impression in Impression.objects.filter(event__user_key=user_key).order_by("event_id", "position"):
        shown.setdefault(impression.event_id, []).append(
            {
                "position": impression.position,
                "image": impression.image_id,
                "external_id": external.get(impression.image_id),
                "score": impression.score,
            }
        )
    searches = [
        {
            "id": str(event.pk),
            "created_at": event.created_at.isoformat(),
            "kind": event.kind,
            "query": event.query_text,
            "query_image": event.query_image_id,
            "tags": event.tags,
            "page": event.page,
            "session": event.session,
            "arm": event.arm,
            "experiment": event.experiment_id,
            "impressions": shown.get(event.pk, []),
        }
        for event in events
    ]
    clicks = [
        {
            "id": click.pk,
            "search": str(click.event_id),
            "image": click.image_id,
            "external_id": external.get(click.image_id),
            "position": click.position,
            "dwell_ms": click.dwell_ms,
            "client_id": click.client_id,
            "created_at": click.created_at.isoformat(),
        }
        for click in Click.objects.filter(user_key=user_key).order_by("created_at", "pk")
    ]
    ratings = [
        {
            "id": rating.pk,
            "search": str(rating.event_id) if rating.event_id else None,
            "image": rating.image_id,
            "external_id": external.get(rating.image_id),
            "scale": rating.scale,
            "value": rating.value,
            "query": rating.query_text,
            "client_id": rating.client_id,
            "created_at": rating.created_at.isoformat(),
        }
        for rating in Rating.objects.filter(user_key=user_key).order_by("created_at", "pk")
    ]
    return {"user": given or user_key, "searches": searches, "clicks": clicks, "ratings": ratings}

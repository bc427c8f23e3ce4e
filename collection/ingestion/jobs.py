"""Bulk ingest as jobs: the lines of a request stored as items, ingested by the workers chunk by chunk.

Each item ends stored, duplicate or refused (with the reason); an item and the image it adds are
committed together, so a chunk redone after its worker died picks up exactly the items still pending.
Idempotent by content: a second job naming the same files stores nothing new (every item a duplicate);
by external id: an item naming one its catalogue already holds updates that image (outcome *updated*).

Paths outside ``LOUPE_INGEST_ROOTS`` and URLs off ``LOUPE_INGEST_URL_ALLOW`` are refused per item,
not for the whole request: one stale line must not void a job of thousands (docs/api.md, ingest jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from collection.image_changes import ContentElsewhere
from collection.images import InvalidImage, read_image
from collection.ingestion.fetch import fetch_url
from collection.ingestion.paths import allowed_path, read_path
from collection.ingestion.service import Outcome as StoreOutcome
from collection.ingestion.service import store_image
from collection.models import IngestJob, IngestJobItem
from core.links import InvalidLink

logger = logging.getLogger(__name__)

Outcome = IngestJobItem.Outcome
OUTCOMES = {
    StoreOutcome.STORED: Outcome.STORED,
    StoreOutcome.DUPLICATE: Outcome.DUPLICATE,
    StoreOutcome.UPDATED: Outcome.UPDATED,
}


@dataclass(frozen=True)
class JobLine:
    """One image of a job request: a server path or an allowed URL, with what to store beside it."""

    path: str = ""
    url: str = ""
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    licence: str = ""
    attribution: str = ""
    external_id: str = ""


@dataclass(frozen=True)
class ChunkResult:
    image_ids: list[int] = field(default_factory=list)  # stored or already present: to embed if they lack vectors
    done: int = 0  # items this run settled
    finished: bool = False  # this chunk settled the job's last pending item


def create_job(lines: Sequence[JobLine], *, chunk_size: int, requested_by: str = "", catalogue: str = "") -> IngestJob:
    with transaction.atomic():
        job = IngestJob.objects.create(requested_by=requested_by, catalogue=catalogue, chunk_size=chunk_size)
        IngestJobItem.objects.bulk_create(
            IngestJobItem(
                job=job,
                position=number,
                path=line.path,
                url=line.url,
                external_id=line.external_id,
                captions=list(line.captions),
                tags=list(line.tags),
                licence=line.licence,
                attribution=line.attribution,
            )
            for number, line in enumerate(lines, 1)
        )
    return job


def job_chunks(job: IngestJob) -> list[tuple[int, int]]:
    """(first, last) positions of the job's chunks, for one worker task each."""
    total = job.items.count()
    return [(first, min(first + job.chunk_size - 1, total)) for first in range(1, total + 1, job.chunk_size)]


def _item_bytes(item: IngestJobItem) -> tuple[bytes, str]:
    if item.url:
        return fetch_url(item.url), item.url
    path = allowed_path(item.path)
    return read_path(path), str(path)


def ingest_job_item(item: IngestJobItem, catalogue: str) -> None:
    """Settle one pending item: store its image, update the one its external id names, or refuse it."""
    try:
        with transaction.atomic():
            data, source = _item_bytes(item)
            stored = store_image(
                read_image(data),
                captions=item.captions,
                tags=item.tags,
                licence=item.licence,
                attribution=item.attribution,
                source=source,
                catalogue=catalogue,
                external_id=item.external_id or None,
            )
            item.image, item.outcome = stored.image, OUTCOMES[stored.outcome]
            item.done_at = timezone.now()
            item.save(update_fields=["image", "outcome", "done_at"])
    except (InvalidImage, InvalidLink, ContentElsewhere, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        item.outcome, item.reason, item.done_at = Outcome.REFUSED, reason[:500], timezone.now()
        item.save(update_fields=["outcome", "reason", "done_at"])
        logger.info("Ingest job %s, item %s refused: %s", item.job_id, item.position, reason)


def run_job_chunk(job_id: int, first: int, last: int) -> ChunkResult:
    """Settle the job's pending items in positions ``first..last``; safe to run again (done items are skipped)."""
    IngestJob.objects.filter(pk=job_id, status=IngestJob.Status.QUEUED).update(status=IngestJob.Status.RUNNING)
    pending = IngestJobItem.objects.filter(
        job_id=job_id, position__gte=first, position__lte=last, outcome=Outcome.PENDING
    ).order_by("position")
    done = 0
    catalogue = IngestJob.objects.values_list("catalogue", flat=True).get(pk=job_id)
    for item in pending:
        ingest_job_item(item, catalogue)
        done += 1
    image_ids = list(
        IngestJobItem.objects.filter(job_id=job_id, position__gte=first, position__lte=last, image__isnull=False)
        .order_by("position")
        .values_list("image_id", flat=True)
    )
    finished = False
    if not IngestJobItem.objects.filter(job_id=job_id, outcome=Outcome.PENDING).exists():
        # Only one chunk's update moves the job from running to done; that chunk reports it.
        finished = bool(
            IngestJob.objects.filter(pk=job_id)
            .exclude(status=IngestJob.Status.DONE)
            .update(status=IngestJob.Status.DONE, finished_at=timezone.now())
        )
    return ChunkResult(image_ids=image_ids, done=done, finished=finished)

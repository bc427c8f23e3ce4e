"""Bulk ingest as jobs: the lines of a request stored as items, ingested by the workers chunk by chunk.

Each item ends stored, duplicate or refused (with the reason); items are ingested in one pass, as
``manage.py ingest`` does (each file decoded once for validation, thumbnail and the tower's input), and a
group of items, the images they add and their vectors are committed together, so a chunk redone after
its worker died picks up exactly the items still pending.
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

from collection.embed_chunks import dispatch_run, plan_run
from collection.embedding import ImageVectorBatches, embed_captions_of, images_to_embed
from collection.ingestion.fetch import fetch_url
from collection.ingestion.one_pass import ItemResult, ingest_in_groups
from collection.ingestion.paths import allowed_path, read_path
from collection.ingestion.reading import ReadFile, TowerInput, read_bytes
from collection.ingestion.service import Outcome as StoreOutcome
from collection.ingestion.sources import IngestItem
from collection.models import Image, IngestJob, IngestJobItem

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


@dataclass
class JobItem(IngestItem):
    """A pending line of a job as the one-pass ingest reads it: its fields, and the row it settles."""

    row: IngestJobItem | None = None

    @classmethod
    def of(cls, row: IngestJobItem) -> JobItem:
        return cls(
            captions=list(row.captions),
            tags=list(row.tags),
            licence=row.licence,
            attribution=row.attribution,
            external_id=row.external_id,
            row=row,
        )


def read_job_item(item: JobItem, tower_input: TowerInput | None = None) -> ReadFile:
    """The line's bytes (its allowed path, or its allowed URL fetched) decoded once; InvalidImage if refused."""
    row = item.row
    if row.url:
        return read_bytes(fetch_url(row.url), row.url, tower_input)
    path = allowed_path(row.path)
    return read_bytes(read_path(path), str(path), tower_input)


def run_job_chunk(job_id: int, first: int, last: int, *, embed: ImageVectorBatches | None = None) -> ChunkResult:
    """Settle the job's pending items in positions ``first..last``; safe to run again (done items are skipped).

    Items go through the CLI's one-pass ingest (``ingest_in_groups``): each file decoded once, 32 items a
    transaction holding their images, their vectors (with ``embed``) and their outcomes, so a worker killed
    mid-chunk leaves its unfinished group pending, never stored without its vectors or its outcome. With
    ``embed``, the chunk's captions are embedded too, and any of its images still without a vector (a
    duplicate of one an upload had not embedded yet) sent to the embed workers, before the job can read done.
    """
    IngestJob.objects.filter(pk=job_id, status=IngestJob.Status.QUEUED).update(status=IngestJob.Status.RUNNING)
    pending = IngestJobItem.objects.filter(
        job_id=job_id, position__gte=first, position__lte=last, outcome=Outcome.PENDING
    ).order_by("position")
    catalogue = IngestJob.objects.values_list("catalogue", flat=True).get(pk=job_id)
    done = 0

    def record(group: list[tuple[JobItem, ItemResult]]) -> None:
        nonlocal done
        now = timezone.now()
        for item, result in group:
            row = item.row
            if result.outcome is None:
                row.outcome, row.reason = Outcome.REFUSED, result.reason[:500]
                logger.info("Ingest job %s, item %s refused: %s", job_id, row.position, result.reason)
            else:
                row.image, row.outcome = result.image, OUTCOMES[result.outcome]
            row.done_at = now
        IngestJobItem.objects.bulk_update([item.row for item, _ in group], ["image", "outcome", "reason", "done_at"])
        done += len(group)

    ingest_in_groups((JobItem.of(row) for row in pending), record, read=read_job_item, embed=embed, catalogue=catalogue)
    image_ids = list(
        IngestJobItem.objects.filter(job_id=job_id, position__gte=first, position__lte=last, image__isnull=False)
        .order_by("position")
        .values_list("image_id", flat=True)
    )
    if embed is not None and image_ids:
        embed_captions_of(image_ids)
        missing = images_to_embed(embed.version, images=Image.objects.filter(pk__in=image_ids))
        if missing.exists():
            dispatch_run(plan_run(embed.version, images=missing, started_by=f"ingest job {job_id}"))
    finished = False
    if not IngestJobItem.objects.filter(job_id=job_id, outcome=Outcome.PENDING).exists():
        # Only one chunk's update moves the job from running to done; that chunk reports it.
        finished = bool(
            IngestJob.objects.filter(pk=job_id)
            .exclude(status=IngestJob.Status.DONE)
            .update(status=IngestJob.Status.DONE, finished_at=timezone.now())
        )
    return ChunkResult(image_ids=image_ids, done=done, finished=finished)

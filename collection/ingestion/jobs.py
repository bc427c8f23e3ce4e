"""Bulk ingest as jobs: the lines of a request stored as items, ingested by the workers chunk by chunk.

Each item ends stored, duplicate or refused (with the reason); an item and the image it adds are
committed together, so a chunk redone after its worker died picks up exactly the items still pending.
Idempotent by content: a second job naming the same files stores nothing new (every item a duplicate).

Paths outside ``LOUPE_INGEST_ROOTS`` and URLs off ``LOUPE_INGEST_URL_ALLOW`` are refused per item,
not for the whole request: one stale line must not void a job of thousands (docs/api.md, ingest jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from collection.images import InvalidImage, read_image
from collection.ingestion.fetch import fetch_url
from collection.ingestion.paths import allowed_path, read_path
from collection.ingestion.service import add_image
from collection.models import Image, IngestJob, IngestJobItem
from core.links import InvalidLink

logger = logging.getLogger(__name__)

Outcome = IngestJobItem.Outcome


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


def create_job(lines: Sequence[JobLine], *, chunk_size: int, requested_by: str = "") -> IngestJob:
    with transaction.atomic():
        job = IngestJob.objects.create(requested_by=requested_by, chunk_size=chunk_size)
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


def image_with_external_id(external_id: str) -> Image | None:
    """The image the partner already sent under this id, if images carry external ids.

    The hook for issue 20 item 1: once ``Image`` has an ``external_id`` field, an item naming a known id is
    settled as a duplicate of that image without reading its file (the upsert of its captions and tags
    belongs to that item's code).
    """
    if not external_id or "external_id" not in {f.name for f in Image._meta.get_fields()}:
        return None
    return Image.objects.filter(external_id=external_id).first()


def _item_bytes(item: IngestJobItem) -> tuple[bytes, str]:
    if item.url:
        return fetch_url(item.url), item.url
    path = allowed_path(item.path)
    return read_path(path), str(path)


def ingest_job_item(item: IngestJobItem) -> None:
    """Settle one pending item: store its image (or find it already in), or refuse it with the reason."""
    known = image_with_external_id(item.external_id)
    try:
        with transaction.atomic():
            if known is not None:
                image, created = known, False
            else:
                data, source = _item_bytes(item)
                image, created = add_image(
                    read_image(data),
                    captions=item.captions,
                    tags=item.tags,
                    licence=item.licence,
                    attribution=item.attribution,
                    source=source,
                    ingested_by=item.job.requested_by,
                )
            item.image, item.outcome = image, Outcome.STORED if created else Outcome.DUPLICATE
            item.done_at = timezone.now()
            item.save(update_fields=["image", "outcome", "done_at"])
    except (InvalidImage, InvalidLink, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        item.outcome, item.reason, item.done_at = Outcome.REFUSED, reason[:500], timezone.now()
        item.save(update_fields=["outcome", "reason", "done_at"])
        logger.info("Ingest job %s, item %s refused: %s", item.job_id, item.position, reason)


def run_job_chunk(job_id: int, first: int, last: int) -> ChunkResult:
    """Settle the job's pending items in positions ``first..last``; safe to run again (done items are skipped)."""
    IngestJob.objects.filter(pk=job_id, status=IngestJob.Status.QUEUED).update(status=IngestJob.Status.RUNNING)
    pending = (
        IngestJobItem.objects.filter(job_id=job_id, position__gte=first, position__lte=last, outcome=Outcome.PENDING)
        .select_related("job")
        .order_by("position")
    )  # the job names the key each new image belongs to
    done = 0
    for item in pending:
        ingest_job_item(item)
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

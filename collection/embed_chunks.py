"""Embedding fanned out over Celery workers: the images to embed, cut into chunks, one task per chunk.

Any number of workers on any machines that share the media volume take chunks off the queue. A chunk
is safe to deliver twice or to lose half-way:

- a worker holds the chunk's row lock while it embeds, and stores the chunk's vectors and marks it done
  in that same transaction, so a worker killed mid-chunk stores nothing of it and its lock dies with its
  connection;
- tasks are acknowledged late and rejected when their worker is lost (``CELERY_TASK_ACKS_LATE``,
  ``CELERY_TASK_REJECT_ON_WORKER_LOST``), so the broker hands a killed worker's chunk to another
  (with Redis, once ``LOUPE_TASK_VISIBILITY_SECONDS`` have passed);
- a second delivery finds the chunk done and skips it, or finds it locked by a live worker and is
  retried later; vectors are upserted, never duplicated.

Resumable: a new run plans chunks over the images still lacking vectors, so re-running ``manage.py
embed`` after an interruption does only what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import F
from django.utils import timezone

from collection.embedding import embed_images, images_to_embed
from collection.encoders import Encoder
from collection.models import EmbedChunk, EmbedRun, EncoderVersion, Image

logger = logging.getLogger(__name__)

EMBED_CHUNK_TASK = "loupe.embed_chunk"  # defined in workers.tasks; sent by name (workers sit above this layer)


class ChunkBusy(Exception):
    """Another live worker holds this chunk; the delivery is retried later."""


class WrongEncoder(Exception):
    """The worker's encoder is not the one the run embeds with; the chunk stays for a worker that has it."""


@dataclass(frozen=True)
class ChunkOutcome:
    chunk: int
    embedded: int
    failed: int
    skipped: bool  # it was already done (a redelivery)


def plan_run(
    version: EncoderVersion,
    *,
    images=None,
    recompute: bool = False,
    chunk_size: int | None = None,
    started_by: str = "",
) -> EmbedRun:
    """An embed run over ``images`` (default: all) lacking vectors under ``version``, cut by id order."""
    chunk_size = chunk_size or settings.LOUPE_EMBED_CHUNK_SIZE
    ids = list(images_to_embed(version, recompute, images).order_by("pk").values_list("pk", flat=True))
    with transaction.atomic():
        run = EmbedRun.objects.create(encoder_version=version, recompute=recompute, started_by=started_by[:100])
        EmbedChunk.objects.bulk_create(
            EmbedChunk(run=run, image_ids=ids[start : start + chunk_size]) for start in range(0, len(ids), chunk_size)
        )
    return run


def dispatch(chunk_ids: Iterable[int]) -> int:
    """Send one task per chunk to whichever workers listen; returns how many were sent."""
    sent = 0
    for chunk_id in chunk_ids:
        current_app.send_task(EMBED_CHUNK_TASK, args=[chunk_id])
        sent += 1
    return sent


def dispatch_run(run: EmbedRun) -> int:
    """Send the run's chunks that are not done yet (all of a new run; what is left of an interrupted one)."""
    return dispatch(run.chunks.filter(done_at__isnull=True).values_list("pk", flat=True))


def embed_chunk(chunk_id: int, encoder: Encoder, *, version: EncoderVersion, worker: str = "") -> ChunkOutcome:
    """Embed and store one chunk in one transaction, holding its row lock; ``ChunkBusy`` if another holds it.

    ``encoder`` must be the run's version (this worker's serving one): a worker configured with another
    model refuses the chunk (``WrongEncoder``) rather than store vectors of one model under another's name.
    """
    EmbedChunk.objects.filter(pk=chunk_id, done_at__isnull=True).update(attempts=F("attempts") + 1)
    with transaction.atomic():
        try:
            chunk = EmbedChunk.objects.select_for_update(nowait=True).select_related("run").get(pk=chunk_id)
        except DatabaseError:  # nowait: the row is locked by a worker embedding it right now
            raise ChunkBusy(f"chunk {chunk_id} is being embedded by another worker") from None
        if chunk.done_at is not None:
            return ChunkOutcome(chunk=chunk.pk, embedded=0, failed=0, skipped=True)
        if chunk.run.encoder_version_id != version.pk:
            raise WrongEncoder(
                f"chunk {chunk.pk} embeds with encoder version {chunk.run.encoder_version_id}; "
                f"this worker serves {version.pk}"
            )
        report = embed_images(
            encoder,
            version,
            recompute=chunk.run.recompute,
            images=Image.objects.filter(pk__in=chunk.image_ids),
        )  # inside the chunk's transaction: all of its vectors are stored, or none
        chunk.embedded, chunk.failed = report.images, report.failed
        chunk.stored_times += 1
        chunk.worker = worker[:200]
        chunk.done_at = timezone.now()
        chunk.save(update_fields=["embedded", "failed", "stored_times", "worker", "done_at"])
    return ChunkOutcome(chunk=chunk.pk, embedded=report.images, failed=report.failed, skipped=False)


def unfinished_runs(version: EncoderVersion, started_by: str):
    return EmbedRun.objects.filter(
        encoder_version=version, started_by=started_by, chunks__done_at__isnull=True
    ).distinct()


def resume_and_plan(
    version: EncoderVersion, *, recompute: bool = False, chunk_size: int | None = None, started_by: str = ""
) -> list[EmbedRun]:
    """The unfinished runs this caller started earlier under ``version`` (to send again), then a new run over
    the images lacking vectors that none of them covers; the new run is left out when it has no chunk."""
    runs = list(unfinished_runs(version, started_by))
    covered = EmbedChunk.objects.filter(run__in=runs, done_at__isnull=True).values_list("image_ids", flat=True)
    covered_ids = {image_id for ids in covered for image_id in ids}
    new = plan_run(
        version,
        images=Image.objects.exclude(pk__in=covered_ids),
        recompute=recompute,
        chunk_size=chunk_size,
        started_by=started_by,
    )
    return runs + ([new] if new.chunks.exists() else [])


def chunks_left(runs: Sequence[EmbedRun]) -> tuple[int, int]:
    """(images in chunks done, images in all) over these runs, for a progress bar."""
    done = total = 0
    for chunk in EmbedChunk.objects.filter(run__in=runs).only("image_ids", "done_at"):
        total += len(chunk.image_ids)
        done += len(chunk.image_ids) if chunk.done_at else 0
    return done, total


def workers_listening(timeout: float = 1.0) -> int:
    """How many workers answer a ping (0: chunks wait in the queue until one starts)."""
    return len(current_app.control.ping(timeout=timeout) or [])

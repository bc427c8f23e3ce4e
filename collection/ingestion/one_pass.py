"""Ingesting in one pass: each file read and decoded once, its row stored and its vector made together.

Files are read, checked and thumbnailed (and turned into the tower's input) in a few threads ahead of
the caller's thread (``collection.decode_pool``), which alone touches the database, in the items'
order. Items are then settled ``ROWS_PER_BATCH`` at a time, each group in one transaction: its rows,
its vectors and what the caller records about it (``record``) commit together or not at all, so a
process killed mid-group leaves none of that group behind and a rerun does exactly that group again.
``manage.py ingest`` (:func:`ingest_items`) and the ingest jobs' chunks (``collection.ingestion.jobs``)
both go through :func:`ingest_in_groups`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from django.conf import settings
from django.db import transaction

from collection.decode_pool import Prepared, chunked, prepared_in_order
from collection.embedding import ImageVectorBatches
from collection.image_changes import ContentElsewhere
from collection.images import InvalidImage
from collection.ingestion.reading import ReadFile, TowerInput, read_item_file
from collection.ingestion.service import ROWS_PER_BATCH, Added, NewImage, Outcome, add_images, store_new_image
from collection.ingestion.sources import IngestItem
from collection.metadata import InvalidMetadata
from collection.models import Image
from core.links import InvalidLink

logger = logging.getLogger(__name__)

Item = TypeVar("Item", bound=IngestItem)


@dataclass(frozen=True)
class ItemResult:
    """What became of one item: stored, duplicate or updated (with its image), or skipped and why."""

    outcome: Outcome | None
    image: Image | None = None
    reason: str = ""


Record = Callable[[list[tuple[Item, ItemResult]]], None]
Read = Callable[[Item, TowerInput | None], ReadFile | None]


def ingest_in_groups(
    items: Iterable[Item],
    record: Record,
    *,
    read: Read = read_item_file,
    embed: ImageVectorBatches | None = None,
    catalogue: str = "",
    workers: int | None = None,
) -> None:
    """Settle each item; ``record(group)`` is called inside each group's transaction with its results.

    ``read(item, tower_input)`` runs in the decode threads; an OSError or InvalidImage it raises skips
    that item with the reason. With ``embed``, each new image (and each update that brought new bytes)
    is embedded from the pixels ``read`` made, and its vectors are stored before the group commits.
    """
    workers = settings.LOUPE_DECODE_WORKERS if workers is None else workers
    tower_input = embed.encoder.pixels if embed is not None else None
    # Two batches in flight: the threads fill the next while this thread writes rows and runs the tower. Memory
    # is bounded by that many files' bytes (64 x a few MB for photos; LOUPE_MAX_UPLOAD_BYTES at worst).
    window = max(2 * (embed.batch_size if embed is not None else 0), 2 * ROWS_PER_BATCH) if workers > 0 else None
    prepared = prepared_in_order(lambda item: read(item, tower_input), items, workers=workers, window=window)
    for group in chunked(prepared, ROWS_PER_BATCH):
        with transaction.atomic():
            results = _ingest_group(group, embed, catalogue)
            if embed is not None:
                embed.flush()  # this group's vectors in this group's transaction
            record([(p.item, result) for p, result in zip(group, results, strict=True)])


def _ingest_group(group: list[Prepared], embed: ImageVectorBatches | None, catalogue: str) -> list[ItemResult]:
    """Each prepared item's result, in order.

    Items without an external id are added together (``add_images``); an item naming one is an upsert,
    which takes its own locks (``store_new_image``), so it goes alone.
    """
    results: list[ItemResult] = []
    readable: list[tuple[int, Prepared]] = []
    for prepared in group:
        if prepared.item.problem:  # its source refused it (a bad row); the file, if any, is not stored
            results.append(ItemResult(None, reason=prepared.item.problem))
        elif prepared.error is not None:
            if not isinstance(prepared.error, OSError | InvalidImage):
                raise prepared.error
            results.append(ItemResult(None, reason=reason_of(prepared.error)))
        elif prepared.item.external_id:
            results.append(_upsert_item(prepared, embed, catalogue))
        else:
            readable.append((len(results), prepared))
            results.append(ItemResult(Outcome.DUPLICATE))
    new = [NewImage.from_item(prepared.item, prepared.result, catalogue) for _, prepared in readable]
    try:
        added = add_images(new)
    except OSError:  # a file could not be written: find which, one at a time
        added = [_add_alone(one) for one in new]
    for (position, prepared), result in zip(readable, added, strict=True):
        if result.error is not None:
            results[position] = ItemResult(None, reason=reason_of(result.error))
        else:
            results[position] = ItemResult(Outcome.STORED if result.created else Outcome.DUPLICATE, result.image)
            if result.created and embed is not None:
                embed.add(result.image, prepared.result.pixels)
    return results


def _upsert_item(prepared: Prepared, embed: ImageVectorBatches | None, catalogue: str) -> ItemResult:
    one = NewImage.from_item(prepared.item, prepared.result, catalogue)
    try:
        stored = store_new_image(one, external_id=prepared.item.external_id)
    except (OSError, InvalidLink, InvalidMetadata, ContentElsewhere) as exc:
        return ItemResult(None, reason=reason_of(exc))
    if (stored.outcome == Outcome.STORED or stored.file_replaced) and embed is not None:
        embed.add(stored.image, prepared.result.pixels)
    return ItemResult(stored.outcome, stored.image)


def _add_alone(one: NewImage) -> Added:
    try:
        return add_images([one])[0]
    except OSError as exc:
        return Added(None, error=exc)


def reason_of(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


@dataclass
class IngestReport:
    added: int = 0
    duplicates: int = 0
    updated: int = 0  # rows whose external id was known: that image was updated
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def ingest_items(
    items: Iterable[IngestItem],
    *,
    progress: Callable[[IngestItem], None] | None = None,
    workers: int | None = None,
    embed: ImageVectorBatches | None = None,
) -> IngestReport:
    """Ingest each item; a bad file, or an item its source refused, is reported and skipped, never stops the run.

    Files are read in ``workers`` threads (default LOUPE_DECODE_WORKERS); with ``embed``, each added image
    is embedded in the same pass: the threads make its tower input too, a batch ahead of the encoder, so
    they decode the next batch while the tower runs this one.
    """
    report = IngestReport()

    def record(group: list[tuple[IngestItem, ItemResult]]) -> None:
        for item, result in group:
            if result.outcome is None:
                report.failed.append((str(item.path), result.reason))
                logger.warning("Skipped %s: %s", item.path, result.reason)
            else:
                report.added += result.outcome == Outcome.STORED
                # Duplicates were embedded already (or are, by the run's embed_images pass); new bytes were, above.
                report.duplicates += result.outcome == Outcome.DUPLICATE
                report.updated += result.outcome == Outcome.UPDATED
            if progress:
                progress(item)

    ingest_in_groups(items, record, embed=embed, workers=workers)
    return report

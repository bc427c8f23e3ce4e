"""Takedowns: remove images by id with every trace of them, in batches that hold locks for milliseconds.

What goes, as the foreign keys' ``on_delete`` says (so a table keyed by image added later goes too): the
Image row with its full-text document, captions and their vectors, image vectors under every encoder
version, cached tower outputs; the files and thumbnails on disk once the batch commits; and, through
``images_removed``, whatever an upper layer keeps outside the database (the fine-tuning hidden-state
files, ``ranking.finetune.tower_inputs``).

What stays, detached: impressions, clicks and ratings keep their rows with the image set to NULL
(docs/security.md, "Takedowns"). Deleting them would take a click out of its search, and the position
curve (``ranking.propensity``), click-through rates and the analytics count positions and clicks of
every list; a list with a hole at position 3 still says that positions 1, 2 and 4 were shown. Every
reader that learns about images leaves detached rows out (``kept_images``), so no training set,
fine-tuning pair or summary names the image again.

Order of work: the fence (``RemovedImage`` for every id, and a catalogue revision bump,
``collection.revisions``) commits first, so pages stop showing the images, every process's cached
orders and image rows are keyed by a revision no later search reads, and training builds stop
reading the images before the first batch; then
batches of ``BATCH`` images, each its own transaction. A search never waits on a takedown (readers do
not block on deletes under MVCC); what waits is a write that touches the same rows (a click's
impression, a log naming a removed image), for one batch at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.dispatch import Signal

from collection.models import Image, RemovedImage
from collection.revisions import bump_revision

logger = logging.getLogger(__name__)

# Images per transaction. Measured on the 2-core dev machine (bench/takedown.py, docs/performance.md): a
# batch of 500 with captions, two vectors and feedback commits in ~0.2 s; a search meanwhile is not slowed.
BATCH = 500
REMOVED_TABLE = RemovedImage._meta.db_table
IMAGE_TABLE = Image._meta.db_table

# Sent after each batch commits, with ``image_ids``: layers above the collection forget what they keep
# of those images outside the database (collection cannot import them; they connect in their AppConfig).
images_removed = Signal()


@dataclass(frozen=True)
class Takedown:
    """What a takedown removed, and how long its longest transaction held its locks."""

    removed: list[int]
    unknown: list[int]  # ids that named no image (never existed, or already taken down)
    batches: int
    longest_batch_seconds: float


def remove_images(image_ids: Iterable[int], *, requested_by: str, batch: int | None = None) -> Takedown:
    """Take these images down: fence first, then delete in batches; files go when each batch commits."""
    wanted = sorted({int(i) for i in image_ids})
    rows = Image.objects.filter(pk__in=wanted).values_list("pk", "sha256", "catalogue", "external_id")
    found = {pk: (sha256, catalogue, external_id) for pk, sha256, catalogue, external_id in rows}
    ids = sorted(found)
    unknown = [i for i in wanted if i not in found]
    if not ids:
        return Takedown([], unknown, 0, 0.0)
    with transaction.atomic():
        RemovedImage.objects.bulk_create(
            [
                RemovedImage(
                    image_id=i,
                    sha256=found[i][0],
                    catalogue=found[i][1],
                    external_id=found[i][2],
                    requested_by=requested_by[:200],
                )
                for i in ids
            ],
            batch_size=1000,
            ignore_conflicts=True,  # an interrupted takedown asked again
        )
        bump_revision()
    size = batch or BATCH
    longest = max(_delete_batch(ids[start : start + size]) for start in range(0, len(ids), size))
    logger.info("took down %d images for %s (%d unknown ids)", len(ids), requested_by, len(unknown))
    return Takedown(ids, unknown, -(-len(ids) // size), longest)


def _delete_batch(ids: list[int]) -> float:
    """Delete one batch in one transaction; returns how long it held its locks (begin to commit)."""
    began = time.perf_counter()
    committed: list[float] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            for sql in _removal_sql(Image, "id = ANY(%(ids)s)")[:-1]:
                cursor.execute(sql, {"ids": ids})
            cursor.execute(
                f"DELETE FROM {IMAGE_TABLE} WHERE id = ANY(%(ids)s) RETURNING sha256, file, thumbnail", {"ids": ids}
            )
            gone = cursor.fetchall()
        bump_revision()
        transaction.on_commit(lambda: committed.append(time.perf_counter()))
        transaction.on_commit(partial(_after_commit, ids, gone))
    return (committed[0] if committed else time.perf_counter()) - began


def _removal_sql(model: type[models.Model], where: str) -> list[str]:
    """Statements that remove ``model``'s rows matching ``where``, rows that depend on them first, as their
    foreign keys' ``on_delete`` says: one statement per table, by index (Django's collector loads every
    row into Python first: 3.7 s for a batch of 500 images measured, against 0.4 s for these statements).
    Any table keyed by image added later is covered; an ``on_delete`` this cannot express is refused."""
    table, pk = model._meta.db_table, model._meta.pk.column
    statements = []
    # ``related_objects`` leaves out hidden relations (``related_name="+"``, as NearDuplicate's): read them all.
    relations = [
        f for f in model._meta.get_fields(include_hidden=True) if f.auto_created and not f.concrete and f.is_relation
    ]
    for relation in relations:
        if relation.many_to_many:
            raise ImproperlyConfigured(f"{relation.name}: a takedown does not remove many-to-many rows.")
        child = relation.related_model
        column = relation.field.column
        matching = f"{column} IN (SELECT {pk} FROM {table} WHERE {where})"
        if relation.on_delete is models.DO_NOTHING or not child._meta.managed:
            continue  # materialised views over the feedback (feedback.summaries), refreshed by their task
        if relation.on_delete is models.CASCADE:
            statements += _removal_sql(child, matching)
        elif relation.on_delete is models.SET_NULL:
            statements.append(f"UPDATE {child._meta.db_table} SET {column} = NULL WHERE {matching}")
        else:
            raise ImproperlyConfigured(
                f"{child.__name__}.{relation.field.name}: a takedown cannot apply its on_delete."
            )
    statements.append(f"DELETE FROM {table} WHERE {where}")
    return statements


def _after_commit(ids: list[int], gone: list[tuple[str, str, str]]) -> None:
    """Remove the batch's files (a rolled-back batch keeps them) and tell the upper layers."""
    # Files are named by content: the same bytes ingested again since own the same names.
    again = set(Image.objects.filter(sha256__in=[sha for sha, _, _ in gone]).values_list("sha256", flat=True))
    root = Path(settings.MEDIA_ROOT)
    for sha, *names in gone:
        for name in names:
            if name and sha not in again:
                (root / name).unlink(missing_ok=True)
    images_removed.send(sender=Image, image_ids=ids)


def unfinished() -> list[int]:
    """Ids fenced by a takedown whose batch never ran (the process died): ``manage.py remove --resume``."""
    fenced = Image.objects.filter(Exists(RemovedImage.objects.filter(image_id=OuterRef("pk"))))
    return list(fenced.order_by("pk").values_list("pk", flat=True))


def kept_images(rows: QuerySet, image: str = "image") -> QuerySet:
    """``rows`` (impressions, clicks, ratings) without those of taken-down images: detached or still fenced."""
    fence = RemovedImage.objects.filter(image_id=OuterRef(f"{image}_id"))
    return rows.filter(**{f"{image}__isnull": False}).exclude(Exists(fence))


def kept_image_sql(column: str) -> str:
    """The same fence as ``kept_images`` for raw SQL: ``column`` names an image id."""
    return f"({column} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {REMOVED_TABLE} r WHERE r.image_id = {column}))"

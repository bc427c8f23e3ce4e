"""Embedding fanned out over real Celery workers (embedded Redis and PostgreSQL): each image embedded
exactly once by two workers together, and a worker SIGKILLed mid-chunk loses nothing."""

from __future__ import annotations

import io
import signal
import time

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from collection.embed_chunks import dispatch_run, plan_run
from collection.images import read_image
from collection.ingestion.service import add_image
from collection.models import CaptionEmbedding, EmbedChunk, Image, ImageEmbedding
from collection.versions import serving_version
from tests.conftest import image_bytes
from tests.integration.test_worker import purge, redis_url, start_worker  # noqa: F401 - redis_url is a fixture
from workers.celery_app import app

QUEUE = "celery"


def add_images(count: int) -> list[int]:
    return [add_image(read_image(image_bytes(seed)), captions=[f"picture {seed}"])[0].pk for seed in range(count)]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def ready(*names: str) -> None:
    """Until every named worker answers a ping, so that none drains the queue before the others listen."""
    wanted = {f"{name}@" for name in names}

    def answered() -> bool:
        replies = app.control.ping(timeout=0.5) or []
        seen = {next(iter(reply)).split("@")[0] + "@" for reply in replies}
        return wanted <= seen

    wait_until(answered, 120, f"workers {sorted(names)} to answer")


def stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(30)


@pytest.fixture
def workers(transactional_db, redis_url, media_root):  # noqa: F811
    started = []

    def start(name: str, **env) -> object:
        process = start_worker(redis_url, media_root, QUEUE, name=name, env=env, purged=not started)
        started.append(process)
        return process

    yield start
    for process in started:
        stop(process)


def test_two_workers_embed_a_collection_together_each_image_once(workers):
    ids = add_images(24)
    workers("one")
    workers("two")
    ready("one", "two")
    out = io.StringIO()
    call_command("embed", chunk_size=3, stdout=out)  # waits for the workers, then embeds what is left here
    _, version = serving_version()
    stored = ImageEmbedding.objects.filter(encoder_version=version)
    assert stored.count() == 24 and set(stored.values_list("image_id", flat=True)) == set(ids)
    chunks = list(EmbedChunk.objects.filter(run__encoder_version=version))
    assert len(chunks) == 8 and all(chunk.done_at is not None for chunk in chunks)
    assert [chunk.stored_times for chunk in chunks] == [1] * 8, "no chunk was stored twice"
    covered = [image_id for chunk in chunks for image_id in chunk.image_ids]
    assert sorted(covered) == sorted(ids), "the chunks cut the collection without overlap"
    assert {chunk.worker.split("@")[0] for chunk in chunks} == {"one", "two"}, "both workers took chunks"
    # The chunks embedded their images' captions on the workers too.
    assert CaptionEmbedding.objects.filter(encoder_version=version).count() == 24
    assert "24 images embedded by the workers" in out.getvalue()
    # Run again: nothing left, no new chunk.
    call_command("embed", stdout=io.StringIO())
    assert EmbedChunk.objects.count() == 8 and stored.count() == 24


def blocked_on_tower_outputs() -> bool:
    """A worker's chunk transaction waits to insert tower outputs: vectors computed, rows half-inserted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO \"searchapp_imagetoweroutput\"%%'"
        )
        return cursor.fetchone()[0] > 0


def table_lock():
    """A second connection that holds the tower-output table against inserts until it is closed."""
    db = connection.settings_dict
    holder = psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"], autocommit=False)
    holder.execute("LOCK TABLE searchapp_imagetoweroutput IN EXCLUSIVE MODE")
    return holder


def test_a_worker_killed_mid_chunk_loses_nothing_and_its_chunk_is_redone(workers):
    ids = add_images(12)
    _, version = serving_version()
    run = plan_run(version, chunk_size=4)
    fast_redelivery = {"LOUPE_TASK_VISIBILITY_SECONDS": "3"}  # the broker gives an unacked chunk back after 3 s
    holder = table_lock()
    try:
        doomed = workers("doomed", **fast_redelivery)
        ready("doomed")
        dispatch_run(run)
        wait_until(blocked_on_tower_outputs, 120, "the worker to be mid-chunk")
        killed = EmbedChunk.objects.get(run=run, attempts=1, done_at__isnull=True)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
    finally:
        holder.close()  # the dead worker's transaction now fails and rolls back
    wait_until(lambda: not blocked_on_tower_outputs(), 30, "the killed worker's transaction to end")
    assert not ImageEmbedding.objects.filter(image_id__in=killed.image_ids).exists(), "nothing half-stored"
    workers("survivor", **fast_redelivery)
    wait_until(lambda: not EmbedChunk.objects.filter(run=run, done_at__isnull=True).exists(), 180, "every chunk")
    killed.refresh_from_db()
    assert killed.attempts >= 2 and killed.stored_times == 1 and killed.worker.startswith("survivor@")
    stored = ImageEmbedding.objects.filter(encoder_version=version)
    assert stored.count() == 12 and set(stored.values_list("image_id", flat=True)) == set(ids)
    assert list(EmbedChunk.objects.filter(run=run).values_list("stored_times", flat=True)) == [1, 1, 1]
    assert Image.objects.count() == 12

"""A real Celery worker on the embedded Redis runs the embedding task against the test database."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from collection.images import read_image
from collection.ingestion.service import add_image
from collection.models import CaptionEmbedding, ImageEmbedding
from core.embedded import embedded_redis
from tests.conftest import image_bytes
from workers.tasks import embed_missing


@pytest.fixture(scope="session")
def redis_url():
    """Held for the whole session (released at exit), so result listeners never lose their server."""
    return embedded_redis(settings.VAR_DIR).acquire()


def purge(queue: str) -> None:
    """Drop messages an earlier run left in the queue (the embedded Redis keeps them across runs)."""
    from workers.celery_app import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge(queue)


def start_worker(
    redis_url, media_root, queue: str, *, name: str = "", env: dict | None = None, purged: bool = True
) -> subprocess.Popen:
    """A worker process on ``queue``, named ``name@host`` (default: the queue's name)."""
    if purged:
        purge(queue)
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}",
        REDIS_URL=redis_url,
        LOUPE_MEDIA_ROOT=str(media_root),
        **(env or {}),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "-Q",
            queue,
            "-n",
            f"{name or queue}@%h",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=Path(settings.BASE_DIR),
        env=env,
    )


@pytest.fixture
def worker(transactional_db, redis_url, media_root):
    process = start_worker(redis_url, media_root, "celery")
    yield process
    process.terminate()
    process.wait(30)


@pytest.fixture
def trainer(transactional_db, redis_url, media_root):
    """A worker that only takes the training queue, as `manage.py run` starts one."""
    process = start_worker(redis_url, media_root, "training")
    yield process
    process.terminate()
    process.wait(30)


def test_fine_tuning_is_routed_to_the_training_queue(trainer, service):
    from ranking.models import FineTuneRun
    from workers.tasks import finetune_encoder

    result = finetune_encoder.delay().get(timeout=180)  # no other worker listens: only the trainer can run it
    assert result["outcome"] == "skipped"  # no feedback yet: nothing to learn from
    run = FineTuneRun.objects.get()
    assert run.base_id == service.version.pk and run.outcome == FineTuneRun.Outcome.SKIPPED


def test_worker_embeds_images_added_without_vectors(worker):
    for seed in range(3):
        add_image(read_image(image_bytes(seed)), captions=[f"caption {seed}"])
    assert ImageEmbedding.objects.count() == 0
    result = embed_missing.delay().get(timeout=120)
    assert result["images"] == 3 and result["captions"] == 3 and result["failed"] == 0
    assert result["text_captions"] == 3  # the text channel's sentence vectors too
    assert ImageEmbedding.objects.count() == 3 and CaptionEmbedding.objects.count() == 6
    # Running it again finds nothing left to do.
    assert embed_missing.delay().get(timeout=120)["images"] == 0


def test_worker_retrains_promotes_and_search_uses_the_new_ranker(worker, settings):
    """A short loop on the embedded Postgres: logged searches and clicks, the scheduled task on a real
    worker trains and promotes a ranker, and the next search in this process serves it."""
    from ranking.models import RankerVersion
    from ranking.registry import active_ranker, rankers_dir
    from searchapp.search import SearchRequest, SearchService
    from tests.conftest import build_collection
    from tests.integration.ranking.test_learning_loop import QUERY, shown_seventh, users_prefer
    from workers.tasks import retrain_ranker

    settings.LOUPE_RANKER_CHECK_SECONDS = 0
    active_ranker.forget()
    service = SearchService()
    collection = build_collection(service)
    favourite = shown_seventh(service, collection)
    users_prefer(service, favourite, 60)
    result = retrain_ranker.delay(force=True).get(timeout=300)  # the task refreshes the summaries first
    assert result["outcome"] in ("promoted", "kept")
    users_prefer(service, favourite, 120, start=60)
    retrain_ranker.delay(force=True).get(timeout=300)
    version = RankerVersion.objects.get(status="active")  # promoted by one of the two runs
    try:
        served = service.search(SearchRequest(text=QUERY, page_size=12))
        assert served.ranker == version.label and served.hits[0].image.pk == favourite.pk
    finally:
        active_ranker.forget()
        for stale in RankerVersion.objects.all():
            (rankers_dir() / stale.artefact).unlink(missing_ok=True)

"""A takedown while two web processes serve cached results: gone from both within a second (issue 20, item 4).

Each process keeps whole served orders and image rows in its own memory for 60 s here; only the catalogue
revision (``collection.revisions``), read from the database once per search and part of both caches' keys, can
tell them that an image was removed: the takedown's fence and each batch bump it.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from collection.takedown import remove_images
from feedback.identity import Viewer
from searchapp.result_cache import image_cache, result_cache
from searchapp.search import SearchRequest
from tests.integration.collection.test_embedded import _wait_for
from tests.integration.searchapp.test_run_command import _free_port
from tests.integration.test_worker import redis_url  # noqa: F401 (the fixture)

QUERY = "caption%203%20of%20a%20test%20picture"


def start_web(port: int, redis: str, log: Path) -> subprocess.Popen:
    db = connection.settings_dict
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="config.settings",  # the product's settings: result cache on (60 s)
        DATABASE_URL=f"postgresql://{db['USER']}@/{db['NAME']}?host={db['HOST']}",
        REDIS_URL=redis,
        LOUPE_RESULT_CACHE_SECONDS="60",
        LOUPE_ENCODER_FALLBACK="false",
        PYTHONUNBUFFERED="1",
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def searched(port: int) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/search?q={QUERY}&page_size=12"
    with urllib.request.urlopen(url, timeout=60) as response:
        body = json.loads(response.read())
    return {"ids": [hit["image"]["id"] for hit in body["results"]], "cached": body["meta"]["cached"]}


def up(port: int, process: subprocess.Popen) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status == 200
    except OSError:
        return process.poll() is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(400)
def test_a_takedown_leaves_both_web_processes_within_a_second(collection, redis_url, tmp_path):  # noqa: F811
    ports = [_free_port(), _free_port()]
    logs = [tmp_path / f"web{n}.log" for n in range(2)]
    servers = [start_web(port, redis_url, log) for port, log in zip(ports, logs, strict=True)]
    try:
        for port, server, log in zip(ports, servers, logs, strict=True):
            assert _wait_for(lambda p=port, s=server: up(p, s), 240) and server.poll() is None, log.read_text()[-3000:]
        first = [searched(port) for port in ports]
        target = first[0]["ids"][0]
        # Both serve it from memory before the takedown (a search on a loaded machine can land on an entry that
        # has just been replaced: ask again until each answers from its cache).
        for port in ports:
            assert _wait_for(lambda p=port: (answer := searched(p))["cached"] and target in answer["ids"], 10)

        remove_images([target], requested_by="test")
        removed_at = time.monotonic()
        took = []
        for port in ports:
            assert _wait_for(lambda p=port: target not in searched(p)["ids"], 5)
            took.append(time.monotonic() - removed_at)
        assert max(took) < 1.0, took
        assert all(target not in searched(port)["ids"] for port in ports)  # and it stays gone
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(30)


@pytest.mark.django_db
def test_a_search_that_read_the_image_before_the_takedown_does_not_serve_it_after(
    service, collection, settings, monkeypatch
):
    """The race the revision keying closes: a search reads the catalogue revision and an image row, the takedown
    commits, then that search stores its order and the row. They are stored under the revision it read, which no
    later search reads, so the next search (in this or any process) misses and the image is gone."""
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    result_cache.forget()
    image_cache.forget()
    taken: list[int] = []
    store = image_cache.put

    def store_after_a_takedown(key, image, *rest):
        if not taken:  # the first row the racing search read: taken down between its read and its store
            taken.append(image.pk)
            remove_images([image.pk], requested_by="test")
        store(key, image, *rest)

    monkeypatch.setattr(image_cache, "put", store_after_a_takedown)
    viewer = Viewer(user_key="anon:alice-token-0000000000", session="s1")
    racing = service.search(SearchRequest(text="a test picture", page_size=12), viewer)
    assert taken and taken[0] in [hit.image.pk for hit in racing.hits]  # read before the commit: in flight
    monkeypatch.setattr(image_cache, "put", store)

    after = service.search(SearchRequest(text="a test picture", page_size=12), viewer)
    assert not after.cached  # the order stored by the racing search is under the old revision
    assert taken[0] not in [hit.image.pk for hit in after.hits] and len(after.hits) == len(racing.hits) - 1

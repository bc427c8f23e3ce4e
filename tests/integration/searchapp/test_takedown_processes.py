"""A takedown while two web processes serve cached results: gone from both within a second (issue 20, item 4).

Each process keeps whole served orders and image rows in its own memory for 60 s here; only the collection
generation (``collection.generation``), read from the database, can tell them that an image was removed.
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
        again = [searched(port) for port in ports]
        assert all(target in answer["ids"] and answer["cached"] for answer in again)  # both serve from memory

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

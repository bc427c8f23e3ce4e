"""Slow clients against the real `manage.py run` stack (issue 19, item 6).

Sixteen connections trickle their headers a byte a second, twice the 2 workers x 4 threads that
the threaded worker had, and eight more an upload's body; meanwhile the probe and a search must
answer within seconds. With gunicorn's gthread worker they timed out.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings

from tests.integration.collection.test_embedded import _wait_for
from tests.integration.searchapp.test_run_command import _free_port

SLOW_HEADERS, SLOW_BODIES = 16, 8


def _get(url: str, timeout: float) -> tuple[int, bytes, float]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read(), time.monotonic() - started


def _trickle(port: int, head: bytes, stop: threading.Event, opened: list) -> None:
    """Open a connection, send ``head`` at once, then one byte a second until ``stop``."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        opened.append(sock)
        while not stop.wait(1.0):
            try:
                sock.sendall(b"a")
            except OSError:
                return


@pytest.mark.timeout(300)
def test_sixteen_slow_clients_do_not_stop_health_or_search(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LOUPE_VAR_DIR=str(tmp_path / "var"),
        LOUPE_CLIP_MODEL=str(settings.LOUPE_CLIP_MODEL),
        LOUPE_ENCODER_FALLBACK="true",
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "run.log").open("w+")
    # The default sizing: 2 workers, LOUPE_WEB_THREADS=4 each.
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--no-worker", "--no-demo-data"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stop, opened, drips = threading.Event(), [], []
    try:

        def web_up() -> bool:
            try:
                return _get(f"http://127.0.0.1:{port}/healthz", 5)[0] == 200
            except OSError:
                return process.poll() is not None

        assert _wait_for(web_up, 240) and process.poll() is None, Path(log.name).read_text()[-3000:]
        search = f"http://127.0.0.1:{port}/api/v1/search?q=kitchen&page_size=3"

        def warm() -> bool:
            # Each worker loads its text towers on its first search (seconds on a busy machine).
            with ThreadPoolExecutor(4) as pool:
                return all(took < 2 for _, _, took in pool.map(lambda _: _get(search, 90), range(4)))

        assert _wait_for(warm, 180), "searches never became fast"

        slow_headers = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        slow_body = (
            b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 100000\r\n\r\n"
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        )
        for head in [slow_headers] * SLOW_HEADERS + [slow_body] * SLOW_BODIES:
            drip = threading.Thread(target=_trickle, args=(port, head, stop, opened), daemon=True)
            drip.start()
            drips.append(drip)
        assert _wait_for(lambda: len(opened) == SLOW_HEADERS + SLOW_BODIES, 10)
        time.sleep(3)  # the slow requests are well under way: with gthread, every thread is reading one

        for _ in range(3):
            status, _body, took = _get(f"http://127.0.0.1:{port}/healthz", 5)
            assert status == 200 and took < 3, took
            status, body, took = _get(search, 10)
            assert status == 200 and "results" in json.loads(body) and took < 5, took
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, Path(log.name).read_text()[-3000:]

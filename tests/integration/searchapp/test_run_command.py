"""The README's first command, end to end: `manage.py run` on a fresh var/ folder, then a clean stop."""

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from core.embedded import EmbeddedRedis
from tests.integration.collection.test_embedded import _postgres_running, _wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


@pytest.mark.timeout(300)
def test_run_starts_everything_with_demo_data_and_stops_cleanly(tmp_path):
    var_dir, port = tmp_path / "var", _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        LOUPE_VAR_DIR=str(var_dir),
        LOUPE_CLIP_MODEL=str(tmp_path / "no-such-model"),  # as when the hub is out of reach
        LOUPE_DEMO_MODEL_DIR=str(settings.LOUPE_CLIP_MODEL),
        LOUPE_ENCODER_FALLBACK="true",
        LOUPE_EMBED_EVERY_SECONDS="5",
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--web-workers", "1"],
        cwd=Path(settings.BASE_DIR),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = f"running at http://localhost:{port}/"
        assert _wait_for(lambda: started in Path(log.name).read_text() or process.poll() is not None, 180)
        assert started in Path(log.name).read_text(), Path(log.name).read_text()[-3000:]
        output = Path(log.name).read_text()
        assert "could not be loaded" in output and "LOUPE_CLIP_MODEL=/path/to" in output
        assert "Carrying on with the offline demo model" in output and "Collection: 40 images" in output

        def web_up() -> bool:
            try:
                return _get(f"http://127.0.0.1:{port}/")[0] == 200
            except OSError:
                return False

        assert _wait_for(web_up, 60)
        status, body = _get(f"http://127.0.0.1:{port}/api/v1/search?q=kitchen&page_size=3")
        data = json.loads(body)
        assert status == 200 and len(data["results"]) == 3 and data["meta"]["encoder"]["demo"] is True
        status, html = _get(f"http://127.0.0.1:{port}/?q=kitchen")
        assert b'data-testid="demo-banner"' in html and html.count(b'<li class="card ') == 24
        # Probes and metrics, the metrics added up over gunicorn's processes (multiprocess mode).
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        ready = json.loads(_get(f"http://127.0.0.1:{port}/readyz")[1])
        assert ready["status"] == "ready" and ready["checks"]["broker"]["ok"], ready
        metrics = _get(f"http://127.0.0.1:{port}/metrics")[1].decode()
        assert 'loupe_search_seconds_count{kind="text",outcome="served"} 2.0' in metrics, metrics[:2000]
        assert "loupe_encoder_demo 1.0" in metrics  # the demo model serves: an operator must see it
        assert any((var_dir / "prometheus").glob("*.db"))
        assert _wait_for(lambda: "beat: Starting" in Path(log.name).read_text(), 60)
        assert _wait_for(lambda: "ready." in Path(log.name).read_text(), 60), "the Celery worker did not start"
        assert _postgres_running(var_dir) and EmbeddedRedis(var_dir).is_running()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 0, Path(log.name).read_text()[-3000:]
    assert "Stopped." in Path(log.name).read_text()
    assert _wait_for(lambda: not _postgres_running(var_dir), 30), "PostgreSQL outlived the product"
    assert not EmbeddedRedis(var_dir).is_running(), "Redis outlived the product"

"""The embedded servers: start, reuse across processes, stop with the last holder, survive kill -9."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings

from core.embedded import EmbeddedRedis, HandleList

ROOT = Path(settings.BASE_DIR)


def _python(code: str, var_dir: Path, **env) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environment.update(LOUPE_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _postgres_running(var_dir: Path) -> bool:
    pid_file = var_dir / "pg" / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(predicate, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def hold_db(until_released: bool) -> str:
    """Code for a process that opens the database, writes a row, says ready, then holds on.

    A holder waits for its stdin to close rather than for a fixed time: on a loaded CI machine a
    second interpreter took longer to start than an 8 s hold, and the test then failed for the timing.
    """
    return f"""
import sys, django; django.setup()
from django.db import connection
with connection.cursor() as c:
    c.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    c.execute("CREATE TABLE IF NOT EXISTS kept (v int)"); c.execute("INSERT INTO kept VALUES (1)")
print("ready", flush=True)
if {until_released}:
    sys.stdin.read()
"""


def test_embedded_postgres_is_shared_and_stops_with_its_last_holder(tmp_path):
    var_dir = tmp_path / "var"
    holder = _python(hold_db(until_released=True), var_dir)
    assert holder.stdout.readline().startswith("ready")
    assert _postgres_running(var_dir)
    # A second process reuses the running server (no second postmaster) and sees the first's data.
    second = _python(hold_db(until_released=False), var_dir)
    assert second.stdout.readline().startswith("ready") and second.wait(60) == 0
    assert _postgres_running(var_dir), "the first holder still runs: the server must stay up"
    holder.stdin.close()
    holder.wait(60)
    assert _wait_for(lambda: not _postgres_running(var_dir)), "the last holder left: the server must stop"
    # Data survives the stop: a new start sees both rows.
    check = _python(
        "import django; django.setup()\nfrom django.db import connection\n"
        "c = connection.cursor(); c.execute('SELECT count(*) FROM kept'); print(c.fetchone()[0])",
        var_dir,
    )
    assert check.stdout.read().strip() == "2" and check.wait(60) == 0


def test_a_new_cluster_starts_with_its_memory_settings(tmp_path):
    from core.embedded import tuning_settings

    var_dir = tmp_path / "var"
    show = (
        "import django; django.setup()\nfrom django.db import connection\nc = connection.cursor()\n"
        "c.execute(\"SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'\")\n"
        "print(f'{c.fetchone()[0]}MB')\n"
        "for name in ('jit', 'work_mem'):\n"
        "    c.execute(f'SHOW {name}'); print(c.fetchone()[0])"
    )
    process = _python(show, var_dir)
    shown = process.stdout.read().split()
    assert process.wait(60) == 0
    assert shown == [tuning_settings()["shared_buffers"], "off", "16MB"], shown  # not the stock 128MB
    assert (var_dir / "pg" / "loupe-tuning.conf").is_file()
    assert _wait_for(lambda: not _postgres_running(var_dir)), "restarting it once must not leave an orphan"


def test_tuning_settings_scale_with_memory():
    from core.embedded import tuning_settings

    small, large = tuning_settings(2 << 30), tuning_settings(256 << 30)
    assert small["shared_buffers"] == "512MB" and small["effective_cache_size"] == "1024MB"
    assert large["shared_buffers"] == "8192MB"  # capped: beyond this the OS cache does the job
    assert small["jit"] == large["jit"] == "off"


def test_a_killed_holder_does_not_keep_postgres_alive(tmp_path):
    var_dir = tmp_path / "var"
    victim = _python(hold_db(until_released=True), var_dir)
    assert victim.stdout.readline().startswith("ready")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert _postgres_running(var_dir), "nobody stopped it yet"
    # The next process prunes the dead holder and, as the last live holder, stops the server on exit.
    follower = _python(hold_db(until_released=False), var_dir)
    assert follower.stdout.readline().startswith("ready") and follower.wait(60) == 0
    assert _wait_for(lambda: not _postgres_running(var_dir))


def test_embedded_redis_reference_counting(tmp_path):
    redis = EmbeddedRedis(tmp_path / "var")
    url = redis.acquire()
    assert url.startswith("redis+socket://") and redis.is_running()
    try:
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        HandleList(redis.handles.path).add(holder.pid)
        redis.release()
        assert redis.is_running(), "another live holder keeps it up"
        holder.kill()
        holder.wait()
        assert redis.handles.live() == [], "dead holders are pruned"
        redis.acquire()
        redis.release()
        assert _wait_for(lambda: not redis.is_running(), 10)
    finally:
        redis.stop()


def test_redis_keeps_queued_data_across_restarts(tmp_path):
    import redis as redis_client

    server = EmbeddedRedis(tmp_path / "var")
    server.acquire()
    try:
        client = redis_client.Redis(unix_socket_path=str(server.socket_path))
        client.rpush("queue", "task-1")
        client.close()
        server.release()
        assert _wait_for(lambda: not server.is_running(), 10)
        server.acquire()
        client = redis_client.Redis(unix_socket_path=str(server.socket_path))
        assert client.lrange("queue", 0, -1) == [b"task-1"]
        client.close()
    finally:
        server.stop()

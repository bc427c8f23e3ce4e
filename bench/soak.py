"""Soak: the whole product under mixed traffic for 10 minutes, with retraining running at the same time.

Starts ``manage.py run`` in a fresh var folder (embedded PostgreSQL and Redis, gunicorn, Celery
worker, trainer and beat, the demo set, the demo model), then client threads search as many end
users, click (mostly near the top, like people) and rate what they were shown, through the partner
API, with no retries. Beat retrains the ranker every minute from that very feedback, and a forced
retrain is queued every few minutes besides. At the end it compares what the server acknowledged
with what the database holds.

It reports errors (any non-2xx answer or failed request) and lost feedback (acknowledged, not
stored; or stored twice); both must be 0. Writes docs/bench/soak.json and docs/bench/soak.png.

Run (from the repo root, after bin/setup dev):
    .venv/bin/python bench/soak.py --minutes 10 --clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feedback_load import (  # noqa: E402
    QUERIES,
    ROOT,
    attach_django,
    create_key,
    fresh_var_dir,
    start_server,
    stop_server,
)

OUT_DIR = ROOT / "docs" / "bench"


class Visitor(threading.Thread):
    """One client: search, then maybe click one result and maybe rate one, as one of its end users."""

    def __init__(self, index: int, base: str, key: str, users: int, stop_at: float, think: float) -> None:
        super().__init__(name=f"visitor-{index}")
        self.index, self.base, self.users, self.stop_at, self.think = index, base, users, stop_at, think
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"
        self.rng = random.Random(index)
        self.events: set[str] = set()  # search event ids answered 200
        self.acknowledged: set[tuple[str, str]] = set()  # (kind, client_id) answered 2xx
        self.errors: Counter = Counter()
        self.log: list[tuple[float, str, float, int]] = []  # (time, kind, seconds, status)

    def call(self, kind: str, method: str, path: str, **kwargs) -> requests.Response | None:
        started = time.perf_counter()
        try:
            response = self.session.request(method, f"{self.base}{path}", timeout=60, **kwargs)
        except requests.RequestException as exc:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1
            self.log.append((time.time(), kind, time.perf_counter() - started, 0))
            return None
        self.log.append((time.time(), kind, time.perf_counter() - started, response.status_code))
        if not 200 <= response.status_code < 300:
            self.errors[f"{kind}: HTTP {response.status_code}"] += 1
            return None
        return response

    def run(self) -> None:
        while time.time() < self.stop_at:
            user = f"v{self.index}-u{self.rng.randrange(self.users)}"
            query = self.rng.choice(QUERIES) + ("" if self.rng.random() < 0.7 else f" {self.rng.randrange(50)}")
            found = self.call("search", "GET", "/api/v1/search", params={"q": query, "page_size": 12, "user": user})
            if found is None:
                continue
            body = found.json()
            self.events.add(body["event_id"])
            results = body["results"]
            if results and self.rng.random() < 0.6:
                position = min(len(results), 1 + int(self.rng.expovariate(0.4)))
                hit = results[position - 1]
                item = {
                    "event_id": body["event_id"],
                    "image_id": hit["image"]["id"],
                    "position": position,
                    "client_id": uuid.uuid4().hex,
                    "dwell_ms": self.rng.randrange(500, 30_000),
                }
                if self.call("click", "POST", "/api/v1/feedback/clicks", json=item) is not None:
                    self.acknowledged.add(("click", item["client_id"]))
            if results and self.rng.random() < 0.2:
                hit = self.rng.choice(results)
                item = {
                    "event_id": body["event_id"],
                    "image_id": hit["image"]["id"],
                    "scale": "thumbs",
                    "value": self.rng.choice([1, 1, -1]),
                    "client_id": uuid.uuid4().hex,
                }
                if self.call("rating", "POST", "/api/v1/feedback/ratings", json=item) is not None:
                    self.acknowledged.add(("rating", item["client_id"]))
            time.sleep(self.think * self.rng.random())


def force_retrain(var_dir: Path) -> None:
    """Queue a retraining now (as admin's "retrain now" would), besides beat's schedule."""
    env = dict(os.environ, LOUPE_VAR_DIR=str(var_dir))
    code = "from workers.tasks import retrain_ranker; retrain_ranker.delay(force=True)"
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


def verify(visitors: list[Visitor]) -> dict:
    from feedback.models import Click, Rating, SearchEvent

    acknowledged = set().union(*(v.acknowledged for v in visitors))
    events = set().union(*(v.events for v in visitors))
    stored = Counter(("click", c) for c in Click.objects.values_list("client_id", flat=True))
    stored.update(("rating", c) for c in Rating.objects.values_list("client_id", flat=True))
    stored_events = {str(e) for e in SearchEvent.objects.filter(surface="api").values_list("pk", flat=True)}
    return {
        "searches_answered": len(events),
        "searches_logged": len(events & stored_events),
        "searches_lost": len(events - stored_events),
        "feedback_acknowledged": len(acknowledged),
        "feedback_lost": len(acknowledged - set(stored)),
        "feedback_stored_twice": sum(1 for n in stored.values() if n > 1),
        "feedback_stored_without_2xx": len(set(stored) - acknowledged),
    }


def training_runs(since: float) -> list[dict]:
    from datetime import UTC, datetime

    from ranking.models import TrainingRun

    runs = TrainingRun.objects.filter(started_at__gte=datetime.fromtimestamp(since, tz=UTC)).order_by("started_at")
    return [
        {
            "at": r.started_at.timestamp() - since,
            "outcome": r.outcome,
            "message": r.message[:160],
            "seconds": round((r.finished_at - r.started_at).total_seconds(), 2) if r.finished_at else None,
        }
        for r in runs
    ]


def plot(results: dict, log: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = results["started"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    times = np.array([t - start for t, *_ in log])
    bins = np.arange(0, max(times.max(), 1) + 10, 10)
    for kind, colour in (("search", "#4c72b0"), ("click", "#55a868"), ("rating", "#c44e52")):
        mask = np.array([k == kind for _, k, _, _ in log])
        counts, _ = np.histogram(times[mask], bins)
        top.plot(bins[:-1], counts / 10, label=f"{kind} requests/s", color=colour)
    for run in results["training_runs"]:
        top.axvline(run["at"], color="grey", lw=0.8, ls=":")
    top.set_ylabel("requests/s")
    top.legend(fontsize=8)
    top.set_title(
        f"soak: {results['minutes']} min, errors {results['errors_total']}, lost feedback "
        f"{results['check']['feedback_lost']} (dotted: training runs)"
    )
    searches = np.array([(t - start, s * 1000) for t, k, s, _ in log if k == "search"])
    idx = np.digitize(searches[:, 0], bins)
    p50 = [np.percentile(searches[idx == i, 1], 50) if np.any(idx == i) else np.nan for i in range(1, len(bins))]
    p99 = [np.percentile(searches[idx == i, 1], 99) if np.any(idx == i) else np.nan for i in range(1, len(bins))]
    bottom.plot(bins[:-1], p50, label="search p50 ms")
    bottom.plot(bins[:-1], p99, label="search p99 ms", alpha=0.6)
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("ms (log scale: the first seconds load the model)")
    bottom.set_yscale("log")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--users-per-client", type=int, default=50)
    parser.add_argument("--think", type=float, default=0.2, help="up to this many seconds between a visitor's steps")
    parser.add_argument("--force-retrain-every", type=float, default=180, help="seconds between forced retrains")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var" / "bench-soak")
    parser.add_argument("--output", type=Path, default=OUT_DIR / "soak.json")
    args = parser.parse_args()

    fresh_var_dir(args.var_dir)
    os.environ.update(
        LOUPE_RETRAIN_EVERY_SECONDS="60",
        LOUPE_RETRAIN_MIN_NEW_SEARCHES="100",
        LOUPE_FEEDBACK_SUMMARIES_EVERY_SECONDS="60",
    )
    print(f"Starting Loupe in {args.var_dir} on port {args.port}...", flush=True)
    server = start_server(args.var_dir, args.port)
    try:
        key = create_key(args.var_dir)
        base = f"http://127.0.0.1:{args.port}"
        started = time.time()
        stop_at = started + args.minutes * 60
        visitors = [Visitor(i, base, key, args.users_per_client, stop_at, args.think) for i in range(args.clients)]
        for visitor in visitors:
            visitor.start()
        forced = 0
        while time.time() < stop_at:
            time.sleep(min(args.force_retrain_every, max(0.0, stop_at - time.time())))
            if time.time() < stop_at - 30:
                force_retrain(args.var_dir)
                forced += 1
                print(f"  {time.time() - started:.0f} s: retrain queued", flush=True)
        for visitor in visitors:
            visitor.join()
        time.sleep(5)  # let a retrain that is still running finish writing its row

        attach_django(args.var_dir)
        check = verify(visitors)
        log = sorted(entry for v in visitors for entry in v.log)
        errors = sum((v.errors for v in visitors), Counter())
        by_kind = {}
        for kind in ("search", "click", "rating"):
            seconds = np.asarray([s for _, k, s, _ in log if k == kind]) * 1000
            quantile = lambda q, s=seconds: round(float(np.percentile(s, q)), 2) if len(s) else None  # noqa: E731
            by_kind[kind] = {"requests": int(len(seconds)), "p50_ms": quantile(50), "p99_ms": quantile(99)}
        results = {
            "command": " ".join(sys.argv),
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "server": "manage.py run: gunicorn 2 workers x 4 threads, embedded PostgreSQL 18 + Redis, Celery worker, "
            "trainer and beat (retraining every 60 s), demo model, 40 demo images",
            "clients": args.clients,
            "minutes": args.minutes,
            "started": started,
            "requests": len(log),
            "requests_per_s": round(len(log) / (args.minutes * 60), 1),
            "by_kind": by_kind,
            "errors_total": sum(errors.values()),
            "errors": dict(errors),
            "forced_retrains": forced,
            "training_runs": training_runs(started),
            "check": check,
        }
        print(json.dumps({k: v for k, v in results.items() if k != "training_runs"}, indent=2), flush=True)
        print(f"training runs during the soak: {Counter(r['outcome'] for r in results['training_runs'])}")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2))
        plot(results, log, args.output.with_suffix(".png"))
        print(f"Saved {args.output} and {args.output.with_suffix('.png')}")
        lost = check["feedback_lost"] + check["feedback_stored_twice"] + check["searches_lost"]
        if results["errors_total"] or lost:
            sys.exit(f"FAILED: {results['errors_total']} errors, {lost} lost or doubled.")
    finally:
        stop_server(server)


if __name__ == "__main__":
    main()

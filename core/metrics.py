"""Prometheus metrics: what the web processes count, and what the database knows about training.

Counters and histograms live in the process that observes them. Under gunicorn (several worker
processes) set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder shared by the workers, as
``manage.py run`` and the compose file do; ``/metrics`` then adds up every process's files.
Training runs happen in Celery workers, possibly on other machines, so their figures are read from
the database at scrape time (``ranking.monitoring.TrainingCollector``) instead of being counted in
process; ``searchapp.health`` puts the exposition together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

# Search latency buckets: the targets are 8 ms (cached) and 25/80 ms p50/p99 (uncached).
LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.08, 0.12, 0.25, 0.5, 1, 2.5)

SEARCH_SECONDS = Histogram(
    "loupe_search_seconds",
    "Time to answer a search (validation to the logged response).",
    ["kind", "outcome"],
    buckets=LATENCY_BUCKETS,
)
SEARCH_STAGE_SECONDS = Histogram(
    "loupe_search_stage_seconds",
    "Time of one stage of a served search (encode, retrieve, total).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
FEEDBACK_WRITES = Counter(
    "loupe_feedback_writes_total",
    "Clicks and ratings received, by what happened to them (created, duplicate, or the refusal's code).",
    ["kind", "outcome"],
)
SEARCH_LOGS = Counter(
    "loupe_search_logs_total", "Served lists written to the search log, by outcome (stored, failed).", ["outcome"]
)
FALLBACKS = Counter(
    "loupe_fallbacks_total",
    "Times a search served a simpler answer than planned (rerank: first-stage order; "
    "ranker_refused: an artefact failed its checksum or load; encoder_arm: an arm's encoder could not serve).",
    ["kind"],
)
SEARCH_READS = Counter(
    "loupe_search_reads_total",
    "Searches by the database their reads went to (a replica's alias, or default: the primary) and why "
    "(replica; no usable replica: replicas_unusable; the caller's transaction: in_transaction; "
    "failed on the replica and answered by the primary: replica_failed).",
    ["database", "reason"],
)
# Each process checks the replicas it reads from (core.replica_health); the largest lag any process saw,
# so one process that finds a replica down (+Inf) is not hidden by another that still finds it fine.
REPLICA_LAG_SECONDS = Gauge(
    "loupe_replica_lag_seconds",
    "A replica's replay lag at its last check (0: caught up; +Inf: down or unknown).",
    ["database"],
    multiprocess_mode="max",
)


def observe_search(kind: str, outcome: str, seconds: float, timings_ms: dict[str, float] | None = None) -> None:
    SEARCH_SECONDS.labels(kind, outcome).observe(seconds)
    for stage, ms in (timings_ms or {}).items():
        SEARCH_STAGE_SECONDS.labels(stage).observe(ms / 1000)


def counted_feedback(kind: str) -> Callable:
    """Decorate a ``record_*`` service so each call counts as created, duplicate, or its refusal code."""

    def decorate(record: Callable) -> Callable:
        @functools.wraps(record)
        def wrapper(*args, **kwargs):
            try:
                recorded = record(*args, **kwargs)
            except Exception as exc:
                FEEDBACK_WRITES.labels(kind, getattr(exc, "code", "error")).inc()
                raise
            FEEDBACK_WRITES.labels(kind, "created" if recorded.created else "duplicate").inc()
            return recorded

        return wrapper

    return decorate

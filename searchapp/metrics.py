"""Prometheus metrics: what the web processes count, and what the database knows about training.

Counters and histograms live in the process that observes them. Under gunicorn (several worker
processes) set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder shared by the workers, as
``manage.py run`` and the compose file do; ``/metrics`` then adds up every process's files.
Training runs happen in Celery workers, possibly on other machines, so their figures are read from
the database at scrape time (``TrainingCollector``) instead of being counted in process.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

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


class TrainingCollector(Collector):
    """Training and fine-tuning runs as the database records them (workers may run anywhere)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count, Max

        from ranking.models import FineTuneRun, RankerVersion, TrainingRun

        runs = GaugeMetricFamily(
            "loupe_training_runs", "Learning attempts recorded, by kind and outcome.", labels=["kind", "outcome"]
        )
        last = GaugeMetricFamily(
            "loupe_training_last_finished_timestamp_seconds",
            "When the last learning attempt of each kind finished (Unix time).",
            labels=["kind"],
        )
        for kind, model in (("ranker", TrainingRun), ("encoder", FineTuneRun)):
            for row in model.objects.values("outcome").annotate(n=Count("pk")):
                runs.add_metric([kind, row["outcome"]], row["n"])
            finished = model.objects.aggregate(at=Max("finished_at"))["at"]
            if finished is not None:
                last.add_metric([kind], finished.timestamp())
        yield runs
        yield last
        active = RankerVersion.objects.filter(status=RankerVersion.Status.ACTIVE).values_list("pk", flat=True).first()
        yield GaugeMetricFamily("loupe_active_ranker_version", "The active ranker's id (0: none).", value=active or 0)


class ServingCollector(Collector):
    """What this process serves: a demo model (random weights, no semantic quality) is an alert."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from searchapp.encoders import loaded_serving_choice

        choice = loaded_serving_choice()
        demo = GaugeMetricFamily(
            "loupe_encoder_demo",
            "1 when this process serves the random-weight demo model (the configured model could not be loaded).",
        )
        demo.add_metric([], float(bool(choice and (choice.fell_back or choice.encoder.is_demo))))
        yield demo


def exposition() -> bytes:
    """The text format for ``/metrics``: this process's (or all processes') metrics plus the database's."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    extra = CollectorRegistry()
    extra.register(TrainingCollector())
    extra.register(ServingCollector())
    return body + generate_latest(extra)

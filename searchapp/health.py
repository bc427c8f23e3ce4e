"""Liveness, readiness and metrics endpoints for load balancers, orchestrators and Prometheus.

- ``/healthz``: the process answers (no database, no broker): restart it only if this fails.
- ``/readyz``: may this process take traffic? The database (with pgvector) must answer and the
  serving encoder must be loaded (loading it here warms a new process before traffic arrives);
  the text channel's model and the active ranker are reported. The broker (Redis) is reported
  but does not make the process unready: search and feedback never touch it (feedback is written
  straight to PostgreSQL), so taking every web process out of the balancer because Redis is down
  would turn a paused training schedule into an outage.
- ``/metrics``: Prometheus text format (``core.metrics``).

Probes answer before host validation, but only for a host in ``ALLOWED_HOSTS`` or
``LOUPE_PROBE_HOSTS`` (the container's own names), so a stranger's Host header gets a 400. The
readiness details (model names and paths, exception text) are for staff and for callers on the
machine itself (``LOUPE_READYZ_DETAIL_IPS``); anyone else learns only which checks pass.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.sessions.backends.base import SessionBase
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port, validate_host
from django.utils.module_loading import import_string
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from collection.monitoring import ServingCollector
from collection.sentence import serving_sentence_encoder
from collection.versions import serving_version
from core.errors import error_body
from ranking.index_recall import latest_index_recalls
from ranking.monitoring import IndexRecallCollector, TrainingCollector
from ranking.registry import active_ranker

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    required: bool
    ms: float


def _timed(name: str, required: bool, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # noqa: BLE001 - a failed probe is the answer, reported with its reason
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return Check(name, ok, detail, required, round((time.perf_counter() - started) * 1000, 2))


def database_probe() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the vector extension is not installed in this database")
    return f"PostgreSQL, pgvector {row[0]}"


def broker_probe() -> str:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS) as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
    return "Redis answers"


def encoder_probe() -> str:
    choice, version = serving_version()
    demo = " (demo fallback: " + choice.fallback_reason.splitlines()[0] + ")" if choice.fell_back else ""
    return f"{version.name}, version {version.pk}, text on {choice.encoder.text_runtime}{demo}"


def text_channel_probe() -> str:
    if not settings.LOUPE_TEXT_CHANNEL:
        return "off"
    encoder = serving_sentence_encoder()
    return "model failed to load: full-text only" if encoder is None else f"{encoder.name} on {encoder.text_runtime}"


def ranker_probe() -> str:
    if not settings.LOUPE_RERANK:
        return "reranking off"
    serving = active_ranker.get()
    return serving.version.label if serving is not None else "none active or refused: first-stage order"


def index_recall_probe() -> str:
    """The newest daily recall measurement of each servable version; below ``LOUPE_MIN_INDEX_RECALL`` fails.

    Not required: a lower-recall index still answers, so it degrades readiness instead of taking traffic away."""
    rows = latest_index_recalls()
    if not rows:
        return "not measured yet"
    low = [row for row in rows if row.below_threshold]
    summary = ", ".join(f"v{row.encoder_version_id} {row.recall:.3f}" for row in rows)
    if low:
        raise RuntimeError(f"recall@{low[0].k} below {low[0].threshold:g}: {summary}")
    return f"recall@{rows[0].k}: {summary}"


def _not_checked() -> str:
    raise RuntimeError("not checked: the database is unreachable")


def readiness() -> list[Check]:
    database = _timed("database", True, database_probe)
    probes = (encoder_probe, text_channel_probe, ranker_probe, index_recall_probe)
    model_probes = probes if database.ok else (_not_checked,) * len(probes)
    return [  # the models need their version rows, so they are only checked with a database
        database,
        _timed("broker", False, broker_probe),
        _timed("encoder", True, model_probes[0]),
        _timed("text_channel", False, model_probes[1]),
        _timed("ranker", False, model_probes[2]),
        _timed("index_recall", False, model_probes[3]),
    ]


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _session_user(request: HttpRequest):
    """The logged-in user, read from the session cookie without the middlewares that run after probes
    (and without creating a session: a probe never sets a cookie)."""
    engine = import_string(f"{settings.SESSION_ENGINE}.SessionStore")
    session: SessionBase = engine(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    request.session = session
    return get_user(request)


def may_see_details(request: HttpRequest) -> bool:
    if request.META.get("REMOTE_ADDR", "") in settings.LOUPE_READYZ_DETAIL_IPS:
        return True
    if settings.SESSION_COOKIE_NAME not in request.COOKIES:
        return False
    user = _session_user(request)
    return bool(user.is_active and user.is_staff)


def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness()
    ready = all(c.ok for c in checks if c.required)
    degraded = ready and not all(c.ok for c in checks)
    if not ready:
        logger.warning("Not ready: %s", "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok))
    detailed = may_see_details(request)
    body = {
        "status": "degraded" if degraded else "ready" if ready else "unready",
        "checks": {
            c.name: {"ok": c.ok, "required": c.required, **({"detail": c.detail, "ms": c.ms} if detailed else {})}
            for c in checks
        },
    }
    return JsonResponse(body, status=200 if ready else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


PROBES = {"/healthz": healthz, "/readyz": readyz, "/metrics": metrics}


class ProbeMiddleware:
    """Answers the probes first, before host validation, sessions and cookies.

    Orchestrators and Prometheus call a container by its own address (``127.0.0.1:8000``,
    ``web:8000``), which is rarely in ``DJANGO_ALLOWED_HOSTS``; a probe must not be refused for that.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path)
        if probe is None:
            return self.get_response(request)
        if not probe_host_allowed(request):
            return JsonResponse(error_body("disallowed_host", "Unknown host."), status=400)
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(error_body("method_not_allowed", "Probes answer GET."), status=405)
        return probe(request)


def probe_host_allowed(request: HttpRequest) -> bool:
    """The Host header names this site or the container itself (``127.0.0.1:8000``, ``web:8000``)."""
    domain, _port = split_domain_port(request.META.get("HTTP_HOST") or request.META.get("SERVER_NAME", ""))
    return bool(domain) and validate_host(domain, [*settings.ALLOWED_HOSTS, *settings.LOUPE_PROBE_HOSTS])


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
    extra.register(IndexRecallCollector())
    return body + generate_latest(extra)

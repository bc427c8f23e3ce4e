"""/healthz, /readyz and /metrics as a load balancer and Prometheus see them."""

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from collection.encoders import reset_serving_encoder
from ranking.models import TrainingRun
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


def sample(client, name: str, **labels) -> float:
    """One sample of /metrics (0 when absent)."""
    body = client.get("/metrics").content.decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_healthz_answers_without_touching_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert client.post("/healthz").status_code == 405


def test_readyz_reports_each_dependency(client, collection):
    body = client.get("/readyz").json()
    checks = body["checks"]
    assert checks["database"]["ok"] and "pgvector" in checks["database"]["detail"]
    assert checks["encoder"]["ok"] and checks["encoder"]["required"]
    assert checks["ranker"]["ok"] and "first-stage" in checks["ranker"]["detail"]
    assert body["status"] in ("ready", "degraded")


def test_a_dead_broker_degrades_but_keeps_the_process_in_service(client, collection, settings, tmp_path):
    settings.CELERY_BROKER_URL = f"redis+socket://{tmp_path / 'nobody-listens.sock'}"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200 and body["status"] == "degraded"
    assert body["checks"]["broker"]["ok"] is False and not body["checks"]["broker"]["required"]


def test_an_encoder_that_cannot_load_makes_the_process_unready(client, collection, settings, tmp_path):
    settings.LOUPE_CLIP_MODEL = str(tmp_path / "missing-model")
    settings.LOUPE_ENCODER_FALLBACK = False
    reset_serving_encoder()
    from collection.versions import forget_serving_version

    forget_serving_version()
    try:
        response = client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unready" and body["checks"]["encoder"]["ok"] is False
        assert "missing-model" in body["checks"]["encoder"]["detail"]
    finally:
        reset_serving_encoder()
        forget_serving_version()


def test_metrics_count_searches_feedback_and_training_runs(client, collection):
    api = APIClient()
    key = key_with("search", "feedback")
    searches = sample(client, "loupe_search_seconds_count", kind="text", outcome="served")
    refused = sample(client, "loupe_search_seconds_count", kind="text", outcome="refused")
    created = sample(client, "loupe_feedback_writes_total", kind="click", outcome="created")
    duplicate = sample(client, "loupe_feedback_writes_total", kind="click", outcome="duplicate")
    not_shown = sample(client, "loupe_feedback_writes_total", kind="click", outcome="not_shown")

    body = api.get("/api/v1/search", {"q": "a test picture", "page_size": 3, "user": "m1"}, **bearer(key)).json()
    assert api.get("/api/v1/search", {"q": "tag:", "user": "m1"}, **bearer(key)).status_code == 400
    hit = body["results"][0]
    click = {"event_id": body["event_id"], "image_id": hit["image"]["id"], "position": 1, "client_id": "m-1"}
    assert api.post("/api/v1/feedback/clicks", click, format="json", **bearer(key)).status_code == 201
    assert api.post("/api/v1/feedback/clicks", click, format="json", **bearer(key)).status_code == 200
    wrong = {**click, "position": 3, "client_id": "m-2"}
    assert api.post("/api/v1/feedback/clicks", wrong, format="json", **bearer(key)).status_code == 400

    assert sample(client, "loupe_search_seconds_count", kind="text", outcome="served") == searches + 1
    assert sample(client, "loupe_search_seconds_count", kind="text", outcome="refused") == refused + 1
    assert sample(client, "loupe_feedback_writes_total", kind="click", outcome="created") == created + 1
    assert sample(client, "loupe_feedback_writes_total", kind="click", outcome="duplicate") == duplicate + 1
    assert sample(client, "loupe_feedback_writes_total", kind="click", outcome="not_shown") == not_shown + 1

    TrainingRun.objects.create().finish(TrainingRun.Outcome.SKIPPED, "test")
    TrainingRun.objects.create()
    assert sample(client, "loupe_training_runs", kind="ranker", outcome="skipped") == 1
    assert sample(client, "loupe_training_runs", kind="ranker", outcome="running") == 1
    assert sample(client, "loupe_training_last_finished_timestamp_seconds", kind="ranker") > 1.7e9
    assert sample(client, "loupe_encoder_demo") == 1  # tests serve the tiny demo model, and it says so


def test_every_response_carries_a_request_id(client, collection, caplog):
    caplog.set_level("INFO", logger="loupe.requests")
    response = client.get("/", {"q": "picture"}, HTTP_X_REQUEST_ID="trace-123")
    assert response["X-Request-ID"] == "trace-123"
    line = next(r for r in caplog.records if r.name == "loupe.requests")
    assert (line.request_id, line.status, line.path) == ("trace-123", 200, "/") and line.duration_ms > 0
    forged = client.get("/api/v1/tags", HTTP_X_REQUEST_ID="<script>\nx")
    assert re.fullmatch(r"[0-9a-f]{32}", forged["X-Request-ID"])

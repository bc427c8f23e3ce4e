"""Property-based fuzzing of the whole API from its own OpenAPI schema (schemathesis): never a 5xx.

Every operation gets a few generated requests, valid and invalid, with a key that holds every
scope, so the feedback and ingest endpoints are exercised past authentication. Kept small for CI
(LOUPE_FUZZ_EXAMPLES, default 15 per operation); raise it locally for a deeper run.
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings

from collection.models import Image
from tests.integration.feedback.conftest import key_with

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("LOUPE_FUZZ_EXAMPLES", "15"))
DOCUMENTATION = ("/api/v1/schema", "/api/v1/docs", "/api/v1/redoc")


@pytest.fixture
def api_schema(collection):
    # A real WSGI handler closes "old" connections when a request ends, which would close the test's
    # own transaction; Django's test client switches that off the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", get_wsgi_application())
        yield schema.exclude(path=list(DOCUMENTATION))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def every_scope():
    return {"Authorization": f"Bearer {key_with('search', 'feedback', 'ingest', per_minute=100_000)}"}


def test_no_request_makes_the_api_fail(api_schema, every_scope, collection):
    # The fuzzing key's catalogue owns the collection, so PATCH requests get past the ownership check.
    Image.objects.filter(pk__in=[image.pk for image in collection]).update(catalogue="partner app")
    # One Hypothesis run per operation (schemathesis' pytest plugin does the same; it is not used
    # because it relies on pytest internals that pytest 9 removed).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/v1/search",
        "/api/v1/feedback/clicks",
        "/api/v1/images",
        "/api/v1/images/{image_id}",
        "/api/v1/images/ext:{external_id}",
        "/api/v1/users/{user}",
        "/api/v1/users/{user}/export",
        "/api/v1/ingest-jobs",
        "/api/v1/ingest-jobs/{job_id}/items",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def never_fails(case):
            response = case.call(headers=every_scope)
            described = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
            assert response.status_code < 500, described
            if response.status_code >= 400:
                assert response.headers.get("content-type", [""])[0].startswith("application/json"), described
                assert response.json()["error"]["code"], "every refusal has the documented error shape"

        never_fails()

"""Finding 9 of issue 19: refusals read as the project's JSON error shape, with plain messages.

CSRF failures on the page's beacons (``/feedback/*``) were Django's HTML page; batch errors showed
Python's ``ErrorDetail(string=..., code=...)`` text.
"""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from feedback.models import Click
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/feedback/click", "/feedback/rate"])
def test_a_csrf_failure_on_a_beacon_is_the_json_error_shape(url):
    response = Client(enforce_csrf_checks=True).post(url, {"image_id": 1, "position": 1})
    assert response.status_code == 403
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "csrf_failed" and "CSRF" in error["message"]
    assert not Click.objects.exists()


def test_a_csrf_failure_on_a_page_form_stays_a_page(db):
    response = Client(enforce_csrf_checks=True).post("/", {})
    assert response.status_code == 403 and response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    "items",
    [["not an object", 3], [{"event_id": {"nested": ["x"]}, "image_id": [1], "position": {}}], [[1, 2]]],
)
def test_batch_errors_are_plain_messages(items):
    key = key_with("feedback")
    response = APIClient().post("/api/v1/feedback/clicks/batch", {"items": items}, format="json", **bearer(key))
    assert response.status_code in (200, 400), response.content[:300]
    text = response.content.decode()
    assert "ErrorDetail" not in text and "string=" not in text, text
    body = response.json()
    messages = (
        [body["error"]["message"], *body["error"].get("fields", {}).values()]
        if response.status_code == 400
        else [r["error"]["message"] for r in body["results"]]
    )
    assert messages and all(message and "{" not in message for message in messages), messages

"""Partner API: keys, scopes, throttling, clicks and ratings one by one and in batches."""

import time
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.models import ApiKey, Click, Rating, SearchEvent
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def error_code(response) -> str:
    return response.json()["error"]["code"]


def partner_search(api, key, user="u-1", q="a test picture", page_size=5):
    response = api.get("/api/v1/search", {"q": q, "page_size": page_size, "user": user}, **bearer(key))
    assert response.status_code == 200, response.content
    return response.json()


def test_feedback_needs_a_key_with_the_feedback_scope(api, collection):
    assert api.post("/api/v1/feedback/clicks", {}, format="json").status_code == 401
    bad = api.post("/api/v1/feedback/clicks", {}, format="json", HTTP_AUTHORIZATION="Bearer loupe_nope_nope")
    assert bad.status_code == 401 and bad["WWW-Authenticate"].startswith("Bearer")
    search_only = key_with("search")
    response = api.post("/api/v1/feedback/ratings", {}, format="json", **bearer(search_only))
    assert response.status_code == 403 and "feedback" in response.json()["error"]["message"]
    assert api.post("/api/v1/images", {}, **bearer(search_only)).status_code == 403


def test_search_scope_and_anonymous_search(api, collection, settings):
    assert api.get("/api/v1/search", {"q": "picture"}).status_code == 200  # anonymous search is on by default
    feedback_only = key_with("feedback")
    assert api.get("/api/v1/search", {"q": "picture"}, **bearer(feedback_only)).status_code == 403
    settings.LOUPE_API_ANONYMOUS_SEARCH = False
    assert api.get("/api/v1/search", {"q": "picture"}).status_code == 401


def test_a_revoked_key_stops_working_at_once(api, collection):
    key = key_with("search")
    assert api.get("/api/v1/search", {"q": "picture"}, **bearer(key)).status_code == 200
    ApiKey.objects.update(revoked_at=timezone.now())
    assert api.get("/api/v1/search", {"q": "picture"}, **bearer(key)).status_code == 401


def test_keys_are_stored_hashed(collection):
    key = key_with("search")
    stored = ApiKey.objects.get()
    assert key not in (stored.hashed_secret, stored.prefix) and key.split("_")[2] not in stored.hashed_secret
    assert len(stored.hashed_secret) == 64


def test_throttling_per_key_with_retry_after(api, collection):
    slow, other = key_with("search", per_minute=2), key_with("search")
    # Limits count per calendar minute: start well inside one, or the third request may open a new minute.
    second = timezone.now().second
    if second > 40:
        time.sleep(61 - second)
    codes = [api.get("/api/v1/search", {"q": "picture"}, **bearer(slow)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = api.get("/api/v1/search", {"q": "picture"}, **bearer(slow))
    assert 1 <= int(refused["Retry-After"]) <= 60 and error_code(refused) == "throttled"
    assert api.get("/api/v1/search", {"q": "picture"}, **bearer(other)).status_code == 200  # per key
    assert ApiKey.objects.get(prefix=slow.split("_")[1]).last_used_at is not None


def test_partner_search_click_and_rating_for_an_end_user(api, collection):
    key = key_with("search", "feedback")
    body = partner_search(api, key, user="customer-42")
    event = SearchEvent.objects.get(pk=body["event_id"])
    assert event.surface == "api" and event.user_key.endswith(":customer-42") and event.partner is not None
    hit = body["results"][1]
    click = {"event_id": body["event_id"], "image_id": hit["image"]["id"], "position": 2, "client_id": "k1"}
    first = api.post("/api/v1/feedback/clicks", click, format="json", **bearer(key))
    again = api.post("/api/v1/feedback/clicks", click, format="json", **bearer(key))
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and again.json()["created"] is False
    assert Click.objects.get().user_key == event.user_key
    wrong_position = {**click, "client_id": "k2", "position": 3}
    refused = api.post("/api/v1/feedback/clicks", wrong_position, format="json", **bearer(key))
    assert refused.status_code == 400 and error_code(refused) == "not_shown"
    rating = {"image_id": hit["image"]["id"], "value": 5, "scale": "stars", "client_id": "r1", "user": "customer-42"}
    assert api.post("/api/v1/feedback/ratings", rating, format="json", **bearer(key)).status_code == 201
    assert Rating.objects.get().user_key == event.user_key


def test_another_partner_cannot_send_feedback_on_my_searches(api, collection):
    mine, theirs = key_with("search", "feedback"), key_with("feedback")
    body = partner_search(api, mine)
    click = {
        "event_id": body["event_id"],
        "image_id": body["results"][0]["image"]["id"],
        "position": 1,
        "client_id": "x",
    }
    refused = api.post("/api/v1/feedback/clicks", click, format="json", **bearer(theirs))
    assert refused.status_code == 404 and error_code(refused) == "unknown_event"


def test_batches_record_each_item_on_its_own(api, collection, settings):
    key = key_with("search", "feedback")
    body = partner_search(api, key, page_size=5)
    items = [
        {"event_id": body["event_id"], "image_id": r["image"]["id"], "position": r["position"], "client_id": f"b{i}"}
        for i, r in enumerate(body["results"])
    ]
    items.append(dict(items[0]))  # a resend inside the batch
    items.append({**items[1], "client_id": "b-bad", "position": 99})  # not shown there
    items.append({"event_id": body["event_id"], "client_id": "b-incomplete"})  # missing fields
    result = api.post("/api/v1/feedback/clicks/batch", {"items": items}, format="json", **bearer(key)).json()
    assert (result["created"], result["duplicates"], result["rejected"]) == (5, 1, 2)
    statuses = [r["status"] for r in result["results"]]
    assert statuses == ["created"] * 5 + ["duplicate", "rejected", "rejected"]
    assert result["results"][6]["error"]["code"] == "not_shown"
    assert Click.objects.count() == 5
    again = api.post("/api/v1/feedback/clicks/batch", {"items": items[:5]}, format="json", **bearer(key)).json()
    assert again["duplicates"] == 5 and Click.objects.count() == 5
    too_many = {"items": [items[0]] * (settings.LOUPE_FEEDBACK_BATCH_MAX + 1)}
    assert api.post("/api/v1/feedback/clicks/batch", too_many, format="json", **bearer(key)).status_code == 400


def test_rating_batches_and_the_cap_inside_a_batch(api, collection, settings):
    settings.LOUPE_FEEDBACK_HOURLY_CAP = 2
    key = key_with("feedback")
    items = [{"image_id": collection[i].pk, "value": 1, "client_id": f"r{i}", "user": "heavy"} for i in range(4)]
    result = api.post("/api/v1/feedback/ratings/batch", {"items": items}, format="json", **bearer(key)).json()
    assert (result["created"], result["rejected"]) == (2, 2)
    assert {r["error"]["code"] for r in result["results"] if r["status"] == "rejected"} == {"feedback_cap"}
    single = api.post("/api/v1/feedback/ratings", {**items[3], "client_id": "r9"}, format="json", **bearer(key))
    assert single.status_code == 429 and int(single["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "payload",
    [
        {"event_id": "nope", "image_id": 1, "position": 1, "client_id": "a"},
        {"event_id": str(uuid.uuid4()), "image_id": -1, "position": 1, "client_id": "a"},
        {"event_id": str(uuid.uuid4()), "image_id": 1, "position": 0, "client_id": "a"},
        {"event_id": str(uuid.uuid4()), "image_id": 1, "position": 1, "client_id": "a" * 65},
        {"event_id": str(uuid.uuid4()), "image_id": 1, "position": 1, "client_id": "<script>"},
    ],
)
def test_malformed_clicks_are_400_and_store_nothing(api, collection, payload):
    key = key_with("feedback")
    response = api.post("/api/v1/feedback/clicks", payload, format="json", **bearer(key))
    assert response.status_code == 400 and error_code(response) == "invalid_request"
    assert not Click.objects.exists()


def test_an_unknown_event_is_404(api, collection):
    key = key_with("feedback")
    click = {"event_id": str(uuid.uuid4()), "image_id": collection[0].pk, "position": 1, "client_id": "a"}
    assert api.post("/api/v1/feedback/clicks", click, format="json", **bearer(key)).status_code == 404

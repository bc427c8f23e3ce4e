"""The layout a search was seen in: the page's beacon and the partner API, validated, kept once per search."""

import json

import pytest
from rest_framework.test import APIClient

from feedback.layout import Layout, parse_layout
from feedback.models import SearchEvent
from tests.integration.feedback.conftest import bearer, key_with
from tests.integration.feedback.test_feedback_api import partner_search

pytestmark = pytest.mark.django_db


def test_partner_layout_is_stored_once_and_gives_each_rank_its_cell(collection):
    api, key = APIClient(), key_with("search", "feedback")
    body = partner_search(api, key, user="customer-7", page_size=8)
    sent = {"event_id": body["event_id"], "layout": {"columns": [3, 3, 2], "rows_on_screen": [1, 2]}}
    first = api.post("/api/v1/feedback/layout", sent, format="json", **bearer(key))
    assert first.status_code == 201 and first.json() == {"stored": True}
    event = SearchEvent.objects.get(pk=body["event_id"])
    assert (event.layout_columns, event.layout_first_row, event.layout_last_row) == ([3, 3, 2], 1, 2)
    # Impressions keep their rank; (row, column) follows from it and the cards per row (the last row's repeats).
    layout = Layout(tuple(event.layout_columns))
    assert [layout.cell(p) for p in (1, 3, 4, 7, 8, 9, 10)] == [(1, 1), (1, 3), (2, 1), (3, 1), (3, 2), (4, 1), (4, 2)]
    # A second report (a resize, a resend) does not rewrite what the person saw first.
    again = api.post("/api/v1/feedback/layout", {**sent, "layout": {"columns": 1}}, format="json", **bearer(key))
    assert again.status_code == 200 and again.json() == {"stored": False}
    assert SearchEvent.objects.get(pk=body["event_id"]).layout_columns == [3, 3, 2]


@pytest.mark.parametrize(
    ("layout", "field"),
    [
        ("four", "layout"),
        ([4, 4], "layout"),
        ({"columns": 0}, "layout.columns"),
        ({"columns": 25}, "layout.columns"),
        ({"columns": "4"}, "layout.columns"),
        ({"columns": True}, "layout.columns"),
        ({"columns": []}, "layout.columns"),
        ({"columns": [4, -1]}, "layout.columns"),
        ({"columns": 4, "rows_on_screen": [3, 1]}, "layout.rows_on_screen"),
        ({"columns": 4, "rows_on_screen": [0, 2]}, "layout.rows_on_screen"),
        ({"columns": 4, "rows_on_screen": 2}, "layout.rows_on_screen"),
        ({"columns": 4, "rows": 2}, "layout"),
    ],
)
def test_partner_nonsense_layout_is_a_clear_400_and_stores_nothing(collection, layout, field):
    api, key = APIClient(), key_with("search", "feedback")
    body = partner_search(api, key, user="customer-8")
    refused = api.post(
        "/api/v1/feedback/layout", {"event_id": body["event_id"], "layout": layout}, format="json", **bearer(key)
    )
    assert refused.status_code == 400, refused.content
    error = refused.json()["error"]
    assert error["code"] == "invalid_layout" and field in error["fields"], error
    assert SearchEvent.objects.get(pk=body["event_id"]).layout_columns is None


def test_a_layout_for_another_partners_search_is_404(collection):
    api, mine, theirs = APIClient(), key_with("search", "feedback"), key_with("search", "feedback")
    body = partner_search(api, theirs, user="customer-9")
    sent = {"event_id": body["event_id"], "layout": {"columns": 4}}
    assert api.post("/api/v1/feedback/layout", sent, format="json", **bearer(mine)).status_code == 404
    assert SearchEvent.objects.get(pk=body["event_id"]).layout_columns is None


def test_the_page_beacon_stores_the_layout_and_refuses_nonsense(client, collection):
    client.get("/", {"q": "a test picture"})
    event = SearchEvent.objects.get()
    token = client.cookies["csrftoken"].value
    layout = json.dumps({"columns": [4, 4, 2], "rows_on_screen": [1, 2]})
    bad = client.post(
        "/feedback/layout", {"event_id": str(event.pk), "layout": "{4 columns", "csrfmiddlewaretoken": token}
    )
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"layout": "layout is not JSON."}
    deep = client.post(
        "/feedback/layout", {"event_id": str(event.pk), "layout": "[" * 3000, "csrfmiddlewaretoken": token}
    )
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_layout"
    stored = client.post(
        "/feedback/layout", {"event_id": str(event.pk), "layout": layout, "csrfmiddlewaretoken": token}
    )
    assert stored.status_code == 201
    event.refresh_from_db()
    assert (event.layout_columns, event.layout_first_row, event.layout_last_row) == ([4, 4, 2], 1, 2)


def test_parse_layout_accepts_one_number_for_a_uniform_grid():
    assert parse_layout({"columns": 4}) == Layout((4,))
    assert parse_layout('{"columns": [1], "rows_on_screen": [1, 3]}') == Layout((1,), 1, 3)
    assert Layout((4,)).cell(5) == (2, 1) and Layout((1,)).cell(5) == (5, 1)

"""Issue 20, item 8: a partner reconciles its catalogue with GET /api/v1/images, cursor by cursor."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from collection.models import Image
from tests.integration.searchapp.test_external_ids import partner, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def settled(settings):
    """Changes listed at once (the settle window is tested on its own below)."""
    settings.LOUPE_CATALOGUE_SETTLE_SECONDS = 0


def listed(api, key, **params) -> dict:
    response = api.get("/api/v1/images", params, **key)
    assert response.status_code == 200, response.content
    return response.json()


def test_pages_walk_the_catalogue_once_each_and_a_later_poll_gets_only_the_changes(api, service, settled):
    stock, other = partner("stock library"), partner("another partner")
    for seed in range(5):
        assert upload(api, stock, seed, external_id=f"sku-{seed}", captions=[f"photo {seed}"]).status_code == 201
    assert upload(api, other, 9, external_id="theirs").status_code == 201
    seen, cursor = [], None
    while True:
        page = listed(api, stock, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [row["external_id"] for row in page["results"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    # Every image of the caller's catalogue once, in the order they changed; none of the other partner's.
    assert seen == [f"sku-{seed}" for seed in range(5)]
    assert listed(api, stock, cursor=cursor)["results"] == []
    # A PATCH and a new image come after the cursor, once each, with the new state.
    patched = Image.objects.get(external_id="sku-1")
    assert api.patch(f"/api/v1/images/{patched.pk}", {"tags": ["edited"]}, format="json", **stock).status_code == 200
    assert upload(api, stock, 7, external_id="sku-7").status_code == 201
    later = listed(api, stock, cursor=cursor)
    assert [(r["external_id"], r["tags"]) for r in later["results"]] == [("sku-1", ["edited"]), ("sku-7", [])]
    assert listed(api, other)["results"][0]["external_id"] == "theirs"


def test_updated_since_starts_the_walk_there(api, service, settled):
    stock = partner("stock library")
    for seed in range(3):
        upload(api, stock, seed, external_id=f"sku-{seed}")
    middle = Image.objects.get(external_id="sku-1").updated_at
    page = listed(api, stock, updated_since=middle.isoformat())
    assert [r["external_id"] for r in page["results"]] == ["sku-1", "sku-2"]
    # Nothing changed since: the cursor handed back still finds the next change.
    empty = listed(api, stock, updated_since=(timezone.now() + dt.timedelta(seconds=1)).isoformat())
    assert empty["results"] == [] and not empty["has_more"]


def test_a_change_is_listed_only_once_it_has_settled(api, service, settings):
    settings.LOUPE_CATALOGUE_SETTLE_SECONDS = 3600
    stock = partner("stock library")
    upload(api, stock, 1, external_id="sku-1")
    assert listed(api, stock)["results"] == []  # younger than the window: a transaction may still commit behind it
    settings.LOUPE_CATALOGUE_SETTLE_SECONDS = 0
    assert [r["external_id"] for r in listed(api, stock)["results"]] == ["sku-1"]


def test_bad_parameters_are_clear_400s(api, service, settled):
    stock = partner("stock library")
    for params, field in [
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"updated_since": "x"}, "updated_since"),
    ]:
        response = api.get("/api/v1/images", params, **stock)
        assert response.status_code == 400, params
        assert field in str(response.json()["error"]), response.json()
    # A well-formed cursor from a naive time is refused too, not compared as local time.
    naive = base64.urlsafe_b64encode(b"2026-01-01T00:00:00|1").decode()
    assert api.get("/api/v1/images", {"cursor": naive}, **stock).status_code == 400
    # Listing needs the ingest scope, as adding does.
    assert api.get("/api/v1/images", **partner("reader", "search")).status_code == 403


def test_a_takedown_comes_in_the_walk_as_a_tombstone(api, service, settled):
    stock, other = partner("stock library"), partner("another partner")
    for seed in range(3):
        upload(api, stock, seed, external_id=f"sku-{seed}")
    upload(api, other, 8, external_id="theirs")
    cursor = listed(api, stock, limit=500)["next_cursor"]
    gone = Image.objects.get(external_id="sku-1")
    assert api.delete(f"/api/v1/images/{gone.pk}", **stock).status_code == 204
    assert api.delete("/api/v1/images/ext:theirs", **other).status_code == 204
    after = listed(api, stock, cursor=cursor)
    assert after["results"] == []
    assert [(r["id"], r["external_id"]) for r in after["removed"]] == [(gone.pk, "sku-1")]  # not the other's
    # One at a time, the tombstone and a later change come in time order, each once.
    upload(api, stock, 5, external_id="sku-5")
    walked, at = [], cursor
    while True:
        page = listed(api, stock, cursor=at, limit=1)
        walked += [("removed", r["external_id"]) for r in page["removed"]]
        walked += [("changed", r["external_id"]) for r in page["results"]]
        at = page["next_cursor"]
        if not page["has_more"]:
            break
    assert walked == [("removed", "sku-1"), ("changed", "sku-5")]

"""Hostile input through the real endpoints: clear 4xx answers, nothing stored, nothing executable.

Uploads (search by example on the page and the API, partner ingest), query strings, over-long
parameters and control characters; then what a payload that *is* valid text (a query with a script
in it) looks like wherever it is shown later (results page, admin), and the permission boundaries of
admin and the API.
"""

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from collection.models import Caption, Image
from feedback.models import Click, Rating, SearchEvent
from tests.conftest import image_bytes
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db

SCRIPT = "<script>alert('x')</script>"


def bomb_png() -> bytes:
    """A 9,000 x 9,000 PNG (81 MP, over the 60 MP limit) that compresses to a few tens of KB."""
    buffer = io.BytesIO()
    PILImage.new("L", (9000, 9000)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


HOSTILE_UPLOADS = {
    "text": ("notes.png", b"just some text, not an image"),
    "html": ("page.jpg", b"<!DOCTYPE html><html><script>alert(1)</script></html>"),
    "svg": ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>'),
    "pdf": ("doc.png", b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF"),
    "truncated_jpeg": ("cut.jpg", image_bytes(3, size=(400, 300), fmt="JPEG")[:600]),
    "truncated_png": ("cut.png", image_bytes(4, size=(400, 300))[:300]),
    "polyglot": ("both.png", image_bytes(5) + b"<script>fetch('/admin/')</script>"),
    "empty": ("empty.png", b""),
}


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def counts():
    def snapshot() -> dict:
        media = Path(settings.MEDIA_ROOT)
        return {
            "images": Image.objects.count(),
            "captions": Caption.objects.count(),
            "events": SearchEvent.objects.count(),
            "clicks": Click.objects.count(),
            "ratings": Rating.objects.count(),
            "files": sum(1 for p in media.rglob("*") if p.is_file()),
        }

    return snapshot


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return body["error"]


@pytest.mark.parametrize("kind", [*HOSTILE_UPLOADS, "bomb", "oversized"])
def test_hostile_uploads_are_refused_everywhere_and_store_nothing(api, client, collection, counts, settings, kind):
    if kind == "bomb":
        name, data = "bomb.png", bomb_png()
    elif kind == "oversized":
        settings.LOUPE_MAX_UPLOAD_BYTES = 50_000
        name, data = "big.png", image_bytes(8, size=(600, 600)) + b"\0" * 60_000
    else:
        name, data = HOSTILE_UPLOADS[kind]
    before = counts()
    key = key_with("search", "ingest")

    search = api.post("/api/v1/search", {"image": SimpleUploadedFile(name, data)}, format="multipart", **bearer(key))
    assert error_of(search, 400)["code"] in {"invalid_image", "invalid_request"}
    ingest = api.post(
        "/api/v1/images",
        {"image": SimpleUploadedFile(name, data), "captions": SCRIPT},
        format="multipart",
        **bearer(key),
    )
    assert error_of(ingest, 400)["code"] in {"invalid_image", "invalid_request"}
    page = client.post("/", {"image": SimpleUploadedFile(name, data)})
    assert page.status_code == 400 and b"<script>fetch" not in page.content
    assert counts() == before


@pytest.mark.parametrize(
    "query",
    [
        "' OR 1=1; DROP TABLE searchapp_image; --",
        "dog\x00cat",
        "\x1b[31mred\x1b[0m",
        'tag:"unclosed',
        "tag:'; DELETE FROM feedback_click; --",
        "x" * 513,
        "tag:" + "a" * 300,
    ],
)
def test_hostile_queries_are_answered_or_refused_cleanly(api, collection, counts, query):
    before = counts()
    response = api.get("/api/v1/search", {"q": query, "page_size": 3})
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        error_of(response, 400)
    after = counts()
    assert after["images"] == before["images"] and after["clicks"] == before["clicks"]
    assert Image.objects.count() == len(collection)  # the SQL in the text did nothing


@pytest.mark.parametrize(
    "params",
    [
        {"q": "dog", "page": "9" * 40},
        {"q": "dog", "page_size": "-1"},
        {"q": "dog", "min_score": "nan"},
        {"q": "dog", "max_drop": "inf"},
        {"q": "dog", "tags": ",".join(f"t{i}" for i in range(500))},
        {"q": "dog", "page": "1e309"},
        {"q": "dog", "user": "u" * 500},
    ],
)
def test_over_long_and_non_numeric_parameters_are_400(api, collection, params):
    key = key_with("search")
    error_of(api.get("/api/v1/search", params, **bearer(key)), 400)


def test_control_characters_and_huge_bodies_in_feedback_are_400(api, collection, counts):
    key = key_with("search", "feedback")
    body = api.get("/api/v1/search", {"q": "a test picture", "page_size": 2, "user": "h1"}, **bearer(key)).json()
    before = counts()
    hit = body["results"][0]
    base = {"event_id": body["event_id"], "image_id": hit["image"]["id"], "position": 1}
    for client_id in ["id\x00zero", "<script>", "x" * 65, ""]:
        sent = api.post("/api/v1/feedback/clicks", {**base, "client_id": client_id}, format="json", **bearer(key))
        error_of(sent, 400)
    error_of(
        api.post(
            "/api/v1/feedback/clicks", {**base, "client_id": "c", "event_id": "'; --"}, format="json", **bearer(key)
        ),
        400,
    )
    too_many = {"items": [{**base, "client_id": f"b{i}"} for i in range(501)]}
    error_of(api.post("/api/v1/feedback/clicks/batch", too_many, format="json", **bearer(key)), 400)
    broken = api.post("/api/v1/feedback/clicks", b'{"event_id": ', content_type="application/json", **bearer(key))
    error_of(broken, 400)
    assert counts() == before


def test_a_script_in_a_query_or_caption_is_stored_as_text_and_shown_escaped(client, admin_client, api, collection):
    from collection.embedding import embed_everything_missing
    from collection.images import read_image
    from collection.ingestion.service import add_image

    image, _ = add_image(read_image(image_bytes(77)), captions=[f"caption {SCRIPT}"], tags=["<b>bold</b>"])
    embed_everything_missing()
    page = client.get("/", {"q": f"caption {SCRIPT}"})
    assert page.status_code == 200
    assert SCRIPT.encode() not in page.content and b"&lt;script&gt;" in page.content
    detail = client.get(f"/images/{image.pk}/")
    assert SCRIPT.encode() not in detail.content and b"<b>bold</b>" not in detail.content
    event = SearchEvent.objects.get(query_text=f"caption {SCRIPT}")  # stored exactly as typed
    for url in [
        "/admin/feedback/searchevent/",
        f"/admin/feedback/searchevent/{event.pk}/change/",
        f"/admin/searchapp/image/{image.pk}/change/",
        "/admin/searchapp/image/",
    ]:
        shown = admin_client.get(url)
        assert shown.status_code == 200, url
        assert SCRIPT.encode() not in shown.content, url
    api_body = api.get("/api/v1/search", {"q": f"caption {SCRIPT}"})
    assert api_body["Content-Type"].startswith("application/json")


ADMIN_URLS = [
    "/admin/",
    "/admin/feedback/searchevent/",
    "/admin/feedback/apikey/",
    "/admin/ranking/experiment/",
    "/admin/ranking/rankerversion/",
    "/admin/searchapp/encoderversion/",
    "/admin/auth/user/",
]


def test_admin_is_closed_to_visitors_and_to_non_staff_accounts(client, collection):
    for url in ADMIN_URLS:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    User.objects.create_user("plain", password="pw-plain-123")
    client.login(username="plain", password="pw-plain-123")
    for url in ADMIN_URLS:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_staff_without_permissions_see_nothing_they_were_not_given(client, collection):
    User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client.login(username="staff", password="pw-staff-123")
    assert client.get("/admin/").status_code == 200
    for url in ADMIN_URLS[1:]:
        assert client.get(url).status_code == 403, url
    assert client.post("/admin/feedback/apikey/add/", {"name": "x"}).status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("post", "/api/v1/images", "ingest"),
        ("post", "/api/v1/feedback/clicks", "feedback"),
        ("post", "/api/v1/feedback/ratings/batch", "feedback"),
        ("get", "/api/v1/experiments", "experiments"),
    ],
)
def test_api_scopes_are_enforced(api, collection, method, path, scope):
    assert error_of(getattr(api, method)(path, {}, format="json"), 401)["code"]
    other = key_with(*({"search", "feedback", "ingest", "experiments"} - {scope}))
    error_of(getattr(api, method)(path, {}, format="json", **bearer(other)), 403)
    allowed = getattr(api, method)(path, {}, format="json", **bearer(key_with(scope)))
    assert allowed.status_code not in (401, 403)

"""The REST API: shapes, metadata, errors, schema."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_text_search_returns_results_and_honest_metadata(api, collection):
    response = api.get("/api/v1/search", {"q": "a small picture", "page_size": 5})
    assert response.status_code == 200
    body = response.json()
    assert len(body["results"]) == 5 and [r["position"] for r in body["results"]] == [1, 2, 3, 4, 5]
    first = body["results"][0]["image"]
    assert first["url"].startswith("http://testserver/media/images/") and first["thumbnail_url"]
    assert first["captions"] and first["tags"]
    meta = body["meta"]
    assert meta["kind"] == "text" and meta["has_next"] is True and meta["returned"] == 5
    assert meta["encoder"]["demo"] is True and "no semantic quality" in meta["encoder"]["notice"]


def test_tag_parameter_filters(api, collection):
    body = api.get("/api/v1/search", {"q": "photo", "tags": "odd, s3"}).json()
    assert [r["image"]["id"] for r in body["results"]] == [collection[3].pk]
    assert body["meta"]["tags"] == ["odd", "s3"]


def test_search_by_upload_and_by_id(api, collection):
    upload = SimpleUploadedFile("q.png", image_bytes(5), content_type="image/png")
    body = api.post("/api/v1/search", {"image": upload, "page_size": 2}, format="multipart").json()
    assert body["results"][0]["image"]["id"] == collection[5].pk and body["meta"]["kind"] == "image"
    body = api.post("/api/v1/search", {"image_id": collection[5].pk}, format="json").json()
    assert collection[5].pk not in [r["image"]["id"] for r in body["results"]] and body["meta"]["kind"] == "similar"


def test_image_detail_and_captions(api, collection):
    body = api.get(f"/api/v1/images/{collection[0].pk}").json()
    assert body["id"] == collection[0].pk and body["tags"] == ["even", "s0"] and len(body["captions"]) == 2
    hits = api.get(f"/api/v1/images/{collection[0].pk}/captions", {"k": 3}).json()
    assert len(hits) == 3 and {"caption", "image_id", "score"} <= set(hits[0])


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "x" * 600}, "q"),
        ({"q": "dog", "page": "two"}, "page"),
        ({"q": "dog", "page_size": 0}, "page_size"),
        ({"q": "dog", "max_drop": 2}, "max_drop"),
    ],
)
def test_bad_text_searches_are_400_with_the_field(api, collection, params, field):
    error = assert_error(api.get("/api/v1/search", params), 400, "invalid_request")
    assert field in error["fields"]


def test_bad_tag_syntax_is_400(api, collection):
    assert_error(api.get("/api/v1/search", {"q": "tag: dog"}), 400, "invalid_query")


def test_bad_uploads_are_400_and_store_nothing(api, collection):
    from collection.models import Image

    before = Image.objects.count()
    for name, data in [("x.png", b"not an image"), ("t.jpg", image_bytes(1, fmt="JPEG")[:200]), ("e.png", b"")]:
        response = api.post("/api/v1/search", {"image": SimpleUploadedFile(name, data)}, format="multipart")
        assert response.status_code == 400 and response.json()["error"]["code"] in {"invalid_image", "invalid_request"}
    assert_error(api.post("/api/v1/search", {}, format="json"), 400, "invalid_request")
    assert Image.objects.count() == before


def test_unknown_ids_are_404(api, collection):
    assert_error(api.get("/api/v1/images/999999"), 404, "unknown_image")
    assert_error(api.get("/api/v1/images/999999/captions"), 404, "unknown_image")
    assert_error(api.post("/api/v1/search", {"image_id": 999999}, format="json"), 404, "unknown_image")
    assert_error(api.get(f"/api/v1/images/{collection[0].pk}/captions", {"k": "lots"}), 400, "invalid_query")


def test_openapi_schema_and_docs(api):
    schema = api.get("/api/v1/schema", {"format": "json"}).json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/search", "/api/v1/images/{image_id}", "/api/v1/images/{image_id}/captions"} <= set(schema["paths"])
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/search"])
    docs = api.get("/api/v1/docs")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_results_say_which_channels_found_them(api, collection):
    body = api.get("/api/v1/search", {"q": "another view number 3", "page_size": 3}).json()
    first = body["results"][0]
    assert first["image"]["id"] == collection[3].pk and first["matched_text"] is True
    assert "caption" in first["channels"] and isinstance(first["similarity"], float)
    assert body["meta"]["channel_weights"] == {"clip": 0.0, "fts": 1.0, "caption": 1.0}


def test_tag_suggestions(api, collection):
    body = api.get("/api/v1/tags", {"prefix": "Ev"}).json()
    assert body == [{"tag": "even", "images": 6}]
    top = api.get("/api/v1/tags", {"limit": 2}).json()
    assert [item["images"] for item in top] == [6, 6] and {item["tag"] for item in top} == {"even", "odd"}
    assert api.get("/api/v1/tags", {"prefix": "%"}).json() == []  # LIKE wildcards are literal
    assert_error(api.get("/api/v1/tags", {"limit": 0}), 400, "invalid_query")
    assert_error(api.get("/api/v1/tags", {"limit": "x"}), 400, "invalid_query")
    assert_error(api.get("/api/v1/tags", {"prefix": "x" * 101}), 400, "invalid_query")

"""Adding images through the partner API (ingest scope): upload or a path under an allowed folder."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collection.models import Image, ImageEmbedding
from tests.conftest import image_bytes
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def test_upload_is_stored_embedded_and_searchable_at_once(api, service):
    key = key_with("ingest", "search")
    upload = SimpleUploadedFile("cat.png", image_bytes(31), content_type="image/png")
    response = api.post(
        "/api/v1/images",
        {"image": upload, "captions": ["a cat on a sofa"], "tags": "cat, sofa", "licence": "CC BY 4.0"},
        format="multipart",
        **bearer(key),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["created"] is True and body["indexed"] is True
    assert body["image"]["captions"] == ["a cat on a sofa"] and body["image"]["tags"] == ["cat", "sofa"]
    image = Image.objects.get()
    assert ImageEmbedding.objects.filter(image=image).exists() and image.has_captions
    found = api.get("/api/v1/search", {"q": "cat on a sofa"}, **bearer(key)).json()
    assert found["results"][0]["image"]["id"] == image.pk
    again = api.post("/api/v1/images", {"image": SimpleUploadedFile("same.png", image_bytes(31))}, **bearer(key))
    assert again.status_code == 200 and again.json()["created"] is False and Image.objects.count() == 1


def test_path_ingest_only_inside_allowed_folders(api, service, settings, tmp_path):
    key = key_with("ingest")
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir(), outside.mkdir()
    (allowed / "ok.png").write_bytes(image_bytes(32))
    (outside / "secret.png").write_bytes(image_bytes(33))
    (allowed / "link.png").symlink_to(outside / "secret.png")

    def add(path):
        return api.post("/api/v1/images", {"path": path}, format="json", **bearer(key))

    off = add(str(allowed / "ok.png"))
    assert off.status_code == 400 and "LOUPE_INGEST_ROOTS" in off.json()["error"]["message"]
    settings.LOUPE_INGEST_ROOTS = [allowed.resolve()]
    assert add(f"file://{allowed / 'ok.png'}").status_code == 201
    escapes = [outside / "secret.png", allowed / "link.png", allowed / ".." / "outside" / "secret.png"]
    for refused in [*map(str, escapes), "relative/ok.png", str(allowed / "missing.png"), "file://elsewhere/etc/passwd"]:
        response = add(refused)
        assert response.status_code == 400, refused
    assert Image.objects.count() == 1


def test_not_an_image_is_a_clear_400_and_stores_nothing(api, service):
    key = key_with("ingest")
    response = api.post(
        "/api/v1/images", {"image": SimpleUploadedFile("x.png", b"<svg onload=alert(1)>")}, **bearer(key)
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_image"
    assert not Image.objects.exists()
    neither = api.post("/api/v1/images", {"tags": "x"}, format="json", **bearer(key))
    assert neither.status_code == 400

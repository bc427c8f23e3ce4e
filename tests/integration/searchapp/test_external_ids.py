"""External ids through the partner API: upsert on ingest, lookup by ext:<id> within the caller's catalogue."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collection.models import Caption, Image, ImageEmbedding
from feedback.api_keys import issue_key
from tests.conftest import image_bytes
from tests.integration.feedback.conftest import bearer

pytestmark = pytest.mark.django_db


def partner(name: str, *scopes: str) -> dict:
    """Request headers of a key named ``name``: the name is the key's catalogue."""
    return bearer(issue_key(name, list(scopes or ("ingest", "search", "feedback"))).plaintext)


def upload(api: APIClient, key: dict, seed: int, **fields):
    data = {"image": SimpleUploadedFile(f"photo-{seed}.png", image_bytes(seed), content_type="image/png"), **fields}
    return api.post("/api/v1/images", data, format="multipart", **key)


@pytest.fixture
def api():
    return APIClient()


def test_ingest_twice_with_one_external_id_gives_one_image_updated(api, service):
    stock = partner("stock library")
    first = upload(api, stock, 1, external_id="sku-1", captions=["a red kite"], tags="bird", licence="CC BY 4.0")
    assert first.status_code == 201, first.content
    assert first.json()["image"]["external_id"] == "sku-1" and first.json()["created"] is True
    second = upload(api, stock, 1, external_id="sku-1", captions=["a red kite over a hill"], tags="bird, hill")
    assert second.status_code == 200, second.content
    body = second.json()
    assert body["created"] is False and body["updated"] is True
    assert Image.objects.count() == 1
    image = Image.objects.get()
    assert image.caption_texts() == ["a red kite over a hill"] and image.tags == ["bird", "hill"]
    assert image.licence == "CC BY 4.0"  # not sent the second time: kept
    assert image.catalogue == "stock library" and image.external_id == "sku-1"
    # The full-text document followed: the new word finds it.
    found = api.get("/api/v1/search", {"q": "hill"}, **stock).json()["results"]
    assert found[0]["image"]["id"] == image.pk and found[0]["image"]["external_id"] == "sku-1"


def test_new_bytes_under_a_known_external_id_replace_the_file_and_its_vectors(
    api, service, django_capture_on_commit_callbacks
):
    stock = partner("stock library")
    first = upload(api, stock, 2, external_id="sku-2", captions=["first shot"]).json()["image"]
    old = Image.objects.get(pk=first["id"])
    old_file, old_vector = Path(settings.MEDIA_ROOT) / old.file.name, ImageEmbedding.objects.get(image=old).vector
    assert old_file.is_file()
    with django_capture_on_commit_callbacks(execute=True):  # the old files go once the upsert commits
        replaced = upload(api, stock, 3, external_id="sku-2")
    assert replaced.status_code == 200, replaced.content
    image = Image.objects.get()
    assert image.pk == old.pk and image.sha256 != old.sha256 and image.caption_texts() == ["first shot"]
    assert not old_file.exists() and (Path(settings.MEDIA_ROOT) / image.file.name).is_file()
    assert replaced.json()["indexed"] is True
    assert list(ImageEmbedding.objects.get(image=image).vector) != list(old_vector)  # embedded from the new pixels


def test_external_ids_are_per_catalogue(api, service):
    stock, blog = partner("stock library"), partner("photo blog")
    mine = upload(api, stock, 4, external_id="42", captions=["a harbour"]).json()["image"]
    theirs = upload(api, blog, 5, external_id="42", captions=["a market"]).json()["image"]
    assert mine["id"] != theirs["id"] and Image.objects.count() == 2
    assert api.get("/api/v1/images/ext:42", **stock).json()["id"] == mine["id"]
    assert api.get("/api/v1/images/ext:42", **blog).json()["id"] == theirs["id"]
    unknown = api.get("/api/v1/images/ext:43", **stock)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_image"
    # By Loupe's id anyone may read it, but another catalogue's external id is not shown.
    read_by_other = api.get(f"/api/v1/images/{mine['id']}", **blog).json()
    assert read_by_other["id"] == mine["id"] and read_by_other["external_id"] is None
    # The same bytes under a new id of another catalogue are not taken over.
    clash = upload(api, blog, 4, external_id="copy")
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "duplicate_content"
    assert Image.objects.get(pk=mine["id"]).catalogue == "stock library"


def test_bad_external_ids_are_refused(api, service):
    stock = partner("stock library")
    for bad in ["has space", "a/b", "x" * 201, "%2F"]:
        response = upload(api, stock, 6, external_id=bad)
        assert response.status_code == 400 and "external_id" in response.json()["error"]["fields"], bad
    assert not Image.objects.exists()


def test_feedback_names_an_image_by_external_id(api, service):
    stock = partner("stock library")
    image = upload(api, stock, 7, external_id="sku-7", captions=["a lighthouse"]).json()["image"]
    rated = api.post(
        "/api/v1/feedback/ratings",
        {"external_id": "sku-7", "value": 1, "client_id": "r1", "user": "u1"},
        format="json",
        **stock,
    )
    assert rated.status_code == 201, rated.content
    from feedback.models import Rating

    assert Rating.objects.get().image_id == image["id"]
    elsewhere = api.post(
        "/api/v1/feedback/ratings",
        {"external_id": "sku-7", "value": 1, "client_id": "r2", "user": "u1"},
        format="json",
        **partner("photo blog"),
    )
    assert elsewhere.status_code == 404 and Rating.objects.count() == 1
    search = api.get("/api/v1/search", {"q": "lighthouse", "user": "u1"}, **stock).json()
    clicked = api.post(
        "/api/v1/feedback/clicks",
        {"event_id": search["event_id"], "external_id": "sku-7", "position": 1, "client_id": "c1", "user": "u1"},
        format="json",
        **stock,
    )
    assert clicked.status_code == 201, clicked.content
    both = api.post(
        "/api/v1/feedback/ratings",
        {"external_id": "sku-7", "image_id": image["id"], "value": 1, "client_id": "r3"},
        format="json",
        **stock,
    )
    assert both.status_code == 400
    exported = api.get("/api/v1/users/u1/export", **stock).json()
    assert [r["external_id"] for r in exported["ratings"]] == ["sku-7"]
    assert [c["external_id"] for c in exported["clicks"]] == ["sku-7"]
    assert exported["searches"][0]["impressions"][0]["external_id"] == "sku-7"


def test_cli_caption_table_with_external_ids_upserts(tmp_path, service):
    from django.core.management import call_command

    (tmp_path / "a.png").write_bytes(image_bytes(8))
    table = tmp_path / "captions.csv"
    table.write_text("image,caption,external_id\na.png,a snowy owl,owl-1\n")
    call_command("ingest", str(table), "--no-embed")
    table.write_text("image,caption,external_id\na.png,a snowy owl on a post,owl-1\n")
    out = io.StringIO()
    call_command("ingest", str(table), "--no-embed", stdout=out)
    assert "0 added, 1 updated (known external id)" in out.getvalue()
    image = Image.objects.get()
    assert image.external_id == "owl-1" and image.catalogue == ""
    assert list(Caption.objects.filter(image=image).values_list("text", flat=True)) == ["a snowy owl on a post"]


def test_your_image_sent_before_without_an_id_takes_the_id(api, service):
    stock = partner("stock library")
    before = upload(api, stock, 9, captions=["a quay"]).json()["image"]
    assert before["external_id"] is None
    named = upload(api, stock, 9, external_id="sku-9", tags="harbour")
    assert named.status_code == 200 and named.json()["updated"] is True
    image = Image.objects.get()
    assert image.pk == before["id"] and image.external_id == "sku-9" and image.tags == ["harbour"]
    assert image.caption_texts() == ["a quay"]
    # Under another id it is not taken over twice.
    again = upload(api, stock, 9, external_id="sku-other")
    assert again.status_code == 409 and Image.objects.get().external_id == "sku-9"

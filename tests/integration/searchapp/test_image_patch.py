"""PATCH /api/v1/images/<id or ext:id>: what changes, what follows it, who may, and bad input changing nothing."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collection.models import CaptionEmbedding, Image, MetadataField
from collection.text_index import full_text_matches
from collection.versions import serving_version
from tests.conftest import image_bytes
from tests.integration.searchapp.test_external_ids import partner

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def stock():
    return partner("stock library")


@pytest.fixture
def kite(api, stock, service) -> dict:
    MetadataField.objects.create(name="author", kind=MetadataField.Kind.KEYWORD)
    MetadataField.objects.create(name="price", kind=MetadataField.Kind.NUMBER)
    data = {
        "image": SimpleUploadedFile("kite.png", image_bytes(11), content_type="image/png"),
        "external_id": "sku-11",
        "captions": ["a red kite"],
        "tags": "bird",
        "metadata": '{"author": "smith", "price": 10}',
    }
    response = api.post("/api/v1/images", data, format="multipart", **stock)
    assert response.status_code == 201, response.content
    return response.json()["image"]


def patch(api, key, ref, body):
    return api.patch(f"/api/v1/images/{ref}", body, format="json", **key)


def test_patch_changes_what_it_sends_and_the_text_channels_follow(api, stock, kite):
    response = patch(
        api,
        stock,
        kite["id"],
        {
            "captions": ["a red kite over a windmill", "a bird of prey"],
            "tags": ["bird", "windmill"],
            "metadata": {"price": 12.5, "author": None},
            "licence": "CC BY-SA 4.0",
            "attribution": "https://example.com/kite",
        },
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["captions"] == ["a red kite over a windmill", "a bird of prey"]
    assert body["tags"] == ["bird", "windmill"] and body["metadata"] == {"price": 12.5}  # null removed author
    assert body["licence"] == "CC BY-SA 4.0" and body["attribution"] == "https://example.com/kite"
    assert body["external_id"] == "sku-11"
    image = Image.objects.get(pk=kite["id"])
    assert image.has_captions
    # The full-text document and the caption vectors followed in the same request.
    assert [n.id for n in full_text_matches("windmill", k=5)] == [image.pk]
    _, version = serving_version()
    vectors = CaptionEmbedding.objects.filter(caption__image=image, encoder_version=version)
    assert sorted(vectors.values_list("caption__text", flat=True)) == ["a bird of prey", "a red kite over a windmill"]
    # By external id too; only the licence changes.
    again = patch(api, stock, "ext:sku-11", {"licence": "CC0"})
    assert again.status_code == 200 and again.json()["licence"] == "CC0"
    assert again.json()["captions"] == body["captions"] and again.json()["metadata"] == {"price": 12.5}


def test_bad_input_is_a_400_with_field_errors_and_changes_nothing(api, stock, kite):
    before = api.get(f"/api/v1/images/{kite['id']}", **stock).json()
    cases = [
        ({"captions": ["a kite"], "attribution": "javascript:alert(1)"}, "attribution"),
        ({"captions": ["a kite"], "metadata": {"colour": "red"}}, "metadata"),
        ({"tags": ["bird"], "metadata": {"price": "cheap"}}, "metadata"),
        ({"captions": "not a list"}, "captions"),
        ({}, "captions"),
        ({"captions": ["x"] * 21}, "captions"),
    ]
    for body, field in cases:
        response = patch(api, stock, kite["id"], body)
        assert response.status_code == 400, (body, response.content)
        assert field in response.json()["error"].get("fields", {}), (body, response.json())
    assert api.get(f"/api/v1/images/{kite['id']}", **stock).json() == before


def test_a_partner_changes_only_its_own_catalogue(api, stock, kite):
    blog = partner("photo blog")
    other = patch(api, blog, kite["id"], {"captions": ["defaced"]})
    assert other.status_code == 403 and other.json()["error"]["code"] == "other_catalogue"
    assert patch(api, blog, "ext:sku-11", {"captions": ["defaced"]}).status_code == 404
    assert patch(api, partner("stock library", "search"), kite["id"], {"captions": ["no scope"]}).status_code == 403
    assert patch(api, {}, kite["id"], {"captions": ["no key"]}).status_code == 401
    assert patch(api, stock, 10**9, {"captions": ["missing"]}).status_code == 404
    assert Image.objects.get(pk=kite["id"]).caption_texts() == ["a red kite"]


def test_an_admin_caption_edit_reaches_full_text_and_moves_the_revision(admin_client, service):
    from collection.images import read_image
    from collection.ingestion.service import add_image
    from collection.revisions import current_revision

    image, _ = add_image(read_image(image_bytes(12)), captions=["a grey heron"])
    caption = image.captions.get()
    before = current_revision()
    form = {
        "tags": "bird",
        "source": "",
        "licence": "",
        "attribution": "",
        "metadata": "{}",
        "captions-TOTAL_FORMS": "1",
        "captions-INITIAL_FORMS": "1",
        "captions-0-id": str(caption.pk),
        "captions-0-image": str(image.pk),
        "captions-0-position": "0",
        "captions-0-text": "a grey heron by a canal",
    }
    response = admin_client.post(f"/admin/searchapp/image/{image.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [n.id for n in full_text_matches("canal", k=3)] == [image.pk]
    assert current_revision() > before

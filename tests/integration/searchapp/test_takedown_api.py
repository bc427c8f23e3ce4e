"""Takedowns through the API (a partner key only its catalogue's images, by id or ext:<id>; staff any) and the
admin's action."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collection.models import Image, RemovedImage
from feedback.api_keys import issue_key
from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import Impression
from searchapp.search import SearchRequest
from tests.conftest import image_bytes
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


def uploaded(api, key: str, seed: int, external_id: str | None = None) -> int:
    upload = SimpleUploadedFile(f"p{seed}.png", image_bytes(seed), content_type="image/png")
    fields = {"image": upload, "captions": ["a test picture"]}
    if external_id is not None:
        fields["external_id"] = external_id
    response = api.post("/api/v1/images", fields, **bearer(key))
    assert response.status_code == 201, response.content
    return response.json()["image"]["id"]


def test_a_partner_takes_down_only_its_own_catalogues_images(api, service):
    mine = issue_key("stock library", ["ingest", "search"]).plaintext
    theirs = issue_key("photo blog", ["ingest"]).plaintext
    own, other = uploaded(api, mine, 41), uploaded(api, theirs, 42)
    assert Image.objects.get(pk=own).catalogue == "stock library"  # ingest records the key's catalogue

    refused = api.delete(f"/api/v1/images/{other}", **bearer(mine))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "other_catalogue"
    assert Image.objects.filter(pk=other).exists() and not RemovedImage.objects.exists()

    response = api.delete(f"/api/v1/images/{own}", **bearer(mine))
    assert response.status_code == 204 and response.content == b""
    assert api.get(f"/api/v1/images/{own}").status_code == 404
    found = api.get("/api/v1/search", {"q": "a test picture"}, **bearer(mine)).json()["results"]
    assert [hit["image"]["id"] for hit in found] == [other]
    again = api.delete(f"/api/v1/images/{own}", **bearer(mine))
    assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_image"
    assert api.delete("/api/v1/images/987654", **bearer(mine)).status_code == 404


def test_a_partner_takes_down_by_its_own_external_id(api, service):
    mine = issue_key("stock library", ["ingest", "search"]).plaintext
    theirs = issue_key("photo blog", ["ingest"]).plaintext
    own, other = uploaded(api, mine, 44, "sku-7"), uploaded(api, theirs, 45, "sku-7")  # one id, two catalogues

    response = api.delete("/api/v1/images/ext:sku-7", **bearer(mine))
    assert response.status_code == 204
    assert not Image.objects.filter(pk=own).exists() and Image.objects.filter(pk=other).exists()
    assert RemovedImage.objects.get().image_id == own
    gone = api.delete("/api/v1/images/ext:sku-7", **bearer(mine))  # the other catalogue's sku-7 is not found
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "unknown_image"
    assert api.get("/api/v1/images/ext:sku-7", **bearer(theirs)).json()["id"] == other
    assert api.delete("/api/v1/images/ext:sku-7").status_code == 401


def test_taking_down_needs_the_ingest_scope_or_staff_allowed_to_delete(api, service):
    owner = key_with("ingest")
    image = uploaded(api, owner, 43)
    assert api.delete(f"/api/v1/images/{image}").status_code == 401
    searcher = key_with("search", "feedback")  # the same key name: the image is in its catalogue too
    assert Image.objects.get(pk=image).catalogue == "partner app"
    searching_only = api.delete(f"/api/v1/images/{image}", **bearer(searcher))
    assert searching_only.status_code == 403 and searching_only.json()["error"]["code"] == "permission_denied"
    assert "'ingest' scope" in searching_only.json()["error"]["message"] and Image.objects.filter(pk=image).exists()
    users = get_user_model().objects
    viewer = users.create_user("viewer", password="a-long-test-password", is_staff=True)
    api.force_login(viewer)
    assert api.delete(f"/api/v1/images/{image}").status_code == 403
    deleter = users.create_user("deleter", password="a-long-test-password", is_staff=True)
    deleter.user_permissions.add(Permission.objects.get(codename="delete_image"))
    api.force_login(deleter)
    assert api.delete(f"/api/v1/images/{image}").status_code == 204  # staff may take down any catalogue's image
    assert RemovedImage.objects.get(image_id=image).requested_by == "admin deleter"


def test_the_admin_action_takes_images_down_and_keeps_their_feedback(admin_client, service, collection):
    viewer = Viewer(user_key="anon:alice-token-0000000000", session="s1")
    response = service.search(SearchRequest(text="a test picture", page_size=6), viewer)
    chosen = [response.hits[0].image.pk, response.hits[1].image.pk]
    record_click(viewer, ClickInput(str(response.event_id), chosen[0], 1, "first"))
    listed = admin_client.get("/admin/searchapp/image/").content.decode()
    assert 'value="take_down"' in listed and 'value="delete_selected"' not in listed  # one way to delete

    done = admin_client.post(
        "/admin/searchapp/image/", {"action": "take_down", "_selected_action": chosen}, follow=True
    )
    assert "Took down 2 image(s) in 1 batch(es)" in done.content.decode()
    assert not Image.objects.filter(pk__in=chosen).exists()
    assert set(RemovedImage.objects.values_list("image_id", flat=True)) == set(chosen)
    assert Impression.objects.filter(event_id=response.event_id).count() == len(response.hits)
    # The change page's Delete button is a takedown too (a plain delete would leave the files and the fence).
    third = next(image.pk for image in collection if image.pk not in chosen)
    admin_client.post(f"/admin/searchapp/image/{third}/delete/", {"post": "yes"})
    assert not Image.objects.filter(pk=third).exists() and RemovedImage.objects.filter(image_id=third).exists()
    clicks = admin_client.get("/admin/feedback/click/")
    assert clicks.status_code == 200 and "taken down" in clicks.content.decode()  # the detached click
    assert admin_client.get("/admin/searchapp/removedimage/").status_code == 200

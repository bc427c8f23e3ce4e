"""Declaring the metadata schema (admin and ``manage.py metadata``) and filtering images by it in the admin.

The schema is what ingest validates against and what filters trust, so each way of changing it keeps
stored values true to their field's kind.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from collection.images import read_image
from collection.ingestion.service import add_image
from collection.metadata import declare_field, range_index_name
from collection.models import Image, MetadataField
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


def _index_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = %s", [name])
        return cursor.fetchone() is not None


@pytest.fixture
def photos():
    """Three images: two by smith (2019, 2021), one by jones (2023)."""
    declare_field("author", "keyword")
    declare_field("taken", "date")
    rows = [("alpha", "smith", "2019-05-01"), ("bravo", "smith", "2021-07-04"), ("yankee", "jones", "2023-01-09")]
    return [
        add_image(read_image(image_bytes(seed)), captions=[f"photo {word}"], metadata={"author": a, "taken": d})[0]
        for seed, (word, a, d) in enumerate(rows)
    ]


def _listed(admin_client, query: str) -> set[int]:
    response = admin_client.get(reverse("admin:searchapp_image_changelist"), {"q": query})
    assert response.status_code == 200
    return {image.pk for image in response.context["cl"].result_list}


def test_the_cli_declares_a_date_field_with_its_range_index_and_lists_it(photos):
    call_command("metadata", "declare", "price", "number", "--description", "in euros")
    assert MetadataField.objects.get(name="price").kind == "number"
    assert _index_exists(range_index_name("price"))
    out = io.StringIO()
    call_command("metadata", "list", stdout=out)
    lines = dict(line.split("\t", 1) for line in out.getvalue().splitlines())
    assert lines["author"].startswith("keyword\t3 images")
    assert lines["price"].startswith("number\t0 images\tin euros")


def test_the_cli_refuses_a_kind_change_that_stored_values_do_not_fit(photos):
    with pytest.raises(CommandError, match=r"3 stored images have a author value that is not a number"):
        call_command("metadata", "declare", "author", "number")
    assert MetadataField.objects.get(name="author").kind == "keyword"
    with pytest.raises(CommandError, match="'2bad'"):
        call_command("metadata", "declare", "2bad", "keyword")
    assert not MetadataField.objects.filter(name="2bad").exists()


def test_the_admin_declares_a_field_and_creates_its_range_index(admin_client):
    response = admin_client.post(
        reverse("admin:searchapp_metadatafield_add"), {"name": "taken", "kind": "date", "description": "shot on"}
    )
    assert response.status_code == 302, response.content[:2000]
    assert MetadataField.objects.get(name="taken").kind == "date"
    assert _index_exists(range_index_name("taken"))


def test_the_admin_refuses_a_kind_change_that_stored_values_do_not_fit(admin_client, photos):
    field = MetadataField.objects.get(name="author")
    url = reverse("admin:searchapp_metadatafield_change", args=[field.pk])
    response = admin_client.post(url, {"kind": "boolean", "description": ""})
    assert response.status_code == 200
    assert "3 stored images have a author value that is not a boolean" in response.content.decode()
    assert MetadataField.objects.get(name="author").kind == "keyword"
    # A field images carry cannot be deleted (their values would stop validating and filtering).
    assert admin_client.post(reverse("admin:searchapp_metadatafield_delete", args=[field.pk])).status_code == 403
    assert MetadataField.objects.filter(name="author").exists()


def test_the_image_list_filters_by_metadata_in_the_search_syntax(admin_client, photos):
    smith_2019, smith_2021, jones = (image.pk for image in photos)
    assert _listed(admin_client, "author:smith") == {smith_2019, smith_2021}
    assert _listed(admin_client, "-author:smith") == {jones}
    assert _listed(admin_client, "taken>=2021-01-01") == {smith_2021, jones}
    assert _listed(admin_client, "author:smith taken:2019") == {smith_2019}
    # The rest of the box still searches captions.
    assert _listed(admin_client, "author:smith bravo") == {smith_2021}


def test_a_bad_filter_in_the_image_list_says_why_and_lists_nothing(admin_client, photos):
    response = admin_client.get(reverse("admin:searchapp_image_changelist"), {"q": "taken>=yesterday"}, follow=True)
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert "taken" in " ".join(str(m) for m in response.context["messages"])


def test_the_image_form_validates_metadata_against_the_schema(admin_client, photos):
    image = photos[0]
    url = reverse("admin:searchapp_image_change", args=[image.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name, "") for name in form.fields if name not in form.Meta.__dict__}
    data.update({"metadata": '{"author": "smith", "taken": "not a date"}', "tags": "", "captions-TOTAL_FORMS": "0"})
    data.update({"captions-INITIAL_FORMS": "0", "captions-MIN_NUM_FORMS": "0", "captions-MAX_NUM_FORMS": "1000"})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "taken" in str(response.context["adminform"].form.errors.get("metadata"))
    assert Image.objects.get(pk=image.pk).metadata == {"author": "smith", "taken": "2019-05-01"}

"""Metadata on the search: filters in the query and the API reach every channel and the result cache,
``sort=date`` orders the results that pass the cut newest first, and bad filters are clear 400s."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from collection.metadata import declare_field
from collection.models import Image
from collection.text_index import full_text_matches
from feedback.models import Impression
from searchapp.search import InvalidQuery, SearchRequest
from tests.conftest import image_bytes
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def catalogue(collection):
    """The twelve test images with metadata: seeds 0-5 by smith, 6-11 by jones; seed s taken in 2010+s, but
    the dates run against the insertion order for odd seeds so that date order is not relevance order."""
    for name, kind in [("date", "date"), ("author", "keyword"), ("licence", "keyword"), ("price", "number")]:
        declare_field(name, kind)
    for seed, image in enumerate(collection):
        year = 2010 + (seed if seed % 2 == 0 else 11 - seed)
        image.metadata = {
            "date": f"{year}-06-01",
            "author": "smith" if seed < 6 else "jones",
            "licence": "cc-by-nc" if seed % 3 == 0 else "cc-by",
            "price": seed,
        }
        image.save(update_fields=["metadata"])
    return collection


def ids_of(body) -> list[int]:
    return [r["image"]["id"] for r in body["results"]]


def expected(collection, keep) -> set[int]:
    return {image.pk for image in collection if keep(Image.objects.get(pk=image.pk).metadata)}


def test_a_query_filter_reaches_every_channel(service, catalogue):
    response = service.search(SearchRequest(text="caption test picture author:smith", page_size=12))
    assert response.query_text == "caption test picture" and response.filters == "author:smith"
    assert {h.image.pk for h in response.hits} == expected(catalogue, lambda m: m["author"] == "smith")
    # The full-text channel matched every image's caption; filtered, it brought only smith's.
    assert any("fts" in h.channels for h in response.hits)
    smith = {image.pk for image in catalogue[:6]}
    _, parsed = __import__("collection.metadata_filter", fromlist=["x"]).parse_filter_tokens(
        "author:smith", {"author": "keyword"}
    )
    assert {n.id for n in full_text_matches("caption picture", k=50, metadata=parsed)} == smith


def test_api_parameters_filter_with_several_values_ranges_and_negation(api, catalogue):
    body = api.get(
        "/api/v1/search",
        {
            "q": "a test picture",
            "author": ["smith", "jones"],
            "licence_not": "cc-by-nc",
            "price_from": "2",
            "price_to": "9",
            "page_size": 12,
        },
    ).json()
    want = expected(catalogue, lambda m: m["licence"] != "cc-by-nc" and 2 <= m["price"] <= 9)
    assert set(ids_of(body)) == want and len(want) == 5  # seeds 2, 4, 5, 7, 8
    body = api.get("/api/v1/search", {"q": "a test picture", "filter": "date:2012..2014", "page_size": 12}).json()
    assert set(ids_of(body)) == expected(catalogue, lambda m: "2012" <= m["date"] < "2015")
    assert body["meta"]["filters"] == "date>=2012-01-01 date<2015-01-01"
    body = api.get("/api/v1/search", {"q": "a test picture", "date_from": "2019", "page_size": 12}).json()
    assert set(ids_of(body)) == expected(catalogue, lambda m: m["date"] >= "2019")


def test_the_result_cache_keeps_filters_apart(api, catalogue, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    first = api.get("/api/v1/search", {"q": "a test picture author:smith", "page_size": 12}).json()
    second = api.get("/api/v1/search", {"q": "a test picture author:jones", "page_size": 12}).json()
    again = api.get("/api/v1/search", {"q": "a test picture author:smith", "page_size": 12}).json()
    assert set(ids_of(first)) == expected(catalogue, lambda m: m["author"] == "smith")
    assert set(ids_of(second)) == expected(catalogue, lambda m: m["author"] == "jones")
    assert again["meta"]["cached"] is True and ids_of(again) == ids_of(first)


def test_date_sort_orders_the_passing_results_newest_first_as_logged(service, catalogue, api):
    key = key_with("search")
    relevance = api.get("/api/v1/search", {"q": "a test picture", "page_size": 12, "min_score": -1}, **bearer(key))
    by_date = api.get(
        "/api/v1/search", {"q": "a test picture", "page_size": 12, "min_score": -1, "sort": "date"}, **bearer(key)
    ).json()
    assert by_date["meta"]["sort"] == "date" and by_date["meta"]["ranker"].endswith("by date")
    dates = [r["image"]["metadata"]["date"] for r in by_date["results"]]
    assert dates == sorted(dates, reverse=True) and len(dates) == 12
    assert set(ids_of(by_date)) == set(ids_of(relevance.json())) and ids_of(by_date) != ids_of(relevance.json())
    # The log holds the list as served: position k is the k-th newest.
    logged = Impression.objects.filter(event_id=by_date["event_id"]).order_by("position")
    assert [(i.image_id, i.position) for i in logged] == [(r["image"]["id"], r["position"]) for r in by_date["results"]]
    # Only results that pass the cut are ordered: with a threshold at the fifth best CLIP similarity (words
    # that no caption holds, so CLIP is the only channel), the date order holds exactly those five.
    ranked = api.get("/api/v1/search", {"q": "zebra quilt", "page_size": 12, "min_score": -1}).json()["results"]
    threshold = ranked[4]["similarity"]
    cut = api.get("/api/v1/search", {"q": "zebra quilt", "sort": "date", "min_score": threshold}).json()
    assert set(ids_of(cut)) == {r["image"]["id"] for r in ranked[:5]}
    assert [r["image"]["metadata"]["date"] for r in cut["results"]] == sorted(
        (r["image"]["metadata"]["date"] for r in ranked[:5]), reverse=True
    )


def test_date_sort_on_the_page_with_a_filter(client, catalogue):
    page = client.get("/", {"q": "a test picture author:jones", "sort": "date"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "where author:jones" in text and "newest first" in text
    shown = [hit.image.pk for hit in page.context["response"].hits]
    jones = sorted(catalogue[6:], key=lambda image: Image.objects.get(pk=image.pk).metadata["date"], reverse=True)
    assert shown == [image.pk for image in jones]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"filter": "price>=cheap"}, "filter", "not a number"),
        ({"filter": "camera:nikon"}, "filter", "not a filter on a declared field"),
        ({"author_from": "a"}, "author_from", "only date and number"),
        ({"date_from": "yesterday"}, "date_from", "not YYYY-MM-DD"),
        ({"price": "1,x"}, "price", "not a number"),
        ({"q": "a test picture date:2021-13"}, "q", "not a month"),
        ({"q": "author:smith"}, "q", "beside the filters"),
    ],
)
def test_bad_filters_are_clear_400s(api, catalogue, params, field, message):
    response = api.get("/api/v1/search", {"q": "a test picture", **params})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in ("invalid_filter", "invalid_query") and message in error["message"]
    assert field in error.get("fields", {})


def test_sort_must_be_known_and_needs_a_date_field(api, service, collection):
    response = api.get("/api/v1/search", {"q": "a test picture", "sort": "popular"})
    assert response.status_code == 400 and "sort" in response.json()["error"]["fields"]
    with pytest.raises(InvalidQuery, match="needs a date field"):
        service.search(SearchRequest(text="a test picture", sort="date"))


def test_ingest_validates_and_stores_metadata(api, service):
    declare_field("author", "keyword")
    key = key_with("ingest")
    upload = SimpleUploadedFile("a.png", image_bytes(41), content_type="image/png")
    refused = api.post(
        "/api/v1/images", {"image": upload, "metadata": '{"camera": "nikon"}'}, format="multipart", **bearer(key)
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_metadata"
    assert "Unknown metadata field 'camera'" in refused.json()["error"]["message"] and not Image.objects.exists()
    upload = SimpleUploadedFile("a.png", image_bytes(41), content_type="image/png")
    added = api.post(
        "/api/v1/images", {"image": upload, "metadata": '{"author": " Smith "}'}, format="multipart", **bearer(key)
    )
    assert added.status_code == 201, added.content
    assert added.json()["image"]["metadata"] == {"author": "Smith"} and Image.objects.get().metadata == {
        "author": "Smith"
    }

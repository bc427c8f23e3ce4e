"""The API's fast search JSON must be exactly what the documented serializer (the OpenAPI shape) gives."""

import pytest
from rest_framework.test import APIRequestFactory

from feedback.identity import Viewer
from searchapp.api.representation import search_json
from searchapp.api.serializers import SearchResponseSerializer
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "request_for",
    [
        lambda images: SearchRequest(text="a test picture", page_size=7),
        lambda images: SearchRequest(text="caption tag:even", page_size=3),
        lambda images: SearchRequest(image_id=images[2].pk, page_size=5),
    ],
)
def test_fast_json_equals_the_serializer(service, collection, request_for, settings):
    settings.ALLOWED_HOSTS = ["photos.example.com"]
    request = APIRequestFactory().get("/api/v1/search", HTTP_HOST="photos.example.com")
    response = service.search(request_for(collection), Viewer(user_key="anon:repr-token-000000000000"))
    assert response.hits
    expected = SearchResponseSerializer(response, context={"request": request}).data
    assert search_json(response, request) == expected
    assert search_json(response, request)["results"][0]["image"]["url"].startswith("http://photos.example.com/")

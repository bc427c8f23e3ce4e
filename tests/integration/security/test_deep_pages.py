"""Finding 5 of issue 19: the deepest page the API and the page allow is served, not a 500.

The caption channel reads 1.5 captions per wanted image with ``hnsw.ef_search`` equal to that; pgvector
accepts at most 1,000, so any depth past ~650 failed. The deepest page either side allows is 1,000
results deep (``LOUPE_MAX_CANDIDATES``); one page further is a clear 400.
"""

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from collection.index import HNSW_MAX_EF_SEARCH, nearest_caption_images
from collection.versions import serving_version

pytestmark = pytest.mark.django_db


def test_the_deepest_api_page_is_served(collection):
    api = APIClient()
    size = settings.LOUPE_MAX_PAGE_SIZE
    deepest = settings.LOUPE_MAX_CANDIDATES // size
    response = api.get("/api/v1/search", {"q": "a test picture", "page": deepest, "page_size": size})
    assert response.status_code == 200, response.content[:300]
    assert response.json()["results"] == []  # twelve images: nothing that deep, and no error
    further = api.get("/api/v1/search", {"q": "a test picture", "page": deepest + 1, "page_size": size})
    assert further.status_code == 400 and further.json()["error"]["code"] == "invalid_query"


def test_the_deepest_html_page_is_served(client, collection):
    deepest = settings.LOUPE_MAX_CANDIDATES // settings.LOUPE_PAGE_SIZE
    assert client.get("/", {"q": "a test picture", "page": deepest}).status_code == 200
    assert client.get("/", {"q": "a test picture", "page": deepest + 1}).status_code == 400


def test_the_caption_channel_reads_past_the_databases_ef_search_limit(collection):
    """Deeper than pgvector's ef_search maximum, the iterative scan brings every image, once, in order."""
    _, version = serving_version()
    query = collection[0].embeddings.get(encoder_version=version).vector
    rows = nearest_caption_images(version, query, k=HNSW_MAX_EF_SEARCH)
    assert sorted(row.id for row in rows) == sorted(image.pk for image in collection)
    assert [row.score for row in rows] == sorted((row.score for row in rows), reverse=True)

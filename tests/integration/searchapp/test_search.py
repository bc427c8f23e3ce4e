"""The search service against the real embedded PostgreSQL + pgvector."""

import numpy as np
import pytest

from collection.images import read_image
from collection.models import ImageEmbedding
from core.errors import UnknownImage
from searchapp.search import InvalidQuery, NotIndexed, SearchRequest
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def clip_only(settings):
    """These tests pin the CLIP channel's mechanics; the text channel has its own tests."""
    settings.LOUPE_TEXT_CHANNEL = False


def exact_order(service, vector, image_ids=None):
    rows = ImageEmbedding.objects.filter(encoder_version=service.version)
    if image_ids is not None:
        rows = rows.filter(image_id__in=image_ids)
    ids, vectors = zip(*[(r.image_id, np.asarray(r.vector)) for r in rows], strict=True)
    scores = np.stack(vectors) @ vector
    return [ids[i] for i in np.argsort(-scores)], np.sort(scores)[::-1]


def test_text_search_ranks_by_cosine_like_an_exact_scan(service, collection, clip_only):
    response = service.search(SearchRequest(text="a picture of something", page_size=12))
    expected_ids, expected_scores = exact_order(service, service.encoder.encode_query("a picture of something"))
    assert [hit.image.pk for hit in response.hits] == expected_ids
    np.testing.assert_allclose([hit.score for hit in response.hits], expected_scores, atol=1e-5)
    assert [hit.position for hit in response.hits] == list(range(1, 13))
    assert response.kind == "text" and response.encoder.is_demo and not response.has_next


def test_paging_walks_the_same_ranking(service, collection, clip_only):
    full = [h.image.pk for h in service.search(SearchRequest(text="tree", page_size=12)).hits]
    page1 = service.search(SearchRequest(text="tree", page_size=5))
    page3 = service.search(SearchRequest(text="tree", page_size=5, page=3))
    assert [h.image.pk for h in page1.hits] == full[:5] and page1.has_next
    assert [h.image.pk for h in page3.hits] == full[10:] and not page3.has_next
    assert [h.position for h in page3.hits] == [11, 12]


def test_more_like_this_excludes_the_image_itself(service, collection):
    target = collection[3]
    response = service.search(SearchRequest(image_id=target.pk, page_size=20))
    vector = np.asarray(ImageEmbedding.objects.get(image=target, encoder_version=service.version).vector)
    expected, _ = exact_order(service, vector)
    assert target.pk not in [h.image.pk for h in response.hits]
    assert [h.image.pk for h in response.hits] == [i for i in expected if i != target.pk]
    assert response.kind == "similar"


def test_search_by_uploaded_image_finds_the_same_image_first(service, collection):
    response = service.search(SearchRequest(image=read_image(image_bytes(7)), page_size=3))
    assert response.hits[0].image.pk == collection[7].pk
    assert response.hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_tag_filter_returns_only_and_all_matching_images(service, collection, clip_only):
    response = service.search(SearchRequest(text="tag:even photo", page_size=50))
    expected, _ = exact_order(service, service.encoder.encode_query("photo"), [i.pk for i in collection[::2]])
    assert [h.image.pk for h in response.hits] == expected
    assert response.tags == ("even",)
    both = service.search(SearchRequest(text="photo", tags=("even", "s4")))
    assert [h.image.pk for h in both.hits] == [collection[4].pk]


def test_image_to_text_returns_the_nearest_captions(service, collection):
    hits = service.describe(collection[0].pk, k=4)
    assert len(hits) == 4
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    vector = np.asarray(ImageEmbedding.objects.get(image=collection[0], encoder_version=service.version).vector)
    texts = [c.text for img in collection for c in img.captions.all()]
    best = np.argsort(-(service.encoder.encode_texts(texts) @ vector))[:4]
    assert [h.caption.text for h in hits] == [texts[i] for i in best]


def test_fixed_and_dynamic_cuts_shorten_the_list(service, collection, clip_only):
    full = service.search(SearchRequest(text="photo", page_size=12)).hits
    threshold = full[5].score
    cut = service.search(SearchRequest(text="photo", page_size=12, min_score=threshold)).hits
    assert len(cut) == 6 and all(h.score >= threshold for h in cut)
    dynamic = service.search(SearchRequest(text="photo", page_size=12, max_relative_drop=0.999999))
    assert 1 <= len(dynamic.hits) <= 12


@pytest.mark.parametrize(
    "request_kwargs, error, fragment",
    [
        ({"text": "   "}, InvalidQuery, "Type something"),
        ({}, InvalidQuery, "Type something"),
        ({"text": "x" * 600}, InvalidQuery, "limit"),
        ({"text": "tag:"}, InvalidQuery, "empty tag"),
        ({"text": "dog", "page": 0}, InvalidQuery, "page"),
        ({"text": "dog", "page_size": 1000}, InvalidQuery, "page_size"),
        ({"text": "dog", "page": 500, "page_size": 100}, InvalidQuery, "deep"),
        ({"text": "dog", "max_relative_drop": 1.5}, InvalidQuery, "max_drop"),
        ({"image_id": 999999}, UnknownImage, "no image"),
        ({"text": "dog", "image_id": 1}, InvalidQuery, "one at a time"),
    ],
)
def test_bad_requests_are_refused_clearly(service, collection, request_kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        service.search(SearchRequest(**request_kwargs))


def test_an_image_without_a_vector_is_reported_not_indexed(service, collection):
    ImageEmbedding.objects.filter(image=collection[0]).delete()
    with pytest.raises(NotIndexed):
        service.search(SearchRequest(image_id=collection[0].pk))

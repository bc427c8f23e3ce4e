"""The text channel (full-text search and caption vectors) and its fusion with CLIP."""

import pytest

from collection.images import read_image
from collection.ingestion.service import add_image
from collection.text_index import full_text_matches
from searchapp.search import SearchRequest
from tests.conftest import image_bytes

pytestmark = pytest.mark.django_db


def ids(response):
    return ids_of(response.hits)


def ids_of(hits):
    return [hit.image.pk for hit in hits]


def test_full_text_matches_captions_and_tags_with_tags_weighing_more(collection):
    found = full_text_matches("picture s5", k=20)
    assert found[0].id == collection[5].pk  # 's5' is a tag (weight A) and 'picture' is in every caption
    assert {n.id for n in found} == {image.pk for image in collection}
    assert full_text_matches("zebra", k=20) == []
    assert full_text_matches("the of a", k=20) == []  # stop words only: no query, no error


def test_caption_vectors_find_the_image_whose_caption_says_it(service, collection):
    response = service.search(SearchRequest(text="another view number 7", page_size=3))
    assert ids(response)[0] == collection[7].pk
    assert set(response.hits[0].channels) >= {"caption", "fts"} and response.hits[0].matched_text
    assert response.channel_weights == {"clip": 0.0, "fts": 1.0, "caption": 1.0}  # demo CLIP weighs 0


def test_demo_clip_cannot_reorder_text_matches(service, collection, settings):
    """With the demo encoder (weight 0) the order is exactly the text channels' fusion."""
    from collection.fusion import reciprocal_rank_fusion
    from collection.index import nearest_caption_images
    from collection.versions import sentence_version

    query = "caption 9 of a test picture"
    sentence_encoder, text_version = sentence_version()
    text_only = reciprocal_rank_fusion(
        {
            "fts": [n.id for n in full_text_matches(query, k=100)],
            "caption": [
                n.id
                for n in nearest_caption_images(
                    text_version,
                    sentence_encoder.encode_query(query),
                    k=100,
                    min_similarity=settings.LOUPE_CAPTION_MIN_SIMILARITY,
                )
            ],
        },
        {"fts": 1.0, "caption": 1.0},
    )
    served = service.search(SearchRequest(text=query, page_size=12)).hits
    expected = {c.image_id: c.score for c in text_only}
    assert {hit.image.pk: pytest.approx(hit.score) for hit in served} == {i: expected[i] for i in ids_of(served)}
    assert [hit.score for hit in served] == sorted(expected.values(), reverse=True)[:12]
    assert served[0].image.pk == collection[9].pk


def test_a_measured_clip_weight_takes_part_in_the_fusion(service, collection):
    service.version.fusion_weight = 5.0
    response = service.search(SearchRequest(text="caption 9 of a test picture", page_size=12))
    clip_first = service.search(SearchRequest(image=read_image(image_bytes(0)), page_size=1))
    assert response.channel_weights["clip"] == 5.0
    assert all(hit.similarity is not None for hit in response.hits)
    assert clip_first.hits[0].channels == ("clip",)


def test_images_without_text_are_served_by_clip_and_not_penalised(service, collection, settings):
    from collection.embedding import embed_everything_missing

    bare, _ = add_image(read_image(image_bytes(99)))  # no captions, no tags
    embed_everything_missing()
    service.version.fusion_weight = 1.0
    query = "caption 3 of a test picture"
    clip_rank = [n.id for n in _clip_ranking(service, query)]
    response = service.search(SearchRequest(text=query, page_size=13))
    hit = next(h for h in response.hits if h.image.pk == bare.pk)
    assert hit.channels == ("clip",)
    # Judged by CLIP alone: its fused score is its CLIP reciprocal rank, scaled.
    expected = (1 / (settings.LOUPE_RRF_K + clip_rank.index(bare.pk) + 1)) * (settings.LOUPE_RRF_K + 1)
    assert hit.score == pytest.approx(expected)


def _clip_ranking(service, text):
    from collection.index import nearest_images

    return nearest_images(service.version, service.encoder.encode_query(text), k=50)


def test_tag_filter_applies_to_every_channel(service, collection):
    response = service.search(SearchRequest(text="tag:odd another view number 4", page_size=20))
    assert set(ids(response)) == {image.pk for image in collection[1::2]}


def test_fused_paging_is_consistent(service, collection):
    full = ids(service.search(SearchRequest(text="view number", page_size=12)))
    pages = [ids(service.search(SearchRequest(text="view number", page_size=4, page=p))) for p in (1, 2, 3)]
    assert sum(pages, []) == full


def test_common_words_do_not_select_candidates_but_rare_ones_do(collection, settings):
    """'picture' is in every document: above the common-word share it selects nothing on its own."""
    from collection.text_index import refresh_lexeme_stats

    refresh_lexeme_stats()
    settings.LOUPE_FTS_COMMON_MIN_DOCS = 1
    settings.LOUPE_FTS_COMMON_FRACTION = 0.5  # 'picture' (12 of 12 documents) is common, 's5' (1 of 12) is not
    assert [n.id for n in full_text_matches("picture s5", k=20)] == [collection[5].pk]
    # Common words only: all of them must match.
    assert {n.id for n in full_text_matches("test picture", k=20)} == {image.pk for image in collection}
    assert full_text_matches("picture zebra", k=20) == []  # 'zebra' is rare (0 documents) and matches nothing
    settings.LOUPE_FTS_MAX_RANKED = 3
    assert len(full_text_matches("test picture", k=20)) == 3


def test_full_text_matches_say_which_images_have_captions(collection):
    from collection.tags import clean_tags

    tagged_only, _ = add_image(read_image(image_bytes(77)), tags=clean_tags(["picture"]))
    found = {n.id: n for n in full_text_matches("picture", k=20)}
    assert found[tagged_only.pk].has_captions is False and found[tagged_only.pk].has_document is True
    assert found[collection[0].pk].has_captions is True


@pytest.mark.django_db(transaction=True)
def test_parallel_text_channels_give_the_same_results_as_sequential(settings):
    """The channels run in pool threads on their own connections; the answer must not change."""
    from collection.text_channels import shutdown_pool
    from searchapp.search import SearchService
    from tests.conftest import build_collection

    service = SearchService()
    build_collection(service)
    queries = ["caption 9 of a test picture", "another view number 4", "tag:even picture"]
    settings.LOUPE_PARALLEL_CHANNELS = False
    sequential = [service.search(SearchRequest(text=q, page_size=12)) for q in queries]
    settings.LOUPE_PARALLEL_CHANNELS = True
    try:
        parallel = [service.search(SearchRequest(text=q, page_size=12)) for q in queries]
    finally:
        shutdown_pool()  # the pool threads' connections would keep the test database from being dropped
    for one, other in zip(sequential, parallel, strict=True):
        assert [(h.image.pk, h.channels) for h in one.hits] == [(h.image.pk, h.channels) for h in other.hits]
        assert [h.score for h in one.hits] == pytest.approx([h.score for h in other.hits])

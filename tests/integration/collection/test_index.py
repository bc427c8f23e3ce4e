"""pgvector HNSW against an exact scan, on a few thousand vectors, with and without tag filters."""

import numpy as np
import pytest
from django.db import connection

from collection.index import ensure_hnsw_indexes, nearest_images, vector_literal
from collection.models import EncoderVersion, Image, ImageEmbedding

pytestmark = pytest.mark.django_db

N, D, QUERIES = 4000, 64, 60


@pytest.fixture
def vectors_in_db():
    """Clustered unit vectors (like real embeddings, not uniform noise) under their own version."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, D))
    data = centres[rng.integers(0, 40, N)] + 0.6 * rng.normal(size=(N, D))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    version = EncoderVersion.objects.create(name="synthetic", model_ref="synthetic", fingerprint="0", dimension=D)
    images = Image.objects.bulk_create(
        Image(
            sha256=f"{i:064x}",
            file=f"x/{i}.png",
            thumbnail=f"t/{i}.jpg",
            width=1,
            height=1,
            format="png",
            byte_size=1,
            tags=(["rare"] if i % 50 == 0 else []) + (["common"] if i % 3 == 0 else []),
        )
        for i in range(N)
    )
    ImageEmbedding.objects.bulk_create(
        ImageEmbedding(image=image, encoder_version=version, vector=vec)
        for image, vec in zip(images, data, strict=True)
    )
    ensure_hnsw_indexes(version)
    ids = np.array([image.pk for image in images])
    queries = data[rng.choice(N, QUERIES, replace=False)] + 0.1 * rng.normal(size=(QUERIES, D))
    return version, ids, data, queries.astype(np.float32), images


def exact_top(data, ids, query, k, mask=None):
    scores = data @ query
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    order = np.argsort(-scores)[:k]
    return [int(ids[i]) for i in order if np.isfinite(scores[i])]


def recall(version, ids, data, queries, k=10, tags=(), mask=None):
    found = []
    for query in queries:
        truth = exact_top(data, ids, query, k, mask)
        got = [n.id for n in nearest_images(version, query, k=k, tags=tags)]
        found.append(len(set(truth) & set(got)) / len(truth))
    return float(np.mean(found))


def test_hnsw_index_is_used_and_matches_exact_top10(vectors_in_db):
    version, ids, data, queries, _ = vectors_in_db
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN SELECT image_id FROM searchapp_imageembedding WHERE encoder_version_id = %s "
            f"ORDER BY vector::vector({D}) <=> %s::vector({D}) LIMIT 10",
            [version.pk, vector_literal(queries[0])],
        )
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert f"searchapp_imageembedding_hnsw_v{version.pk}" in plan
    assert recall(version, ids, data, queries) >= 0.98


def test_exact_mode_is_exact(vectors_in_db):
    version, ids, data, queries, _ = vectors_in_db
    for query in queries[:5]:
        assert [n.id for n in nearest_images(version, query, k=10, exact=True)] == exact_top(data, ids, query, 10)


def test_selective_tag_filter_keeps_full_recall(vectors_in_db):
    version, ids, data, queries, images = vectors_in_db
    mask = np.array(["rare" in image.tags for image in images])
    assert recall(version, ids, data, queries, tags=("rare",), mask=mask) == 1.0


def test_broad_tag_filter_through_iterative_hnsw_keeps_recall(vectors_in_db, settings):
    settings.LOUPE_EXACT_FILTER_LIMIT = 0  # force the iterative HNSW path
    version, ids, data, queries, images = vectors_in_db
    mask = np.array(["common" in image.tags for image in images])
    results = nearest_images(version, queries[0], k=10, tags=("common",))
    assert len(results) == 10 and all(mask[list(ids).index(n.id)] for n in results)
    assert recall(version, ids, data, queries, tags=("common",), mask=mask) >= 0.95


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_one_round_trip_finds_the_same_and_leaks_no_setting(vectors_in_db, settings):
    """Out of any transaction the knobs and the query go as one message (one implicit transaction)."""
    from django.db import transaction

    version, ids, data, queries, _ = vectors_in_db
    settings.LOUPE_HNSW_EF_SEARCH = 77
    assert not connection.in_atomic_block
    outside = [[n.id for n in nearest_images(version, q, k=10)] for q in queries[:10]]
    with transaction.atomic():
        inside = [[n.id for n in nearest_images(version, q, k=10)] for q in queries[:10]]
    assert outside == inside
    assert recall(version, ids, data, queries[:10]) >= 0.9
    with connection.cursor() as cursor:  # the transaction-local knobs ended with their message
        cursor.execute("SHOW enable_sort")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"  # pgvector's default, not the 77 the searches ran with

"""The daily index recall check: the index's top 10 against an exact scan, stored, exported, alerted on."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from django.db import connection, transaction
from django.test import Client
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from collection.index import ensure_hnsw_indexes, nearest_images
from collection.models import EncoderVersion, Image, ImageEmbedding
from feedback.identity import Viewer
from ranking.index_recall import (
    RecallQuery,
    latest_index_recalls,
    measure_recall,
    record_index_recall,
    stored_image_queries,
)
from ranking.models import IndexRecall
from ranking.monitoring import IndexRecallCollector
from searchapp.search import SearchRequest
from workers.tasks import measure_index_recall

pytestmark = pytest.mark.django_db

DIMENSION = 32
VECTORS = 3000


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def random_index():
    """3,000 random unit vectors under their own version, indexed as every version is (m 16, ef_construction 64)."""
    version = EncoderVersion.objects.create(
        name="random", model_ref="random", fingerprint="f" * 64, dimension=DIMENSION, is_demo=True
    )
    images = Image.objects.bulk_create(
        Image(sha256=f"{i:064x}", file="x", thumbnail="x", width=1, height=1, format="png", byte_size=1)
        for i in range(VECTORS)
    )
    vectors = unit(np.random.default_rng(7).normal(size=(VECTORS, DIMENSION)))
    ImageEmbedding.objects.bulk_create(
        ImageEmbedding(image=image, encoder_version=version, vector=vector)
        for image, vector in zip(images, vectors, strict=True)
    )
    ensure_hnsw_indexes(version)
    return version, np.array([image.pk for image in images]), vectors


def numpy_top(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in ids[np.argsort(-(vectors @ query), kind="stable")[:k]]]


def queries(n: int, seed: int) -> list[RecallQuery]:
    return [RecallQuery(v) for v in unit(np.random.default_rng(seed).normal(size=(n, DIMENSION)))]


def test_measured_recall_equals_an_exact_numpy_comparison(random_index, settings):
    settings.LOUPE_HNSW_EF_SEARCH = 10  # low enough that the index misses some of the true top 10
    version, ids, vectors = random_index
    sample = queries(40, seed=1)

    measured = measure_recall(version, sample, k=10)

    expected = []
    for query in sample:
        served = {n.id for n in nearest_images(version, query.vector, k=10)}
        expected.append(len(served & set(numpy_top(ids, vectors, query.vector, 10))) / 10)
    assert measured.recalls == pytest.approx(expected)
    assert measured.recall == pytest.approx(float(np.mean(expected)))
    assert measured.recall < 1.0 and measured.ef_search == 10


def test_a_smaller_ef_search_serves_lower_recall(random_index, settings):
    version, _, _ = random_index
    sample = queries(40, seed=2)
    settings.LOUPE_HNSW_EF_SEARCH = 10
    low = measure_recall(version, sample).recall
    settings.LOUPE_HNSW_EF_SEARCH = 400
    high = measure_recall(version, sample).recall
    assert low < high and high >= 0.95


def test_an_exact_scan_leaves_the_callers_transaction_as_it_was(random_index):
    version, _, vectors = random_index
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_indexscan'), current_setting('hnsw.ef_search')")
        before = cursor.fetchone()
        nearest_images(version, vectors[0], k=10, exact=True)
        nearest_images(version, vectors[0], k=10)
        cursor.execute("SELECT current_setting('enable_indexscan'), current_setting('hnsw.ef_search')")
        assert cursor.fetchone() == before


def test_stored_vectors_are_more_like_this_queries_that_leave_their_own_image_out(random_index, settings):
    settings.LOUPE_HNSW_EF_SEARCH = 10
    version, ids, vectors = random_index
    sample = stored_image_queries(version, 30)
    assert len({q.exclude_image_id for q in sample}) == 30
    others = {}
    for query in sample:
        own = int(np.flatnonzero(ids == query.exclude_image_id)[0])
        assert np.allclose(query.vector, vectors[own])
        keep = ids != query.exclude_image_id
        others[query.exclude_image_id] = numpy_top(ids[keep], vectors[keep], query.vector, 10)

    measured = measure_recall(version, sample)

    expected = [
        len(
            {n.id for n in nearest_images(version, q.vector, k=10, exclude_ids=[q.exclude_image_id])}
            & set(others[q.exclude_image_id])
        )
        / 10
        for q in sample
    ]
    assert measured.recalls == pytest.approx(expected)
    row = record_index_recall(version, sample=30)
    assert (row.served_queries, row.stored_queries, row.ef_search, row.k) == (0, 30, 10, 10)


def test_the_daily_task_replays_served_queries_stores_exports_and_alerts(service, collection, settings, caplog):
    viewer = Viewer(user_key="u-recall")
    for text in ("caption 3 of a test picture", "another view number 5", "caption 3 of a test picture"):
        service.search(SearchRequest(text=text), viewer)
    settings.LOUPE_MIN_INDEX_RECALL = 1.01  # nothing reaches it: the alert must fire
    settings.LOUPE_INDEX_RECALL_SAMPLE = 5

    with caplog.at_level(logging.ERROR, logger="ranking.index_recall"):
        result = measure_index_recall()

    row = IndexRecall.objects.get(encoder_version=service.version)
    assert result == {str(service.version.pk): 1.0}  # 12 images: the index finds every true neighbour
    assert (row.served_queries, row.stored_queries) == (2, 3)  # two distinct queries, then stored vectors
    assert row.below_threshold and "below LOUPE_MIN_INDEX_RECALL" in caplog.text
    assert latest_index_recalls() == [row]

    registry = CollectorRegistry()
    registry.register(IndexRecallCollector())
    exported = generate_latest(registry).decode()
    assert f'loupe_index_recall{{encoder_version="{service.version.pk}",k="10"}} 1.0' in exported
    assert "loupe_index_recall_threshold 1.01" in exported

    ready = Client().get("/readyz", HTTP_HOST="localhost").json()
    assert ready["status"] == "degraded" and ready["checks"]["index_recall"]["ok"] is False
    settings.LOUPE_MIN_INDEX_RECALL = 0.9
    IndexRecall.objects.update(threshold=0.9)
    assert Client().get("/readyz", HTTP_HOST="localhost").json()["checks"]["index_recall"]["ok"] is True

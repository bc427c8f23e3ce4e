"""The recall the HNSW index actually serves, measured daily per encoder version against an exact scan.

An approximate index trades recall for speed, and the trade moves as the collection grows: at 1M
vectors the served ``hnsw.ef_search`` 100 found 0.62 of the true top 10 (docs/performance.md), with
nothing in production to say so. The worker replays a sample of the day's served text queries
(distinct normalised queries logged with the version, encoded again by that version's encoder) and
tops the sample up with stored image vectors as "more like this" queries (the image itself left out,
as served), asks the index for the top ``k`` at the served settings and an exact scan for the true top
``k``, and stores the mean recall@k (``IndexRecall``). Below ``LOUPE_MIN_INDEX_RECALL`` it logs an
error, ``/readyz`` reports the check failing (degraded, not unready: a worse index still serves) and
the Prometheus gauge ``loupe_index_recall`` shows it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef
from django.utils import timezone

from collection.encoders import Encoder
from collection.index import nearest_images
from collection.models import EncoderVersion, ImageEmbedding
from collection.versions import service_encoder_choice, serving_version
from feedback.models import SearchEvent
from ranking.metrics import recall_at_k
from ranking.models import IndexRecall

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecallQuery:
    vector: np.ndarray
    exclude_image_id: int | None = None  # a stored image's own vector: "more like this" leaves the image out


@dataclass(frozen=True)
class RecallMeasurement:
    k: int
    ef_search: int
    recalls: tuple[float, ...]  # one per query, in the sample's order

    @property
    def recall(self) -> float:
        return float(np.mean(self.recalls))


def measure_recall(version: EncoderVersion, queries: Sequence[RecallQuery], k: int = 10) -> RecallMeasurement:
    """recall@k of the index's answers (at the served ``LOUPE_HNSW_EF_SEARCH``) against exact scans.

    Queries whose exact answer is empty (an empty version) are left out. The exact scan's planner settings
    are transaction-local and undone after it (``collection.index``), so they never reach the index query.
    """
    recalls = []
    for query in queries:
        exclude = [query.exclude_image_id] if query.exclude_image_id is not None else []
        exact = [n.id for n in nearest_images(version, query.vector, k=k, exclude_ids=exclude, exact=True)]
        if not exact:
            continue
        served = [n.id for n in nearest_images(version, query.vector, k=k, exclude_ids=exclude)]
        recalls.append(recall_at_k(served, exact, k))
    return RecallMeasurement(k=k, ef_search=max(int(settings.LOUPE_HNSW_EF_SEARCH), k), recalls=tuple(recalls))


def served_query_texts(version: EncoderVersion, n: int, since) -> list[str]:
    """Up to ``n`` distinct normalised text queries served with ``version`` since ``since``, sampled at random."""
    served = (
        SearchEvent.objects.filter(encoder_version=version, kind="text", created_at__gte=since)
        .exclude(normalised_query="")
        .values_list("normalised_query", flat=True)
        .distinct()
    )
    sql, params = served.query.sql_with_params()
    # Sampled outside the DISTINCT: ORDER BY random() inside it would make every row distinct.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT q.normalised_query FROM ({sql}) q ORDER BY random() LIMIT %s", [*params, int(n)])
        return [row[0] for row in cursor.fetchall()]


def stored_image_queries(version: EncoderVersion, n: int) -> list[RecallQuery]:
    """Up to ``n`` stored image vectors of ``version``, sampled at random, each excluding its own image."""
    ids = list(ImageEmbedding.objects.filter(encoder_version=version).order_by("?").values_list("pk", flat=True)[:n])
    rows = ImageEmbedding.objects.filter(pk__in=ids).values_list("image_id", "vector")
    return [RecallQuery(np.asarray(vector, dtype=np.float32), image_id) for image_id, vector in rows]


def encoder_of(version: EncoderVersion) -> Encoder | None:
    choice, serving = serving_version()
    if serving.pk == version.pk:
        return choice.encoder
    loaded = service_encoder_choice(version.pk)
    return loaded[0].encoder if loaded is not None else None


def record_index_recall(version: EncoderVersion, *, sample: int | None = None, k: int = 10) -> IndexRecall:
    """Measure one version's served recall on today's sample, store it, and alert when it is too low."""
    started = time.perf_counter()
    sample = int(settings.LOUPE_INDEX_RECALL_SAMPLE if sample is None else sample)
    encoder = encoder_of(version)
    texts = served_query_texts(version, sample, timezone.now() - timedelta(days=1)) if encoder is not None else []
    queries = [RecallQuery(encoder.encode_query(text)) for text in texts]
    queries += stored_image_queries(version, sample - len(queries))
    measured = measure_recall(version, queries, k=k)
    if not measured.recalls:
        raise ValueError(f"Encoder version {version.pk} has no vectors to measure recall on.")
    threshold = float(settings.LOUPE_MIN_INDEX_RECALL)
    row = IndexRecall.objects.create(
        encoder_version=version,
        k=k,
        ef_search=measured.ef_search,
        recall=measured.recall,
        served_queries=len(texts),
        stored_queries=len(measured.recalls) - len(texts),
        threshold=threshold,
        seconds=time.perf_counter() - started,
    )
    if row.below_threshold:
        logger.error(
            "Index recall@%s of encoder version %s is %.3f, below LOUPE_MIN_INDEX_RECALL %.3f (ef_search %s, %s "
            "queries): raise LOUPE_HNSW_EF_SEARCH or rebuild the index with a larger m (docs/deploy.md).",
            k,
            version.pk,
            row.recall,
            threshold,
            row.ef_search,
            len(measured.recalls),
        )
    return row


def versions_to_watch() -> list[EncoderVersion]:
    """The image-text versions that can serve (production's and any an experiment arm may name)."""
    has_vectors = Exists(ImageEmbedding.objects.filter(encoder_version=OuterRef("pk")))
    ready = EncoderVersion.objects.filter(kind=EncoderVersion.Kind.IMAGE_TEXT, status=EncoderVersion.Status.READY)
    return list(ready.filter(has_vectors).order_by("pk"))


def record_all_index_recalls() -> list[IndexRecall]:
    return [record_index_recall(version) for version in versions_to_watch()]


def latest_index_recalls() -> list[IndexRecall]:
    """The newest measurement of each version that can serve."""
    watched = [v.pk for v in versions_to_watch()]
    newest = IndexRecall.objects.filter(encoder_version_id__in=watched).order_by("encoder_version_id", "-measured_at")
    return list(newest.distinct("encoder_version_id"))

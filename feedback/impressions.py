"""Log each served result list (a ``SearchEvent`` and its ``Impression`` rows).

Logging must never cost a user their results: a failed write is logged, counted and the search
is answered anyway (without an event id, so the page simply does not send clicks for it).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter

from django.db import DatabaseError, transaction

from feedback.identity import Viewer
from feedback.models import Impression, SearchEvent

logger = logging.getLogger(__name__)

# Features logged with each impression until the ranking feature registry takes over (issue 4).
SERVE_FEATURES = ("score", "clip_similarity", "found_by_clip", "found_by_fts", "found_by_caption")

_counts: Counter = Counter()
_counts_lock = threading.Lock()


def count(name: str) -> None:
    with _counts_lock:
        _counts[name] += 1


def counters() -> dict[str, int]:
    """Process-local counts of logging outcomes (``events``, ``failures``)."""
    with _counts_lock:
        return dict(_counts)


def query_key(text: str) -> str:
    """The form in which repeated queries are counted together: case and white space folded."""
    return " ".join(text.lower().split())[:500]


def hit_features(hit) -> list[float]:
    return [
        float(hit.score),
        float(hit.similarity) if hit.similarity is not None else 0.0,
        float("clip" in hit.channels),
        float("fts" in hit.channels),
        float("caption" in hit.channels),
    ]


def record_search(response, viewer: Viewer, *, query_image_id: int | None = None) -> uuid.UUID | None:
    """Store the event and the list exactly as served; return the event id, or None if it could not be stored."""
    event_id = uuid.uuid4()
    try:
        with transaction.atomic():
            SearchEvent.objects.create(
                id=event_id,
                user_key=viewer.user_key,
                session=viewer.session,
                surface=viewer.surface,
                partner_id=viewer.partner_id,
                kind=response.kind,
                query_text=response.query_text,
                normalised_query=query_key(response.query_text),
                query_image_id=query_image_id,
                tags=list(response.tags),
                page=response.page,
                page_size=response.page_size,
                arm=getattr(response, "arm", ""),
                ranker=getattr(response, "ranker", "embedding"),
                encoder_version_id=response.encoder.version_id,
                feature_names=list(SERVE_FEATURES),
                result_count=len(response.hits),
                latency_ms=response.timings_ms.get("total"),
            )
            Impression.objects.bulk_create(
                Impression(
                    event_id=event_id,
                    image_id=hit.image.pk,
                    position=hit.position,
                    score=float(hit.score),
                    features=hit_features(hit),
                )
                for hit in response.hits
            )
    except DatabaseError:
        count("failures")
        logger.exception("Could not log search event for %s; the search is answered without it.", viewer.user_key)
        return None
    count("events")
    return event_id

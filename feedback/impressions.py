"""Log each served result list (a ``SearchEvent`` and its ``Impression`` rows).

Logging must never cost a user their results: a failed write is logged, counted and the search
is answered anyway (without an event id, so the page simply does not send clicks for it).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction

from core.ids import uuid7
from core.metrics import SEARCH_LOGS
from feedback.identity import Viewer
from feedback.log_writer import writer

logger = logging.getLogger(__name__)

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


# One statement, so one round trip: the event, its impressions, and an asynchronous commit. The list
# we showed is our own log, not something a user gave us, so its commit does not wait for the WAL
# flush (a crash can lose the last fraction of a second of impressions, never corrupt them); clicks
# and ratings keep synchronous commits. Measured: 5 round trips and a flush were ~7 ms of a search.
RECORD_SQL = """
WITH commit_mode AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true) AS unused),
event AS (
    INSERT INTO feedback_searchevent (id, user_key, session, network, surface, partner_id, kind, query_text,
        normalised_query, query_image_id, tags, page, page_size, experiment_id, arm, ranker, encoder_version_id,
        feature_names, swap_position, swap_with, explore_position, explore_from, result_count, latency_ms, created_at)
    SELECT %(id)s, %(user_key)s, %(session)s, %(network)s, %(surface)s, %(partner_id)s, %(kind)s, %(query_text)s,
        %(normalised_query)s, %(query_image_id)s, %(tags)s::varchar[], %(page)s, %(page_size)s, %(experiment_id)s,
        %(arm)s, %(ranker)s, %(encoder_version_id)s, %(feature_names)s::varchar[], %(swap_position)s,
        %(swap_with)s, %(explore_position)s, %(explore_from)s, %(result_count)s, %(latency_ms)s, now()
    FROM commit_mode
    RETURNING id
)
INSERT INTO feedback_impression (event_id, image_id, position, score, features, team)
SELECT event.id, shown.image_id, shown.position, shown.score, shown.features, shown.team
FROM event, jsonb_to_recordset(%(shown)s::jsonb)
    AS shown(image_id bigint, position int, score float8, features float8[], team varchar)
"""


@dataclass(frozen=True)
class ShownResult:
    """One result as it was shown: its 1-based position, ranking score and serve-time feature row."""

    image_id: int
    position: int
    score: float
    features: tuple[float, ...] = ()
    team: str = ""  # interleaving: the arm whose ranker placed it


@dataclass(frozen=True)
class ServedList:
    """What the search log keeps of one answered search (the pipeline builds it from its response)."""

    kind: str  # "text", "image" or "similar"
    query_text: str
    tags: Sequence[str]
    page: int
    page_size: int
    encoder_version_id: int
    feature_names: Sequence[str]  # the names of each ShownResult.features column, in order
    shown: Sequence[ShownResult]
    latency_ms: float | None = None
    query_image_id: int | None = None
    ranker: str = "embedding"
    experiment_id: int | None = None
    arm: str = ""
    swap_position: int | None = None
    swap_with: int | None = None  # the swapped pair's lower position (None: swap_position + 1)
    explore_position: int | None = None
    explore_from: int | None = None


def record_search(served: ServedList, viewer: Viewer, *, defer: bool = False) -> uuid.UUID | None:
    """Store the event and the list exactly as served; return the event id, or None if it could not be stored.

    With ``defer`` the write is queued for this process's log writer (``feedback.log_writer``) and the id
    comes back at once; a write that fails later is counted and logged the same way.
    """
    event_id, params = _log_params(served, viewer)
    if defer and not connection.in_atomic_block:  # inside a transaction the event must be in it
        writer(write_search_log).submit(event_id, params)
        return event_id
    return event_id if write_search_log(params) else None


def write_search_log(params: dict) -> bool:
    """Run the log statement; False (logged and counted) if the database refused it."""
    try:
        # Inside a caller's transaction a savepoint keeps a failed write from spoiling it.
        with transaction.atomic() if connection.in_atomic_block else nullcontext(), connection.cursor() as cursor:
            cursor.execute(RECORD_SQL, params)
    except DatabaseError:
        count("failures")
        SEARCH_LOGS.labels("failed").inc()
        logger.exception("Could not log search event for %s; the search is answered without it.", params["user_key"])
        return False
    count("events")
    SEARCH_LOGS.labels("stored").inc()
    return True


def _log_params(served: ServedList, viewer: Viewer) -> tuple[uuid.UUID, dict]:
    event_id = uuid7()
    shown = [
        {
            "image_id": r.image_id,
            "position": r.position,
            "score": float(r.score),
            "features": list(r.features),
            "team": r.team,
        }
        for r in served.shown
    ]
    params = {
        "id": event_id,
        "user_key": viewer.user_key,
        "session": viewer.session,
        "network": viewer.network,
        "surface": viewer.surface,
        "partner_id": viewer.partner_id,
        "kind": served.kind,
        "query_text": served.query_text,
        "normalised_query": query_key(served.query_text),
        "query_image_id": served.query_image_id,
        "tags": list(served.tags),
        "page": served.page,
        "page_size": served.page_size,
        "experiment_id": served.experiment_id,
        "arm": served.arm,
        "ranker": served.ranker,
        "encoder_version_id": served.encoder_version_id,
        "feature_names": list(served.feature_names),
        "swap_position": served.swap_position,
        "swap_with": served.swap_with,
        "explore_position": served.explore_position,
        "explore_from": served.explore_from,
        "result_count": len(shown),
        "latency_ms": served.latency_ms,
        "shown": json.dumps(shown),
    }
    return event_id, params

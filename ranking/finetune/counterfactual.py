"""The fine-tune gate's held-out figure: clicks each version would get on the test window's logged searches.

Recall of the chosen images favours the version that logged them: a user can only choose what the
serving version showed (issue 17, finding 2: the serving random encoder scored 0.143 on its own test
pairs, an equally uninformed rotation of it 0.000-0.012). So the gate compares the two versions
counterfactually, on the candidates both are judged on: each test search's logged list down to
``depth``, re-ranked by each version among themselves. Under the position-based click model
(P(click) = examination(position) x attractiveness), a click at logged position p on an item that a
version puts at r is worth examination(r) / examination(p) expected clicks for that version: the
inverse-propensity estimator of a re-ranking of logged items (Li, Kim & Zitouni, "Offline Evaluation
of Ranking Policies with Click Models", KDD 2018; Joachims, Swaminathan & Schnabel, WSDM 2017). Both
versions are scored on the same items with the same weights, so whichever served gets no head start;
a version is not credited for images the logger never showed (the estimate is conservative there).

Only positions whose examination propensity the product knows are used: by default the positions
the swap slice measured (``PropensityCurve.estimated_positions``); with none measured, the whole
logged list under the prior (the estimate is then only as right as the prior: the run records which).
The ratio is clipped at ``clip`` (Bottou et al., JMLR 2013: capping trades a little bias for a
bounded variance). Short clicks are examinations, not choices, and earn nothing, as in ``pairs``.
The run records the estimator, the positions, the propensity source and the paired lower bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import numpy as np
from django.db import connection

from collection.takedown import kept_image_sql
from feedback.erasure import not_erased_sql
from ranking.finetune.pairs import CLICK_TABLE, EVENT_TABLE, IMPRESSION_TABLE
from ranking.propensity import PropensityCurve

ESTIMATOR = "clipped IPS of clicks per search, logged lists re-ranked by each version (position-based model)"
Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class LoggedSearch:
    """One logged text search: the images in shown order, their positions, and which were chosen."""

    query: str
    images: np.ndarray  # image ids, by logged position
    positions: np.ndarray  # 1-based logged positions
    chosen: np.ndarray  # bool: clicked and not a short click


@dataclass(frozen=True)
class GateEstimate:
    estimator: str
    before: float  # estimated clicks per search for the starting weights
    after: float  # for the candidate weights
    difference: float
    lower_bound: (
        float | None
    )  # None under two searches; one-sided 95% bound of the paired difference (normal approximation over searches)
    searches: int
    chosen_clicks: int  # clicks inside the depth that carry credit
    depth: int
    propensity: str  # "swap slice" or "prior"
    clip: float

    def as_dict(self) -> dict:
        return asdict(self)


def logged_searches(since: datetime | None, until: datetime, short_click_ms: int) -> list[LoggedSearch]:
    """The first pages of the text searches made in [since, until) with their chosen images, oldest first."""
    shown_sql = f"""
        SELECT e.id, e.normalised_query, i.image_id, i.position
        FROM {IMPRESSION_TABLE} i JOIN {EVENT_TABLE} e ON e.id = i.event_id
        WHERE e.kind = 'text' AND e.normalised_query <> '' AND e.page = 1 AND e.created_at < %s
              AND {not_erased_sql("e")} AND {kept_image_sql("i.image_id")}
              AND (%s::timestamptz IS NULL OR e.created_at >= %s)
        ORDER BY e.created_at, e.id, i.position
    """
    chosen_sql = f"""
        SELECT c.event_id, c.image_id FROM {CLICK_TABLE} c JOIN {EVENT_TABLE} e ON e.id = c.event_id
        WHERE e.kind = 'text' AND e.page = 1 AND e.created_at < %s AND (%s::timestamptz IS NULL OR e.created_at >= %s)
              AND (c.dwell_ms IS NULL OR c.dwell_ms >= %s)
    """
    with connection.cursor() as cursor:
        cursor.execute(chosen_sql, [until, since, since, short_click_ms])
        chosen: dict = defaultdict(set)
        for event_id, image_id in cursor.fetchall():
            chosen[event_id].add(image_id)
        cursor.execute(shown_sql, [until, since, since])
        rows: dict = {}
        for event_id, query, image_id, position in cursor.fetchall():
            rows.setdefault(event_id, (query, []))[1].append((image_id, position))
    return [
        LoggedSearch(
            query,
            np.asarray([i for i, _ in shown], dtype=np.int64),
            np.asarray([p for _, p in shown], dtype=np.int64),
            np.asarray([i in chosen[event_id] for i, _ in shown], dtype=bool),
        )
        for event_id, (query, shown) in rows.items()
    ]


def gate_depth(curve: PropensityCurve, depth: int) -> tuple[int, str]:
    """How deep the estimate reads, and where its propensities come from (``depth`` > 0 overrides)."""
    if depth > 0:
        return depth, "swap slice" if curve.estimated_positions else "prior"
    measured = set(curve.estimated_positions)
    known = 1
    while known in measured:  # ratio k measures position k + 1 against k: known down to the first gap
        known += 1
    if known > 1:
        return known, "swap slice"
    return len(curve.values), "prior"


def clicks_per_search(
    searches: list[LoggedSearch],
    scores: Callable[[LoggedSearch], np.ndarray],
    curve: PropensityCurve,
    depth: int,
    clip: float,
) -> np.ndarray:
    """Per search, the estimated clicks of the version whose scores of the logged images are ``scores``."""
    values = np.zeros(len(searches))
    for n, search in enumerate(searches):
        inside = search.positions <= depth
        if not search.chosen[inside].any():
            continue
        order = np.argsort(-scores(search)[inside], kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        logged = search.positions[inside]
        for r, p in zip(rank[search.chosen[inside]], logged[search.chosen[inside]], strict=True):
            values[n] += min(curve.at(int(r)) / curve.at(int(p)), clip)
    return values


def compare(
    searches: list[LoggedSearch],
    before: Callable[[LoggedSearch], np.ndarray],
    after: Callable[[LoggedSearch], np.ndarray],
    curve: PropensityCurve,
    depth: int = 0,
    clip: float = 10.0,
) -> GateEstimate:
    """Both versions' estimated clicks per search on the same logged searches, and the paired difference."""
    depth, source = gate_depth(curve, depth)
    first = clicks_per_search(searches, before, curve, depth, clip)
    second = clicks_per_search(searches, after, curve, depth, clip)
    difference = second - first
    n = len(searches)
    mean = float(difference.mean()) if n else 0.0
    lower = mean - Z_ONE_SIDED_95 * float(difference.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return GateEstimate(
        ESTIMATOR,
        float(first.mean()) if n else 0.0,
        float(second.mean()) if n else 0.0,
        mean,
        lower,
        n,
        int(sum(int(s.chosen[s.positions <= depth].sum()) for s in searches)),
        depth,
        source,
        clip,
    )

"""The fine-tune gate's held-out figure: clicks each version would get on the test window's logged searches.

Recall of the chosen images favours the version that logged them: a user can only choose what the
serving version showed (issue 17, finding 2: the serving random encoder scored 0.143 on its own test
pairs, an equally uninformed rotation of it 0.000-0.012). So the gate compares the two versions
counterfactually. Under the position-based click model (P(click) = examination(position) x
attractiveness), a click at logged position p on an image that a version ranks r-th in the collection is
worth examination(r) / examination(p) expected clicks for that version: the inverse-propensity
estimator (Li, Kim & Zitouni, "Offline Evaluation of Ranking Policies with Click Models", KDD 2018;
Joachims, Swaminathan & Schnabel, WSDM 2017).

Which images carry credit decides whom the figure favours. Re-ranking the logger's list among itself
(what this module did until the h4 audit) scores "how well each version orders the logger's page": the
logger is judged on its own set, the other version on a set it did not choose, and the audit's toy
(/tmp/audit-h4/gate_bias.py) measured B - A = +0.60 when A logged and +0.00 when B logged, truth +1.78.
Now an image carries credit only if **both** versions rank it within ``depth`` of the whole collection
**and** the logger showed it within ``depth``: the credited set is the same whichever version logged
(when the logger's list is one of the two versions' top ``depth``), and each version is credited
examination(its own collection rank) x attractiveness on it, unbiased. What it misses, stated plainly:
images only one version brings into the top ``depth`` earn nothing for either, so a candidate that
gains by bringing new images up is not credited for that (the estimate is conservative there), and a
logger whose list is neither version's order (the ranker re-orders) narrows the set further.

Only positions whose examination propensity the product knows are used: by default position 1 (the
reference, examined by definition) down to the first gap in the positions the swap slice measured
(``PropensityCurve.estimated_positions``, which counts from 2); with none measured, the whole list
under the prior (the estimate is then only as right as the prior: the run records which). The ratio is
clipped at ``clip`` (Bottou et al., JMLR 2013). Short clicks are examinations, not choices, and earn
nothing, as in ``pairs``.

A click on a (query, image) pair the fine-tune trained on rewards remembering it (audit finding 3), so
the estimate is split into clicks on pairs seen in training and on new pairs, and into searches whose
query was in training (repeat) and those whose query was not (new); the gate reads the new pairs
(``GATES_ON``); every part is recorded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np
from django.db import connection

from collection.takedown import kept_image_sql
from feedback.erasure import not_erased_sql
from ranking.finetune.pairs import CLICK_TABLE, EVENT_TABLE, IMPRESSION_TABLE
from ranking.propensity import PropensityCurve

ESTIMATOR = (
    "clipped IPS of clicks per search on images both versions rank within the depth and the logger showed there"
    " (position-based model)"
)
GATES_ON = "new pairs"  # clicks on (query, image) pairs the training window did not hold
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
    gates_on: str = GATES_ON  # which part the top-level figures are
    # every part's figures: all clicks, seen / new pairs, repeat / new queries
    parts: dict[str, dict] = field(default_factory=dict)

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
    """How deep the estimate reads, and where its propensities come from (``depth`` > 0 overrides).

    ``estimated_positions`` holds the positions 2, 3, ... whose ratio to the one above was measured
    (``propensity_from_swaps``); position 1 is the reference, examined by definition. So the curve is
    known from 1 down to the position before the first gap.
    """
    if depth > 0:
        return depth, "swap slice" if curve.estimated_positions else "prior"
    measured = set(curve.estimated_positions)
    known = 1
    while known + 1 in measured:
        known += 1
    if known > 1:
        return known, "swap slice"
    return len(curve.values), "prior"


Ranks = Callable[[LoggedSearch], np.ndarray]  # a version's 1-based collection rank of each logged image


def credited(search: LoggedSearch, first: np.ndarray, second: np.ndarray, depth: int) -> np.ndarray:
    """The logged images that carry credit: chosen, shown within the depth, and ranked within it by both."""
    return search.chosen & (search.positions <= depth) & (first <= depth) & (second <= depth)


def _credits(
    searches: list[LoggedSearch],
    ranks: list[tuple[np.ndarray, np.ndarray]],
    curve: PropensityCurve,
    depth: int,
    clip: float,
    counts: Callable[[str, int], bool] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per search, each version's estimated clicks on the credited images ``counts`` keeps; and those clicks."""
    values = np.zeros((2, len(searches)))
    clicks = 0
    for n, (search, (first, second)) in enumerate(zip(searches, ranks, strict=True)):
        for k in np.flatnonzero(credited(search, first, second, depth)):
            if counts is not None and not counts(search.query, int(search.images[k])):
                continue
            clicks += 1
            logged = curve.at(int(search.positions[k]))
            for v, rank in enumerate((first, second)):
                values[v, n] += min(curve.at(int(rank[k])) / logged, clip)
    return values[0], values[1], clicks


def clicks_per_search(
    searches: list[LoggedSearch], ranks: Ranks, other: Ranks, curve: PropensityCurve, depth: int, clip: float
) -> np.ndarray:
    """Per search, the estimated clicks of the version whose collection ranks are ``ranks``; ``other`` is the
    version it is compared with (the credited images are those both rank within the depth)."""
    return _credits(searches, [(ranks(s), other(s)) for s in searches], curve, depth, clip, None)[0]


def _part(first: np.ndarray, second: np.ndarray, clicks: int) -> dict:
    difference = second - first
    n = len(first)
    lower = float(difference.mean() - Z_ONE_SIDED_95 * difference.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return {
        "before": float(first.mean()) if n else 0.0,
        "after": float(second.mean()) if n else 0.0,
        "difference": float(difference.mean()) if n else 0.0,
        "lower_bound": lower,
        "searches": n,
        "chosen_clicks": clicks,
    }


def compare(
    searches: list[LoggedSearch],
    before: Ranks,
    after: Ranks,
    curve: PropensityCurve,
    depth: int = 0,
    clip: float = 10.0,
    trained_pairs: set[tuple[str, int]] | frozenset = frozenset(),
    trained_queries: set[str] | frozenset = frozenset(),
) -> GateEstimate:
    """Both versions' estimated clicks per search on the same logged searches, the paired difference, and its
    parts: clicks on pairs ``trained_pairs`` holds or not; searches whose query ``trained_queries`` holds or not.
    The top-level figures are the new pairs' (``GATES_ON``)."""
    depth, source = gate_depth(curve, depth)
    ranks = [(before(s), after(s)) for s in searches]
    keeps = {
        "all": None,
        "seen pairs": lambda q, i: (q, i) in trained_pairs,
        "new pairs": lambda q, i: (q, i) not in trained_pairs,
    }
    parts = {}
    for name, counts in keeps.items():
        first, second, clicks = _credits(searches, ranks, curve, depth, clip, counts)
        parts[name] = _part(first, second, clicks)
    repeat = [s.query in trained_queries for s in searches]
    for name, wanted in (("repeat queries", True), ("new queries", False)):
        kept = [n for n, r in enumerate(repeat) if r == wanted]
        first, second, clicks = _credits(
            [searches[n] for n in kept], [ranks[n] for n in kept], curve, depth, clip, None
        )
        parts[name] = _part(first, second, clicks)
    top = parts[GATES_ON]
    return GateEstimate(
        ESTIMATOR,
        top["before"],
        top["after"],
        top["difference"],
        top["lower_bound"],
        top["searches"],
        top["chosen_clicks"],
        depth,
        source,
        clip,
        GATES_ON,
        parts,
    )


def collection_ranks(scores: np.ndarray, row: dict[int, int], images: np.ndarray) -> np.ndarray:
    """1-based rank of each of ``images`` among every collection image by ``scores`` (one per row; ties: the
    better rank, so an image is never pushed out of the depth by equal scores)."""
    mine = scores[[row[int(i)] for i in images]]
    ordered = np.sort(scores)
    return len(scores) - np.searchsorted(ordered, mine, side="right") + 1

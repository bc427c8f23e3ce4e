"""Build learning-to-rank arrays from the feedback logs (the only part of training that reads the database).

One group per logged search whose impressions carry the current feature list: features exactly as
logged at serve time, label 1 for a click, 2 for a good rating (utility >= 0.75), 0 for a bad one
(even if clicked: the user said so), and inverse-propensity weights for the labelled rows, each times its
search's trust (``feedback.trust``: a click counts once per impression and within the identity's daily
cap; new identities and bursts of them from one network weigh less). Groups
without any positive label carry no preference and are left out. Searches are split by time into
three windows, oldest first: training, early stopping (picks the boosting round), and the gate
(decides promotion). The gate's window is never read by training or early stopping: a window that
chose the round flatters the model it chose, and marginal candidates would be promoted on that
flattery (issue 17; before, one "validation" window did both jobs).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.conf import settings
from django.db.models import F, Q

from collection.models import EncoderVersion
from collection.takedown import kept_images
from feedback.erasure import exclude_erased
from feedback.layout import Layout
from feedback.models import Click, Impression, Rating, SearchEvent
from feedback.trust import counted_clicks, search_trust
from ranking.features import NAMES, SHARED_NAMES, taste_rows
from ranking.grid_propensity import GridPropensity
from ranking.ltr import RankingData, inverse_propensity, ipw_weights
from ranking.personal import Personal
from ranking.propensity import PropensityCurve, SwapCounts, power_law, propensity_from_swaps

GOOD_RATING, BAD_RATING = 0.75, 0.25
EARLY_STOPPING_SHARE, GATE_SHARE = 0.15, 0.2  # of the labelled searches, the most recent ones last


@dataclass
class LoggedSearches:
    data: RankingData
    positions: np.ndarray
    first_stage_rank: np.ndarray  # the logged order's rank, to score "no reranker" on the same rows
    started: datetime | None
    ended: datetime | None
    searched_at: list[datetime] = field(default_factory=list)  # one per group, oldest first
    identities: list[str] = field(default_factory=list)  # one per group: who searched (the gate's concentration test)
    networks: list[str] = field(default_factory=list)  # one per group: that identity's arrival network ("" unknown)


def load_searches(
    since: datetime | None, until: datetime, propensity: PropensityCurve, grid: GridPropensity | None = None
) -> LoggedSearches:
    """The labelled searches logged in [since, until), oldest first.

    A click's propensity is the list curve's at its position, or, with ``grid`` and a layout reported for its
    search, the grid estimate's at its (row, column) in that layout (``ranking.grid_propensity``)."""
    # An erased user's searches are fenced off from the moment of the request (feedback.erasure).
    logged_with = Q(feature_names=NAMES)
    if settings.LOUPE_PERSONALISE:  # searches from before the per-user columns get them computed as of their time
        logged_with |= Q(feature_names=SHARED_NAMES)
    events = exclude_erased(SearchEvent.objects.filter(logged_with, created_at__lt=until, kind="text"))
    if since is not None:
        events = events.filter(created_at__gte=since)
    clicked_events = events.filter(clicks__isnull=False) | events.filter(ratings__isnull=False)
    event_times = dict(clicked_events.distinct().values_list("pk", "created_at"))
    if not event_times:
        empty = RankingData(np.zeros((0, len(NAMES))), np.zeros(0), np.zeros(0, dtype=np.int64), feature_names=NAMES)
        return LoggedSearches(empty, np.zeros(0, dtype=np.int64), np.zeros(0), None, None)
    ids = list(event_times)
    untasted = events.filter(pk__in=ids, feature_names=SHARED_NAMES).values_list(
        "pk", "encoder_version", "user_key", "created_at"
    )
    versions = EncoderVersion.objects.in_bulk({version_id for _, version_id, _, _ in untasted})
    without_taste = {
        pk: (versions[version_id], Personal(user_key, created_at)) for pk, version_id, user_key, created_at in untasted
    }
    layouts = _layouts(ids) if grid is not None else {}
    trust = search_trust(ids) if settings.LOUPE_FEEDBACK_TRUST else {}
    if settings.LOUPE_FEEDBACK_TRUST:
        clicks = set(counted_clicks(ids))  # one per impression, none past the identity's daily cap
    else:
        clicks = set(Click.objects.filter(event_id__in=ids).values_list("event_id", "image_id"))
    ratings: dict[tuple, float] = {}
    for rating in Rating.objects.filter(event_id__in=ids).order_by("created_at"):
        ratings[(rating.event_id, rating.image_id)] = rating.utility  # the latest rating counts
    shown = defaultdict(list)
    # A taken-down image's impressions are detached (collection.takedown): the list keeps its positions, the
    # image leaves the training set.
    impressions = kept_images(Impression.objects.filter(event_id__in=ids)).order_by("position")
    for event_id, image_id, position, features in impressions.values_list(
        "event_id", "image_id", "position", "features"
    ):
        shown[event_id].append((image_id, position, features))
    rows, labels, positions, groups, searched_at, trusts, identities, networks = [], [], [], [], [], [], [], []
    grid_rows: list[tuple[int, float]] = []  # (row, propensity) for rows shown in a reported layout
    for event_id in sorted(ids, key=lambda pk: event_times[pk]):
        items = shown.get(event_id, [])
        group_labels = [
            _label((event_id, image_id) in clicks, ratings.get((event_id, image_id))) for image_id, *_ in items
        ]
        if not items or max(group_labels) <= 0:
            continue
        layout = layouts.get(event_id)
        if layout is not None:
            grid_rows += [(len(rows) + n, grid.at(layout, position)) for n, (_, position, _) in enumerate(items)]
        rows += with_taste(items, without_taste.get(event_id))
        labels += group_labels
        positions += [position for _, position, _ in items]
        groups.append(len(items))
        searched_at.append(event_times[event_id])
        searcher = trust.get(event_id)
        trusts += [searcher.weight if searcher else 1.0] * len(items)
        identities.append(searcher.user_key if searcher else "")
        networks.append(searcher.network if searcher else "")
    X = np.asarray(rows, dtype=np.float64).reshape(-1, len(NAMES))
    y = np.asarray(labels, dtype=np.float64)
    positions_array = np.asarray(positions, dtype=np.int64)
    # Inverse propensity for the position bias, times the search's trust: a made-up identity's clicks teach less.
    weights = ipw_weights(y > 0, positions_array, propensity.values)
    if grid_rows:
        at, cell_propensity = (np.asarray(column) for column in zip(*grid_rows, strict=True))
        weights[at] = inverse_propensity(y[at] > 0, cell_propensity)
    weights = weights * np.asarray(trusts, dtype=np.float64)
    data = RankingData(X, y, np.asarray(groups, dtype=np.int64), weights, feature_names=list(NAMES))
    rank_column = NAMES.index("first_stage_rank_log")
    times = sorted(event_times.values())
    return LoggedSearches(
        data, positions_array, np.expm1(X[:, rank_column]), times[0], times[-1], searched_at, identities, networks
    )


def with_taste(items: list[tuple], untasted: tuple[EncoderVersion, Personal] | None) -> list:
    """The search's logged rows; a search logged before the per-user columns gets them, computed by the
    serving statement as of the search's own time (``ranking.features.taste_rows``: nothing after it)."""
    rows = [list(features) for _, _, features in items]
    if untasted is None:
        return rows
    version, personal = untasted
    tastes = taste_rows(version, [image_id for image_id, *_ in items], personal)
    return [row + list(taste) for row, taste in zip(rows, tastes, strict=True)]


def _layouts(event_ids: list) -> dict:
    """The reported layout of each of these searches that has one."""
    rows = SearchEvent.objects.filter(pk__in=event_ids, layout_columns__isnull=False).values_list(
        "pk", "layout_columns", "layout_first_row", "layout_last_row"
    )
    return {pk: Layout(tuple(columns), first, last) for pk, columns, first, last in rows}


def _label(clicked: bool, utility: float | None) -> float:
    if utility is not None and utility <= BAD_RATING:
        return 0.0
    if utility is not None and utility >= GOOD_RATING:
        return 2.0
    return 1.0 if clicked else 0.0


@dataclass
class Windows:
    """Labelled searches split by time: train, then early stopping, then the gate (the most recent)."""

    train: RankingData
    early_stopping: RankingData
    gate: RankingData
    gate_first_stage_rank: np.ndarray  # the gate rows' logged first-stage ranks ("no reranker" on them)
    bounds: dict[str, list[str]]  # window -> [first, last] search time (ISO), for the run's record
    gate_identities: list[str] = field(default_factory=list)  # per gate search: who made it
    gate_networks: list[str] = field(default_factory=list)  # per gate search: their arrival network


def split_windows(
    logged: LoggedSearches, early_stopping_share: float = EARLY_STOPPING_SHARE, gate_share: float = GATE_SHARE
) -> Windows:
    """Three disjoint windows by search time (see the module docstring); a window may be empty on tiny logs."""
    data = logged.data
    n = len(data.groups)
    n_gate = max(1, int(round(n * gate_share))) if n > 2 else 0
    n_stop = max(1, int(round(n * early_stopping_share))) if n > 2 else 0
    cuts = [0, n - n_gate - n_stop, n - n_gate, n]
    row_cuts = [int(data.groups[:c].sum()) for c in cuts]

    def part(i: int) -> RankingData:
        rows = slice(row_cuts[i], row_cuts[i + 1])
        weights = data.weights[rows] if data.weights is not None else None
        return RankingData(
            data.X[rows], data.y[rows], data.groups[cuts[i] : cuts[i + 1]], weights, feature_names=data.feature_names
        )

    bounds = {}
    for i, name in enumerate(("train", "early_stopping", "gate")):
        times = logged.searched_at[cuts[i] : cuts[i + 1]]
        bounds[name] = [times[0].isoformat(), times[-1].isoformat()] if times else []
    return Windows(
        part(0),
        part(1),
        part(2),
        logged.first_stage_rank[row_cuts[2] :],
        bounds,
        logged.identities[cuts[2] :],
        logged.networks[cuts[2] :],
    )


def swap_counts(since: datetime | None, max_position: int) -> dict[int, SwapCounts]:
    """Click counts at each adjacent pair (k, k+1) in normal first pages and in pages swapped at k."""
    events = exclude_erased(SearchEvent.objects.filter(kind="text", page=1))
    if since is not None:
        events = events.filter(created_at__gte=since)
    events = events.filter(explore_position__isnull=True)  # an explored page shifts items: not "normal"
    # A grid swap (k, k+d), d > 1, is neither a normal page nor an adjacent swap: the grid estimator reads it.
    events = events.exclude(swap_with__isnull=False, swap_with__gt=F("swap_position") + 1)
    shown = dict(events.values_list("pk", "swap_position"))
    sizes = dict(events.values_list("pk", "result_count"))
    clicked = defaultdict(set)
    for event_id, position in Click.objects.filter(event_id__in=list(shown)).values_list("event_id", "position"):
        clicked[event_id].add(position)
    counts = {k: SwapCounts() for k in range(1, max_position)}
    for event_id, swap in shown.items():
        positions = clicked.get(event_id, set())
        if swap is not None:
            if swap in counts:
                c = counts[swap]
                c.swapped_searches += 1
                c.swapped_upper_clicks += swap in positions
                c.swapped_lower_clicks += (swap + 1) in positions
            continue
        for k, c in counts.items():
            if sizes[event_id] > k:
                c.normal_searches += 1
                c.normal_upper_clicks += k in positions
                c.normal_lower_clicks += (k + 1) in positions
    return counts


def estimated_propensity(since: datetime | None, depth: int, max_position: int) -> PropensityCurve:
    """The swap-estimated curve over the first ``max_position`` positions, extended by the power law below them.

    Until enough swapped searches have clicks, positions keep the power-law prior 1 / position^exponent
    (``LOUPE_PROPENSITY_EXPONENT``: 1 for lists; image grids are scanned deeper and decay slower).
    """
    exponent = settings.LOUPE_PROPENSITY_EXPONENT
    prior = power_law(depth, exponent)
    curve = propensity_from_swaps(swap_counts(since, max_position), max_position)
    if not curve.estimated_positions:
        return prior
    values = prior.values.copy()
    values[:max_position] = curve.values
    tail = np.arange(max_position + 1, depth + 1)
    values[max_position:] = curve.values[-1] * (max_position / tail) ** exponent  # beyond the slice: the prior's decay
    return PropensityCurve(values, curve.estimated_positions)

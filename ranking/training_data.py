"""Build learning-to-rank arrays from the feedback logs (the only part of training that reads the database).

One group per logged search whose impressions carry the current feature list: features exactly as
logged at serve time, label 1 for a click, 2 for a good rating (utility >= 0.75), 0 for a bad one
(even if clicked: the user said so), and inverse-propensity weights for the labelled rows. Groups
without any positive label carry no preference and are left out. Searches are split by time: the
last ``validation_share`` of them validate (they happened after everything the model trains on).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from django.conf import settings

from feedback.models import Click, Impression, Rating, SearchEvent
from ranking.features import NAMES
from ranking.ltr import RankingData, ipw_weights
from ranking.propensity import PropensityCurve, SwapCounts, power_law, propensity_from_swaps

GOOD_RATING, BAD_RATING = 0.75, 0.25


@dataclass
class LoggedSearches:
    data: RankingData
    positions: np.ndarray
    first_stage_rank: np.ndarray  # the logged order's rank, to score "no reranker" on the same rows
    started: datetime | None
    ended: datetime | None


def load_searches(since: datetime | None, until: datetime, propensity: PropensityCurve) -> LoggedSearches:
    """The labelled searches logged in [since, until), oldest first."""
    events = SearchEvent.objects.filter(created_at__lt=until, feature_names=NAMES, kind="text")
    if since is not None:
        events = events.filter(created_at__gte=since)
    clicked_events = events.filter(clicks__isnull=False) | events.filter(ratings__isnull=False)
    event_times = dict(clicked_events.distinct().values_list("pk", "created_at"))
    if not event_times:
        empty = RankingData(np.zeros((0, len(NAMES))), np.zeros(0), np.zeros(0, dtype=np.int64), feature_names=NAMES)
        return LoggedSearches(empty, np.zeros(0, dtype=np.int64), np.zeros(0), None, None)
    ids = list(event_times)
    clicks = set(Click.objects.filter(event_id__in=ids).values_list("event_id", "image_id"))
    ratings: dict[tuple, float] = {}
    for rating in Rating.objects.filter(event_id__in=ids).order_by("created_at"):
        ratings[(rating.event_id, rating.image_id)] = rating.utility  # the latest rating counts
    shown = defaultdict(list)
    impressions = Impression.objects.filter(event_id__in=ids).order_by("position")
    for event_id, image_id, position, features in impressions.values_list(
        "event_id", "image_id", "position", "features"
    ):
        shown[event_id].append((image_id, position, features))
    rows, labels, positions, groups = [], [], [], []
    for event_id in sorted(ids, key=lambda pk: event_times[pk]):
        items = shown.get(event_id, [])
        group_labels = [
            _label((event_id, image_id) in clicks, ratings.get((event_id, image_id))) for image_id, *_ in items
        ]
        if not items or max(group_labels) <= 0:
            continue
        rows += [features for _, _, features in items]
        labels += group_labels
        positions += [position for _, position, _ in items]
        groups.append(len(items))
    X = np.asarray(rows, dtype=np.float64).reshape(-1, len(NAMES))
    y = np.asarray(labels, dtype=np.float64)
    positions_array = np.asarray(positions, dtype=np.int64)
    weights = ipw_weights(y > 0, positions_array, propensity.values)
    data = RankingData(X, y, np.asarray(groups, dtype=np.int64), weights, feature_names=list(NAMES))
    rank_column = NAMES.index("first_stage_rank_log")
    times = sorted(event_times.values())
    return LoggedSearches(data, positions_array, np.expm1(X[:, rank_column]), times[0], times[-1])


def _label(clicked: bool, utility: float | None) -> float:
    if utility is not None and utility <= BAD_RATING:
        return 0.0
    if utility is not None and utility >= GOOD_RATING:
        return 2.0
    return 1.0 if clicked else 0.0


def split_by_time(logged: LoggedSearches, validation_share: float = 0.2) -> tuple[RankingData, RankingData, np.ndarray]:
    """(train, validation, validation rows' first-stage ranks): the last share of searches validate."""
    data = logged.data
    n_groups = len(data.groups)
    n_valid = max(1, int(round(n_groups * validation_share))) if n_groups > 1 else 0
    cut_group = n_groups - n_valid
    cut_row = int(data.groups[:cut_group].sum())

    def part(rows: slice, groups: np.ndarray) -> RankingData:
        weights = data.weights[rows] if data.weights is not None else None
        return RankingData(data.X[rows], data.y[rows], groups, weights, feature_names=data.feature_names)

    train = part(slice(0, cut_row), data.groups[:cut_group])
    valid = part(slice(cut_row, None), data.groups[cut_group:])
    return train, valid, logged.first_stage_rank[cut_row:]


def swap_counts(since: datetime | None, max_position: int) -> dict[int, SwapCounts]:
    """Click counts at each adjacent pair (k, k+1) in normal first pages and in pages swapped at k."""
    events = SearchEvent.objects.filter(kind="text", page=1)
    if since is not None:
        events = events.filter(created_at__gte=since)
    events = events.filter(explore_position__isnull=True)  # an explored page shifts items: not "normal"
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

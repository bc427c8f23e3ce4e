"""What the search analytics page shows, read from the rollups only (``feedback.analytics.fold``).

A range of 90 days on one surface is at most 2,160 ``SearchHour`` rows; the query table is summed in
SQL with the day index narrowing the scan; distinct users come from one ``DayUsers`` row per day
(bench/analytics_page.py measures the page at 1 million logged searches).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
from django.db import connection
from django.db.models import Max

from feedback.analytics.latency import add_counts, percentile
from feedback.models import DayUsers, QueryDay, SearchHour

SURFACES = {
    "": "all surfaces",
    "page": "search page",
    "api": "public API",
    "partner": "partner API",
    "sim": "simulation",
}
BUCKETS = ("hour", "day")
CHANNELS = {
    "clip": "CLIP (image vectors)",
    "full_text": "full text",
    "caption": "caption vectors",
    "unknown": "not logged",
}
TOP = 20


class BadAnalyticsFilter(ValueError):
    """A filter the page cannot apply: unknown surface or bucket, or an empty or too long date range."""


@dataclass(frozen=True)
class AnalyticsFilter:
    start: date
    end: date  # inclusive
    surface: str = ""  # "" = all surfaces
    bucket: str = "day"

    MAX_DAYS = 366
    MAX_HOURLY_DAYS = 14  # 336 points: as many as the chart can show apart

    def __post_init__(self) -> None:
        if self.surface not in SURFACES:
            raise BadAnalyticsFilter(f"Unknown surface {self.surface!r}: one of {', '.join(s for s in SURFACES if s)}.")
        if self.bucket not in BUCKETS:
            raise BadAnalyticsFilter(f"Unknown bucket {self.bucket!r}: hour or day.")
        if self.end < self.start:
            raise BadAnalyticsFilter("The range ends before it starts.")
        if (self.end - self.start).days >= self.MAX_DAYS:
            raise BadAnalyticsFilter(f"At most {self.MAX_DAYS} days at once.")
        if self.bucket == "hour" and (self.end - self.start).days >= self.MAX_HOURLY_DAYS:
            raise BadAnalyticsFilter(f"Hourly buckets for at most {self.MAX_HOURLY_DAYS} days; choose days.")

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, tzinfo=UTC)


@dataclass(frozen=True)
class Figures:
    """One bucket's (or the whole range's) figures; rates are None where their denominator is zero."""

    searches: int
    users: int
    clicked_searches: int
    clicks: int
    abandoned: int
    no_results: int
    ratings: int
    explored: int
    swapped: int
    click_through_rate: float | None
    abandonment: float | None
    mean_rating: float | None
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Point:
    at: datetime
    figures: Figures


@dataclass(frozen=True)
class QueryRow:
    query: str
    searches: int
    no_results: int
    clicked_searches: int


@dataclass(frozen=True)
class ChannelShare:
    channel: str
    label: str
    clicks: int
    share: float


@dataclass(frozen=True)
class SearchAnalytics:
    filter: AnalyticsFilter
    totals: Figures
    series: list[Point]
    top_queries: list[QueryRow]
    no_result_queries: list[QueryRow]  # content gaps: nothing found
    no_click_queries: list[QueryRow]  # relevance gaps: results, never a click
    channels: list[ChannelShare]
    folded_at: datetime | None


class _Sum:
    """Running sums of SearchHour rows."""

    FIELDS = ("searches", "users", "clicked_searches", "clicks", "abandoned", "no_results", "ratings", "explored",
              "swapped")  # fmt: skip

    def __init__(self) -> None:
        self.counts = dict.fromkeys(self.FIELDS, 0)
        self.rating_sum = 0.0
        self.latency: dict[int, int] = {}
        self.channels: dict[str, int] = {}

    READ = (*FIELDS, "rating_sum", "latency_buckets", "clicks_by_channel")

    def add(self, row: dict) -> None:
        """Add a ``SearchHour`` row read as a dict of ``READ`` (model instances cost a third more)."""
        for name in self.FIELDS:
            self.counts[name] += row[name]
        self.rating_sum += row["rating_sum"]
        add_counts(self.latency, row["latency_buckets"])
        for channel, n in row["clicks_by_channel"].items():
            self.channels[channel] = self.channels.get(channel, 0) + int(n)

    def figures(self, users: int) -> Figures:
        c = self.counts
        return Figures(
            **{**c, "users": users},
            click_through_rate=c["clicked_searches"] / c["searches"] if c["searches"] else None,
            abandonment=c["abandoned"] / c["searches"] if c["searches"] else None,
            mean_rating=self.rating_sum / c["ratings"] if c["ratings"] else None,
            p50_ms=percentile(self.latency, 0.50),
            p99_ms=percentile(self.latency, 0.99),
        )


def search_analytics(chosen: AnalyticsFilter) -> SearchAnalytics:
    rows = SearchHour.objects.filter(hour__gte=chosen.since, hour__lt=chosen.until, surface=chosen.surface)
    total, buckets = _Sum(), {at: _Sum() for at in _bucket_starts(chosen)}
    for row in rows.values("hour", *_Sum.READ):
        total.add(row)
        buckets[_bucket_of(row["hour"], chosen.bucket)].add(row)
    users = _users_per_bucket(chosen, buckets)
    series = [Point(at, s.figures(users.get(at, 0))) for at, s in buckets.items()]
    clicks = sum(total.channels.values())
    queries = _query_lists(chosen)
    channels = [
        ChannelShare(name, CHANNELS.get(name, name), n, n / clicks)
        for name, n in sorted(total.channels.items(), key=lambda pair: -pair[1])
    ]
    return SearchAnalytics(
        filter=chosen,
        totals=total.figures(_distinct_users(chosen)),
        series=series,
        top_queries=queries["top"],
        no_result_queries=queries["no_results"],
        no_click_queries=queries["no_clicks"],
        channels=channels,
        folded_at=SearchHour.objects.aggregate(at=Max("folded_at"))["at"],
    )


def _bucket_of(at: datetime, bucket: str) -> datetime:
    at = at.astimezone(UTC)
    return (
        at.replace(minute=0, second=0, microsecond=0)
        if bucket == "hour"
        else datetime.combine(at.date(), time.min, UTC)
    )


def _bucket_starts(chosen: AnalyticsFilter) -> list[datetime]:
    step = timedelta(hours=1) if chosen.bucket == "hour" else timedelta(days=1)
    starts, at = [], chosen.since
    while at < chosen.until:
        starts.append(at)
        at += step
    return starts


def _users_per_bucket(chosen: AnalyticsFilter, buckets: dict[datetime, _Sum]) -> dict[datetime, int]:
    """Distinct users per bucket: an hour's count is stored with it, and so is a day's (``DayUsers``)."""
    if chosen.bucket == "hour":
        return {at: s.counts["users"] for at, s in buckets.items()}
    days = DayUsers.objects.filter(day__gte=chosen.start, day__lte=chosen.end, surface=chosen.surface)
    return {datetime.combine(day, time.min, UTC): n for day, n in days.values_list("day", "users")}


def _distinct_users(chosen: AnalyticsFilter) -> int:
    """Distinct users over the range, exactly: the union of the days' sorted id arrays.

    Exact rather than a HyperLogLog sketch (~1% error at 2^14 registers) because it is affordable: the
    ids are dense (``AnalyticsUser``), so the union is a boolean array indexed by id, linear in the
    ids read. At 1M searches over 30 days that is 30 arrays, ~870k ids (3.5 MB), read and unioned in
    tens of milliseconds where count(DISTINCT) over 863k user-day rows took seconds (docs/performance.md).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_ids FROM {DayUsers._meta.db_table} WHERE day >= %s AND day <= %s AND surface = %s "
            "AND users > 0",
            [chosen.start, chosen.end, chosen.surface],
        )
        days = [np.frombuffer(bytes(packed), dtype=">i4") for (packed,) in cursor.fetchall()]
    if not days:
        return 0
    seen = np.zeros(max(int(ids[-1]) for ids in days) + 1, dtype=bool)  # each array is sorted
    for ids in days:
        seen[ids] = True
    return int(np.count_nonzero(seen))


def _days_where(chosen: AnalyticsFilter) -> tuple[str, list]:
    where, params = "day >= %s AND day <= %s", [chosen.start, chosen.end]
    if chosen.surface:
        where, params = where + " AND surface = %s", params + [chosen.surface]
    return where, params


# The three query lists, each (filter, order); summed once per page view for all three (MATERIALIZED),
# since the sum over 30 days x 3 surfaces of query-day rows (149k at 1M searches) is most of its cost.
QUERY_LISTS = {
    "top": ("searches > 0", "searches DESC"),
    "no_results": ("no_results > 0", "no_results DESC"),  # content gaps
    "no_clicks": ("searches > no_results AND clicked_searches = 0", "searches DESC"),  # relevance gaps
}


def _query_lists(chosen: AnalyticsFilter) -> dict[str, list[QueryRow]]:
    where, params = _days_where(chosen)
    summed = (
        f"WITH q AS MATERIALIZED (SELECT query, sum(searches) AS searches, sum(no_results) AS no_results, "
        f"sum(clicked_searches) AS clicked_searches FROM {QueryDay._meta.db_table} WHERE {where} GROUP BY query) "
    )
    lists = " UNION ALL ".join(
        f"(SELECT '{name}', query, searches, no_results, clicked_searches FROM q WHERE {keep} "
        f"ORDER BY {order}, query LIMIT {TOP})"
        for name, (keep, order) in QUERY_LISTS.items()
    )
    found: dict[str, list[QueryRow]] = {name: [] for name in QUERY_LISTS}
    with connection.cursor() as cursor:
        cursor.execute(summed + lists, params)
        for name, query, searches, no_results, clicked in cursor.fetchall():
            found[name].append(QueryRow(query, int(searches), int(no_results), int(clicked)))
    return found

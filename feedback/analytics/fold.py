"""Fold the search log into the analytics rollups, recounting only the hours that changed.

Database triggers mark an hour stale whenever one of its searches, or a click or rating on one of
them, is written, changed or deleted (``feedback.models.StaleSearchHour``, migration 0013). A fold
takes the marks it can see, recounts those hours (``SearchHour``) and their days (``QueryDay``,
``DayUsers``) from the log, and commits the new rows and the removal of the marks together: a mark
written meanwhile stays for the next fold, and a failed fold leaves every mark in place. Recounting a
whole hour rather than adding deltas keeps a late click, a deleted search or a fold run twice exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from core.locks import transaction_lock
from feedback.analytics.latency import BUCKET_SQL
from feedback.models import (
    RATING_UTILITY_SQL,
    AnalyticsUser,
    Click,
    DayUsers,
    Impression,
    QueryDay,
    Rating,
    SearchEvent,
    SearchHour,
    StaleSearchHour,
)

EVENTS = SearchEvent._meta.db_table
CLICKS = Click._meta.db_table
RATINGS = Rating._meta.db_table
IMPRESSIONS = Impression._meta.db_table
STALE = StaleSearchHour._meta.db_table

# page (web), api (no partner key: the public API), partner (a partner key), sim (simulated traffic).
SURFACE_SQL = (
    "CASE e.surface WHEN 'web' THEN 'page' "
    "WHEN 'api' THEN CASE WHEN e.partner_id IS NULL THEN 'api' ELSE 'partner' END ELSE e.surface END"
)
HOUR_SQL = "date_trunc('hour', e.created_at, 'UTC')"
DAY_SQL = "(e.created_at AT TIME ZONE 'UTC')::date"

# The first pages of the hours being recounted; the created_at range lets the index narrow the scan.
HOUR_SEARCHES = f"""s AS (
    SELECT e.id, {HOUR_SQL} AS hour, {SURFACE_SQL} AS surface, e.user_key, e.kind, e.feature_names,
        e.result_count, e.latency_ms, e.explore_position, e.swap_position
    FROM {EVENTS} e
    WHERE e.page = 1 AND e.created_at >= %(start)s AND e.created_at < %(end)s AND {HOUR_SQL} = ANY(%(hours)s)
)"""

# Which channel ranked a clicked result best, from the ranks logged with it (ranking.features: log(1 + rank),
# depth + 1 when the channel did not find it). Image searches have only the CLIP channel; ties go to CLIP,
# the channel every search has. A click whose list logged no ranks is "unknown".
CHANNEL_SQL = """CASE WHEN s.kind <> 'text' THEN 'clip'
    WHEN f.clip IS NULL THEN 'unknown'
    WHEN f.clip <= coalesce(least(f.fts, f.caption), 'Infinity') THEN 'clip'
    WHEN f.fts <= coalesce(f.caption, 'Infinity') THEN 'full_text'
    WHEN f.caption IS NOT NULL THEN 'caption'
    ELSE 'unknown' END"""

RECOUNT_HOURS = f"""
WITH {HOUR_SEARCHES},
c AS (SELECT c.event_id, count(*) AS n FROM {CLICKS} c JOIN s ON s.id = c.event_id GROUP BY c.event_id),
r AS (
    SELECT r.event_id, count(*) AS n, sum({RATING_UTILITY_SQL}) AS total
    FROM {RATINGS} r JOIN s ON s.id = r.event_id GROUP BY r.event_id
),
main AS (
    SELECT s.hour, coalesce(s.surface, '') AS surface, count(*) AS searches, count(DISTINCT s.user_key) AS users,
        count(c.event_id) AS clicked_searches, coalesce(sum(c.n), 0) AS clicks,
        count(*) FILTER (WHERE c.event_id IS NULL AND r.event_id IS NULL) AS abandoned,
        count(*) FILTER (WHERE s.result_count = 0) AS no_results,
        coalesce(sum(r.n), 0) AS ratings, coalesce(sum(r.total), 0) AS rating_sum,
        count(*) FILTER (WHERE s.explore_position IS NOT NULL) AS explored,
        count(*) FILTER (WHERE s.swap_position IS NOT NULL) AS swapped
    FROM s LEFT JOIN c ON c.event_id = s.id LEFT JOIN r ON r.event_id = s.id
    GROUP BY GROUPING SETS ((s.hour, s.surface), (s.hour))
),
latency AS (
    SELECT hour, surface, jsonb_object_agg(bucket, n) AS buckets FROM (
        SELECT hour, coalesce(surface, '') AS surface, bucket, count(*) AS n
        FROM (SELECT s.hour, s.surface, {BUCKET_SQL.replace("latency_ms", "s.latency_ms")} AS bucket
              FROM s WHERE s.latency_ms IS NOT NULL) timed
        GROUP BY GROUPING SETS ((hour, surface, bucket), (hour, bucket))
    ) per_bucket GROUP BY hour, surface
),
channels AS (
    SELECT hour, surface, jsonb_object_agg(channel, n) AS clicks FROM (
        SELECT hour, coalesce(surface, '') AS surface, channel, count(*) AS n
        FROM (SELECT s.hour, s.surface, {CHANNEL_SQL} AS channel
              FROM {CLICKS} k JOIN s ON s.id = k.event_id
              LEFT JOIN {IMPRESSIONS} i ON i.event_id = k.event_id AND i.image_id = k.image_id
              CROSS JOIN LATERAL (SELECT
                  i.features[array_position(s.feature_names, 'clip_rank_log')] AS clip,
                  i.features[array_position(s.feature_names, 'fts_rank_log')] AS fts,
                  i.features[array_position(s.feature_names, 'caption_rank_log')] AS caption) f) clicked
        GROUP BY GROUPING SETS ((hour, surface, channel), (hour, channel))
    ) per_channel GROUP BY hour, surface
)
INSERT INTO {SearchHour._meta.db_table} (hour, surface, searches, users, clicked_searches, clicks, abandoned,
    no_results, ratings, rating_sum, explored, swapped, latency_buckets, clicks_by_channel, folded_at)
SELECT m.hour, m.surface, m.searches, m.users, m.clicked_searches, m.clicks, m.abandoned, m.no_results, m.ratings,
    m.rating_sum, m.explored, m.swapped, coalesce(l.buckets, '{{}}'), coalesce(ch.clicks, '{{}}'), %(now)s
FROM main m LEFT JOIN latency l USING (hour, surface) LEFT JOIN channels ch USING (hour, surface)
"""

DAY_FILTER = f"e.page = 1 AND e.created_at >= %(start)s AND e.created_at < %(end)s AND {DAY_SQL} = ANY(%(days)s)"

RECOUNT_QUERY_DAYS = f"""
INSERT INTO {QueryDay._meta.db_table} (day, surface, query, searches, no_results, clicked_searches)
SELECT {DAY_SQL}, {SURFACE_SQL}, e.normalised_query, count(*), count(*) FILTER (WHERE e.result_count = 0),
    count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {CLICKS} c WHERE c.event_id = e.id))
FROM {EVENTS} e WHERE {DAY_FILTER} AND e.normalised_query <> ''
GROUP BY 1, 2, 3
"""

# The digest erasure markers keep (feedback.erasure.key_digest), computed by Postgres's sha256.
KEY_DIGEST_SQL = "encode(sha256(convert_to(e.user_key, 'UTF8')), 'hex')"

# New users get the next small id; a user keeps theirs, so a refold rewrites the same arrays.
NUMBER_NEW_USERS = f"""
INSERT INTO {AnalyticsUser._meta.db_table} (key_digest)
SELECT DISTINCT {KEY_DIGEST_SQL} FROM {EVENTS} e WHERE {DAY_FILTER}
ON CONFLICT (key_digest) DO NOTHING
"""

# A day's distinct users per surface and over all surfaces (a user on two surfaces counts once there),
# with their ids sorted and packed (4-byte big-endian, whose byte order is the ids' order for ids > 0).
RECOUNT_DAY_USERS = f"""
INSERT INTO {DayUsers._meta.db_table} (day, surface, users, user_ids)
SELECT day, coalesce(surface, ''), count(DISTINCT id),
    string_agg(DISTINCT int4send(id), ''::bytea ORDER BY int4send(id))
FROM (SELECT DISTINCT {DAY_SQL} AS day, {SURFACE_SQL} AS surface, u.id
      FROM {EVENTS} e JOIN {AnalyticsUser._meta.db_table} u ON u.key_digest = {KEY_DIGEST_SQL}
      WHERE {DAY_FILTER}) searched
GROUP BY GROUPING SETS ((day, surface), (day))
"""


@dataclass(frozen=True)
class Fold:
    """What one fold recounted."""

    hours: int
    days: int
    seconds: float


def fold_search_rollups(everything: bool = False) -> Fold:
    """Recount the stale hours (every hour in the log with ``everything``, or on the first fold)."""
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        transaction_lock("feedback.analytics.fold")  # two folds at once would insert the same rows
        if everything or not SearchHour.objects.exists():
            cursor.execute(f"INSERT INTO {STALE} (hour) SELECT DISTINCT {HOUR_SQL} FROM {EVENTS} e")
        # Only marks this statement can see are taken; one committed meanwhile waits for the next fold.
        cursor.execute(f"WITH taken AS (DELETE FROM {STALE} RETURNING hour) SELECT DISTINCT hour FROM taken")
        hours = sorted(row[0] for row in cursor.fetchall())
        if not hours:
            return Fold(0, 0, round(time.perf_counter() - started, 3))
        days = sorted({hour.astimezone(UTC).date() for hour in hours})
        recount_hours(cursor, hours)
        recount_days(cursor, days)
    return Fold(len(hours), len(days), round(time.perf_counter() - started, 3))


def recount_hours(cursor, hours: list[datetime]) -> None:
    SearchHour.objects.filter(hour__in=hours).delete()
    params = {"hours": hours, "start": hours[0], "end": hours[-1] + timedelta(hours=1), "now": timezone.now()}
    cursor.execute(RECOUNT_HOURS, params)


def recount_days(cursor, days: list[date]) -> None:
    QueryDay.objects.filter(day__in=days).delete()
    DayUsers.objects.filter(day__in=days).delete()
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    params = {"days": days, "start": start, "end": start + timedelta(days=(days[-1] - days[0]).days + 1)}
    cursor.execute(RECOUNT_QUERY_DAYS, params)
    cursor.execute(NUMBER_NEW_USERS, params)
    cursor.execute(RECOUNT_DAY_USERS, params)

"""Fold the search log into the feedback summaries, recounting only the hours that changed.

Every summary row is a sum over searches (their impressions and clicks) and ratings, so it is the sum
of what each UTC hour contributes: the hourly rollups hold that, and the summary tables hold the
totals. Triggers (migration 0017) mark an hour stale when one of its searches, a click on one, or a
rating in it is written, changed or deleted (an erasure deletes, so it marks too). A fold takes the
marks it can see, recounts those hours from the log, and adds the difference between the new and the
old hourly rows to the totals, all in one transaction: a refresh costs what changed, not the history.

What an hour contributes depends on more than its own rows, through the trust weights
(``feedback.trust``, migration 0010). The fold widens the marked hours by exactly those dependencies:

- an identity's weight at a search depends on its first search and its earlier searches, so a change
  at time t recounts the hours of that user's searches from t on (a late row dated in the past moves
  the later ones; an ordinary new search, being the latest, adds nothing);
- a click's weight depends on the user's earlier clicks on the same (query, image) that day (the daily
  cap), so a change at time t recounts the hours of the user's clicks made later that day (a click made
  now, the latest, adds nothing);
- an identity's burst weight depends on how many newcomers its arrival (network, day) had; when that
  count changes and is (or was) above the allowance, every hour of every identity of that cohort is
  recounted. At or below the allowance every weight is 1, so honest arrivals cost nothing.

Recounting whole hours rather than folding row deltas keeps a late click, a deleted search, an erased
user or a fold run twice exact, as ``feedback.analytics.fold`` does for the analytics rollups.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from django.db import connection, transaction

from core.locks import transaction_lock
from feedback.migrations._summary_views import CURVE_EXAMINATIONS
from feedback.models import RATING_UTILITY_SQL
from feedback.trust import NETWORK_DAILY_NEWCOMERS

TEMP_TABLE = re.compile(r"CREATE TEMP TABLE (\w+)")
HOUR_SQL = "date_trunc('hour', {}, 'UTC')"
EVENT_HOUR = HOUR_SQL.format("e.created_at")

# The identity weight and burst weight of feedback_eventtrust (migration 0010), over the rows below.
IDENTITY_WEIGHT = """CASE WHEN h.user_key LIKE 'account:%%' THEN 1.0::float8
    ELSE (0.25 + 0.75 * least(1.0, greatest(
        extract(epoch FROM h.created_at - i.first_seen) / (7 * 86400.0), h.earlier_searches / 10.0)))::float8 END"""
BURST_WEIGHT = """CASE WHEN h.user_key LIKE 'account:%%' THEN 1.0::float8
    ELSE least(1.0, 5.0 / coalesce(a.newcomers, 1))::float8 END"""
CURVE = CURVE_EXAMINATIONS.replace("%", "%%")
UTILITY = RATING_UTILITY_SQL


@dataclass(frozen=True)
class Rollup:
    """An hourly rollup and the summary its rows add up to (by ``key``)."""

    hourly: str
    total: str
    key: tuple[str, ...]
    sums: tuple[str, ...]
    latest: str  # the total's column holding the newest ``last_activity`` of its hourly rows
    empty: str  # a total row with nothing left to count
    derived: str = ""  # columns computed from the sums, SET clause


IMAGE = Rollup(
    hourly="feedback_imagehour",
    total="feedback_imagesummary",
    key=("image_id",),
    sums=(
        "impressions",
        "examinations",
        "trusted_impressions",
        "trusted_examinations",
        "clicks",
        "trusted_clicks",
        "ratings",
        "utility_sum",
    ),
    latest="last_activity",
    empty="impressions = 0 AND clicks = 0 AND ratings = 0",
    derived="mean_utility = utility_sum / nullif(ratings, 0)",
)
QUERY_IMAGE = Rollup(
    hourly="feedback_queryimagehour",
    total="feedback_queryimagesummary",
    key=("query", "image_id"),
    sums=(
        "impressions",
        "examinations",
        "clicks",
        "trusted_impressions",
        "trusted_examinations",
        "trusted_clicks",
    ),
    latest="last_activity",
    empty="impressions = 0",
)
QUERY = Rollup(
    hourly="feedback_queryhour",
    total="feedback_querysummary",
    key=("query",),
    sums=("searches", "impressions", "clicks", "searches_with_click", "ratings", "utility_sum"),
    latest="last_searched",
    empty="searches = 0",
    derived="mean_utility = utility_sum / nullif(ratings, 0)",
)
QUERY_USERS = Rollup(
    hourly="feedback_queryhour",
    total="feedback_queryuser",
    key=("query", "user_key"),
    sums=("searches",),
    latest="last_activity",
    empty="searches = 0",
)
ROLLUPS = (IMAGE, QUERY_IMAGE, QUERY, QUERY_USERS)
TOTALS = tuple(dict.fromkeys(r.total for r in ROLLUPS))
HOURLY = tuple(dict.fromkeys(r.hourly for r in ROLLUPS))

# --- Which hours: the marks, widened by what the trust weights depend on ---------------------------------

TAKE_MARKS = """
CREATE TEMP TABLE fold_marks ON COMMIT DROP AS
WITH taken AS (DELETE FROM feedback_summarystale RETURNING hour, user_key, at)
SELECT user_key, hour, min(at) AS since FROM taken GROUP BY user_key, hour;
CREATE TEMP TABLE fold_users ON COMMIT DROP AS SELECT user_key, min(since) AS since FROM fold_marks GROUP BY user_key;
ANALYZE fold_marks;
ANALYZE fold_users;
"""

MARK_EVERYTHING = f"""
CREATE TEMP TABLE fold_marks ON COMMIT DROP AS
SELECT DISTINCT NULL::varchar AS user_key, {EVENT_HOUR} AS hour, NULL::timestamptz AS since
FROM feedback_searchevent e
UNION SELECT NULL, {HOUR_SQL.format("r.created_at")}, NULL FROM feedback_rating r;
CREATE TEMP TABLE fold_users ON COMMIT DROP AS
SELECT DISTINCT user_key, '-infinity'::timestamptz AS since FROM feedback_searchevent;
DELETE FROM feedback_summarystale;
"""

# Each identity's arrival, re-read for the marked users; the cohorts they left or joined are recounted.
ARRIVALS = """
CREATE TEMP TABLE fold_cohorts ON COMMIT DROP AS
SELECT i.first_network AS network, i.first_day AS day
FROM feedback_summaryidentity i JOIN fold_users u ON u.user_key = i.user_key WHERE i.first_network <> '';
DELETE FROM feedback_summaryidentity i USING fold_users u WHERE i.user_key = u.user_key;
INSERT INTO feedback_summaryidentity (user_key, first_seen, first_network, first_day)
SELECT DISTINCT ON (e.user_key) e.user_key, e.created_at, e.network, date_trunc('day', e.created_at)
FROM feedback_searchevent e JOIN fold_users u ON u.user_key = e.user_key
ORDER BY e.user_key, e.created_at, e.id;
INSERT INTO fold_cohorts
SELECT i.first_network, i.first_day
FROM feedback_summaryidentity i JOIN fold_users u ON u.user_key = i.user_key WHERE i.first_network <> '';

CREATE TEMP TABLE fold_cohort_change ON COMMIT DROP AS
WITH touched AS (SELECT DISTINCT network, day FROM fold_cohorts),
fresh AS (
    SELECT t.network, t.day, count(i.user_key) AS newcomers FROM touched t
    LEFT JOIN feedback_summaryidentity i ON i.first_network = t.network AND i.first_day = t.day
    GROUP BY t.network, t.day
)
SELECT f.network, f.day, f.newcomers, coalesce(c.newcomers, 0) AS before
FROM fresh f LEFT JOIN feedback_summarycohort c ON c.network = f.network AND c.day = f.day;
DELETE FROM feedback_summarycohort c USING fold_cohort_change ch WHERE c.network = ch.network AND c.day = ch.day;
INSERT INTO feedback_summarycohort (network, day, newcomers)
SELECT network, day, newcomers FROM fold_cohort_change WHERE newcomers > 0;
"""

WIDEN = f"""
CREATE TEMP TABLE fold_hours ON COMMIT DROP AS
SELECT hour FROM fold_marks
UNION
SELECT {EVENT_HOUR} FROM feedback_searchevent e JOIN fold_users u ON u.user_key = e.user_key
WHERE e.created_at >= u.since
UNION
SELECT {EVENT_HOUR} FROM feedback_click c JOIN fold_marks m ON m.user_key = c.user_key
JOIN feedback_searchevent e ON e.id = c.event_id
WHERE c.created_at >= m.since AND c.created_at < date_trunc('day', m.since) + interval '1 day'
UNION
SELECT {EVENT_HOUR} FROM fold_cohort_change ch
JOIN feedback_summaryidentity i ON i.first_network = ch.network AND i.first_day = ch.day
JOIN feedback_searchevent e ON e.user_key = i.user_key
WHERE ch.newcomers <> ch.before AND greatest(ch.newcomers, ch.before) > {NETWORK_DAILY_NEWCOMERS};
"""

ALL_MARKED_HOURS = "CREATE TEMP TABLE fold_hours ON COMMIT DROP AS SELECT DISTINCT hour FROM fold_marks"

# --- Recounting the hours: their searches, the trust of each, and what they add to each summary ----------

RECOUNT_INPUTS = f"""
CREATE TEMP TABLE fold_events ON COMMIT DROP AS
SELECT e.id, e.user_key, e.created_at, e.kind, e.normalised_query, e.result_count, {EVENT_HOUR} AS hour
FROM feedback_searchevent e
WHERE e.created_at >= %(start)s AND e.created_at < %(end)s AND {EVENT_HOUR} IN (SELECT hour FROM fold_hours);
CREATE INDEX ON fold_events (id);
ANALYZE fold_events;

CREATE TEMP TABLE fold_trust ON COMMIT DROP AS
WITH users AS (SELECT DISTINCT user_key FROM fold_events),
h AS (
    SELECT e.id, e.user_key, e.created_at,
           row_number() OVER (PARTITION BY e.user_key ORDER BY e.created_at, e.id) - 1 AS earlier_searches
    FROM feedback_searchevent e JOIN users u ON u.user_key = e.user_key
)
SELECT h.id AS event_id, {IDENTITY_WEIGHT} AS identity_weight, {BURST_WEIGHT} AS burst_weight
FROM h JOIN fold_events f ON f.id = h.id
JOIN feedback_summaryidentity i ON i.user_key = h.user_key
LEFT JOIN feedback_summarycohort a ON a.network = i.first_network AND a.day = i.first_day;
CREATE INDEX ON fold_trust (event_id);
ANALYZE fold_trust;

-- feedback_clicktrust (migration 0010) for the clicks on these searches: the first click per impression,
-- weight 0 past the daily cap among the user's clicks on that (query, image).
CREATE TEMP TABLE fold_clicktrust ON COMMIT DROP AS
WITH users AS (SELECT DISTINCT user_key FROM fold_events),
first_on_impression AS (
    SELECT DISTINCT ON (c.event_id, c.image_id)
           c.id, c.event_id, c.image_id, c.user_key, c.created_at, e.normalised_query AS query
    FROM feedback_click c JOIN users u ON u.user_key = c.user_key JOIN feedback_searchevent e ON e.id = c.event_id
    ORDER BY c.event_id, c.image_id, c.created_at, c.id
), ordered AS (
    SELECT f.*, row_number() OVER (
               PARTITION BY f.user_key, f.query, f.image_id, date_trunc('day', f.created_at)
               ORDER BY f.created_at, f.id) AS nth_today
    FROM first_on_impression f
)
SELECT o.id AS click_id, o.event_id, o.image_id,
       CASE WHEN o.nth_today <= 2 THEN t.identity_weight * t.burst_weight ELSE 0.0 END::float8 AS weight
FROM ordered o JOIN fold_trust t ON t.event_id = o.event_id;
ANALYZE fold_clicktrust;

CREATE TEMP TABLE fold_clicks ON COMMIT DROP AS
SELECT c.id, c.event_id, c.image_id, c.created_at FROM feedback_click c JOIN fold_events f ON f.id = c.event_id;
ANALYZE fold_clicks;
"""

RECOUNT = {
    "feedback_imagehour": f"""
SELECT hour, image_id, sum(impressions), sum(examinations), sum(trusted_impressions), sum(trusted_examinations),
       sum(clicks), sum(trusted_clicks), sum(ratings), sum(utility_sum), max(at)
FROM (
    SELECT f.hour, im.image_id, 1 AS impressions, {CURVE} AS examinations, t.burst_weight AS trusted_impressions,
           t.identity_weight * t.burst_weight * {CURVE} AS trusted_examinations,
           0 AS clicks, 0.0::float8 AS trusted_clicks, 0 AS ratings, 0.0::float8 AS utility_sum, f.created_at AS at
    FROM feedback_impression im JOIN fold_events f ON f.id = im.event_id JOIN fold_trust t ON t.event_id = f.id
    UNION ALL
    SELECT f.hour, c.image_id, 0, 0.0, 0.0, 0.0, 1, coalesce(ct.weight, 0.0), 0, 0.0, c.created_at
    FROM fold_clicks c JOIN fold_events f ON f.id = c.event_id LEFT JOIN fold_clicktrust ct ON ct.click_id = c.id
    UNION ALL
    SELECT {HOUR_SQL.format("r.created_at")}, r.image_id, 0, 0.0, 0.0, 0.0, 0, 0.0, 1, {UTILITY}, r.created_at
    FROM feedback_rating r
    WHERE r.created_at >= %(start)s AND r.created_at < %(end)s
      AND {HOUR_SQL.format("r.created_at")} IN (SELECT hour FROM fold_hours)
) counted
WHERE image_id IS NOT NULL  -- a taken-down image's detached rows (collection.takedown) count for no image
GROUP BY hour, image_id""",
    "feedback_queryimagehour": f"""
SELECT f.hour, f.normalised_query, im.image_id, count(*), sum({CURVE}), coalesce(sum(c.clicks), 0),
       sum(t.burst_weight), sum(t.identity_weight * t.burst_weight * {CURVE}), coalesce(sum(ct.weight), 0),
       max(f.created_at)
FROM feedback_impression im
JOIN fold_events f ON f.id = im.event_id
JOIN fold_trust t ON t.event_id = f.id
LEFT JOIN (SELECT event_id, image_id, count(*) AS clicks FROM fold_clicks GROUP BY event_id, image_id) c
       ON c.event_id = im.event_id AND c.image_id = im.image_id
LEFT JOIN (SELECT event_id, image_id, sum(weight) AS weight FROM fold_clicktrust GROUP BY event_id, image_id) ct
       ON ct.event_id = im.event_id AND ct.image_id = im.image_id
WHERE f.kind = 'text' AND f.normalised_query <> '' AND im.image_id IS NOT NULL
GROUP BY f.hour, f.normalised_query, im.image_id""",
    "feedback_queryhour": f"""
SELECT f.hour, f.normalised_query, f.user_key, count(*), sum(f.result_count), coalesce(sum(c.clicks), 0),
       count(c.event_id), coalesce(sum(r.ratings), 0), coalesce(sum(r.utility_sum), 0.0), max(f.created_at)
FROM fold_events f
LEFT JOIN (SELECT event_id, count(*) AS clicks FROM fold_clicks GROUP BY event_id) c ON c.event_id = f.id
LEFT JOIN (SELECT r.event_id, count(*) AS ratings, sum({UTILITY}) AS utility_sum
           FROM feedback_rating r JOIN fold_events f ON f.id = r.event_id GROUP BY r.event_id) r ON r.event_id = f.id
WHERE f.kind = 'text' AND f.normalised_query <> ''
GROUP BY f.hour, f.normalised_query, f.user_key""",
}


def replace_hours(cursor, hourly: str) -> None:
    """The hourly rows of the recounted hours, old (``fold_old_*``) and new (``fold_new_*``)."""
    run(
        cursor,
        f"CREATE TEMP TABLE fold_old_{hourly} ON COMMIT DROP AS "
        f"WITH gone AS (DELETE FROM {hourly} h USING fold_hours f WHERE h.hour = f.hour RETURNING h.*) "
        f"SELECT * FROM gone;\n"
        f"CREATE TEMP TABLE fold_new_{hourly} ON COMMIT DROP AS SELECT * FROM {hourly} LIMIT 0",
    )
    cursor.execute(f"INSERT INTO fold_new_{hourly} {RECOUNT[hourly]}", recount_window(cursor))
    cursor.execute(f"INSERT INTO {hourly} SELECT * FROM fold_new_{hourly}")


def apply_difference(cursor, rollup: Rollup) -> None:
    """Add new minus old hourly rows to the totals; the newest activity is re-read where a recount lowered it."""
    key = ", ".join(rollup.key)
    sums = ", ".join(rollup.sums)
    signed = ", ".join(f"sum(sign * {s})" for s in rollup.sums)
    added = ", ".join(f"{s} = t.{s} + excluded.{s}" for s in rollup.sums)
    old, new = f"fold_old_{rollup.hourly}", f"fold_new_{rollup.hourly}"
    cursor.execute(
        f"""INSERT INTO {rollup.total} AS t ({key}, {sums}, {rollup.latest})
        SELECT {key}, {signed}, max(last_activity) FILTER (WHERE sign = 1)
        FROM (SELECT 1 AS sign, * FROM {new} UNION ALL SELECT -1 AS sign, * FROM {old}) d GROUP BY {key}
        ON CONFLICT ({key}) DO UPDATE SET {added},
            {rollup.latest} = greatest(t.{rollup.latest}, excluded.{rollup.latest})"""
    )
    matches = " AND ".join(f"t.{k} = lowered.{k}" for k in rollup.key)
    hourly_matches = " AND ".join(f"h.{k} = t.{k}" for k in rollup.key)
    cursor.execute(
        f"""UPDATE {rollup.total} t SET {rollup.latest} = (
                SELECT max(h.last_activity) FROM {rollup.hourly} h WHERE {hourly_matches})
        FROM (SELECT DISTINCT {", ".join(f"o.{k}" for k in rollup.key)} FROM {old} o
              LEFT JOIN {new} n ON n.hour = o.hour AND {" AND ".join(f"n.{k} = o.{k}" for k in rollup.key)}
              WHERE n.last_activity IS NULL OR n.last_activity < o.last_activity) lowered
        WHERE {matches}"""
    )
    touched = f"SELECT {key} FROM {new} UNION SELECT {key} FROM {old}"
    cursor.execute(f"DELETE FROM {rollup.total} WHERE ({key}) IN ({touched}) AND {rollup.empty}")
    if rollup.derived:
        cursor.execute(f"UPDATE {rollup.total} SET {rollup.derived} WHERE ({key}) IN ({touched})")


QUERY_USERS_COUNT = """
UPDATE feedback_querysummary s SET users = counted.users
FROM (SELECT q.query, count(*) AS users FROM feedback_queryuser q
      WHERE q.query IN (SELECT query FROM fold_new_feedback_queryhour
                        UNION SELECT query FROM fold_old_feedback_queryhour)
      GROUP BY q.query) counted
WHERE s.query = counted.query
"""


def run(cursor, script: str, params: dict | None = None) -> None:
    """Run a script's statements one by one (a statement with parameters must be sent alone).

    A temporary table is dropped first: inside an outer transaction (the tests') the fold's is a
    savepoint, whose release does not fire ON COMMIT DROP."""
    for statement in script.split(";\n"):
        if created := TEMP_TABLE.search(statement):
            cursor.execute(f"DROP TABLE IF EXISTS {created[1]}")
        if statement.strip():
            cursor.execute(statement, params if params is not None else {})


def recount_window(cursor) -> dict:
    cursor.execute("SELECT min(hour), max(hour) + interval '1 hour' FROM fold_hours")
    start, end = cursor.fetchone()
    return {"start": start, "end": end}


@dataclass(frozen=True)
class SummaryFold:
    """What one fold recounted."""

    hours: int
    searches: int
    everything: bool
    seconds: float


def fold_summaries(everything: bool = False) -> SummaryFold:
    """Recount the stale hours into the summaries (every hour with ``everything``, or on the first fold)."""
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        transaction_lock("feedback.summaries.fold")  # two folds at once would add the same differences
        cursor.execute("SELECT NOT EXISTS (SELECT 1 FROM feedback_summaryidentity)")
        everything = everything or cursor.fetchone()[0]
        if everything:
            for table in (*HOURLY, *TOTALS, "feedback_summaryidentity", "feedback_summarycohort"):
                cursor.execute(f"DELETE FROM {table}")
        # Only marks this statement can see are taken; one committed meanwhile waits for the next fold,
        # which recounts its hour again (a recount replaces an hour, so counting a row twice is harmless).
        run(cursor, MARK_EVERYTHING if everything else TAKE_MARKS)
        run(cursor, ARRIVALS)
        # Every hour is recounted anyway when everything is: the widening would only repeat the log's hours.
        run(cursor, ALL_MARKED_HOURS if everything else WIDEN)
        cursor.execute("SELECT count(*) FROM fold_hours")
        hours = cursor.fetchone()[0]
        if not hours:
            return SummaryFold(0, 0, everything, round(time.perf_counter() - started, 3))
        run(cursor, RECOUNT_INPUTS, recount_window(cursor))
        for hourly in HOURLY:
            replace_hours(cursor, hourly)
        for rollup in ROLLUPS:
            apply_difference(cursor, rollup)
        cursor.execute(QUERY_USERS_COUNT)
        cursor.execute("SELECT count(*) FROM fold_events")
        searches = cursor.fetchone()[0]
    return SummaryFold(hours, searches, everything, round(time.perf_counter() - started, 3))

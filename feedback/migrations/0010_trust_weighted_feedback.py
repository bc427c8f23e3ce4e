"""Trust-weighted feedback: the views that say how much each search and click counts (``feedback.trust``).

The numbers are ``feedback.trust``'s at the time of writing (a migration is frozen; changing a weight
is a new migration that replaces these views):

- an identity that is not an account starts at NEW_IDENTITY_WEIGHT 0.25 and reaches 1 linearly with
  its age (ESTABLISHED_AGE 7 days) or its earlier searches (ESTABLISHED_SEARCHES 10), whichever is further;
- identities first seen from one network on one day share NETWORK_DAILY_NEWCOMERS 5 newcomers' worth:
  beyond 5, each counts 5 / newcomers;
- a click counts once per impression, and at most DAILY_CAP_PER_QUERY_IMAGE 2 times per identity,
  normalised query, image and day; it weighs its search's trust.

The summaries gain trusted_* columns (what the ranking features read) beside the raw counts (what the
admin shows). Trusted impressions are damped for bursts only: an impression is our own log of what we
showed, and only a flood of made-up searches inflates it; clicks and examinations weigh the full trust. The raw per-(query, image) counts also stop counting an impression once per click on it.
"""

import importlib

from django.db import migrations

# Going back restores the summaries as migration 0004 made them.
PREVIOUS = importlib.import_module("feedback.migrations.0004_summaries_with_examinations").CREATE

UTILITY = "CASE WHEN scale = 'thumbs' THEN (value + 1) / 2.0 ELSE (value - 1) / 4.0 END"

CREATE = f"""
DROP MATERIALIZED VIEW IF EXISTS feedback_queryimagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;

-- Each identity's searches in order: the first one is its arrival (and its network the arrival's).
CREATE VIEW feedback_identityhistory AS
    SELECT id AS event_id, user_key, network, created_at,
           min(created_at) OVER (PARTITION BY user_key) AS first_seen,
           first_value(network) OVER (PARTITION BY user_key ORDER BY created_at, id) AS first_network,
           row_number() OVER (PARTITION BY user_key ORDER BY created_at, id) - 1 AS earlier_searches
    FROM feedback_searchevent;

-- New identities per network and day (unknown networks are not counted: nothing to damp them by).
CREATE VIEW feedback_networkarrival AS
    SELECT network, date_trunc('day', created_at) AS day, count(*) AS newcomers
    FROM feedback_identityhistory
    WHERE earlier_searches = 0 AND network <> ''
    GROUP BY network, date_trunc('day', created_at);

CREATE VIEW feedback_eventtrust AS
    SELECT h.event_id, h.user_key, h.network, h.first_network, h.first_seen, h.created_at, h.earlier_searches,
           coalesce(a.newcomers, 1) AS newcomers,
           CASE WHEN h.user_key LIKE 'account:%' THEN 1.0::float8
                ELSE (0.25 + 0.75 * least(1.0, greatest(
                          extract(epoch FROM h.created_at - h.first_seen) / (7 * 86400.0),
                          h.earlier_searches / 10.0)))::float8
           END AS identity_weight,
           CASE WHEN h.user_key LIKE 'account:%' THEN 1.0::float8
                ELSE least(1.0, 5.0 / coalesce(a.newcomers, 1))::float8
           END AS burst_weight
    FROM feedback_identityhistory h
    LEFT JOIN feedback_networkarrival a
           ON a.network = h.first_network AND a.day = date_trunc('day', h.first_seen);

-- One row per counted click (the first on its impression), weight 0 past the daily cap.
CREATE VIEW feedback_clicktrust AS
    WITH first_on_impression AS (
        SELECT DISTINCT ON (c.event_id, c.image_id)
               c.id, c.event_id, c.image_id, c.position, c.user_key, c.created_at, e.normalised_query AS query
        FROM feedback_click c JOIN feedback_searchevent e ON e.id = c.event_id
        ORDER BY c.event_id, c.image_id, c.created_at, c.id
    ), ordered AS (
        SELECT f.*, row_number() OVER (
                   PARTITION BY f.user_key, f.query, f.image_id, date_trunc('day', f.created_at)
                   ORDER BY f.created_at, f.id) AS nth_today
        FROM first_on_impression f
    )
    SELECT o.id AS click_id, o.event_id, o.image_id, o.position, o.user_key, t.network, o.query, o.created_at,
           o.nth_today,
           CASE WHEN o.nth_today <= 2 THEN t.identity_weight * t.burst_weight ELSE 0.0 END::float8 AS weight
    FROM ordered o JOIN feedback_eventtrust t ON t.event_id = o.event_id;

-- For the admin: networks whose newcomers on a day exceeded the allowance, with what they clicked most.
CREATE VIEW feedback_networkburst AS
    SELECT a.network || '/' || to_char(a.day, 'YYYY-MM-DD') AS id, a.network, a.day::date AS day, a.newcomers,
           least(1.0, 5.0 / a.newcomers)::float8 AS burst_weight,
           coalesce(clicked.clicks, 0) AS clicks,
           coalesce(clicked.top_query, '') AS top_query, clicked.top_image_id, coalesce(clicked.top_clicks, 0) AS top_clicks
    FROM feedback_networkarrival a
    LEFT JOIN LATERAL (
        SELECT sum(n) AS clicks,
               (array_agg(query ORDER BY n DESC))[1] AS top_query,
               (array_agg(image_id ORDER BY n DESC))[1] AS top_image_id,
               max(n) AS top_clicks
        FROM (SELECT ct.query, ct.image_id, count(*) AS n
              FROM feedback_clicktrust ct JOIN feedback_eventtrust t ON t.event_id = ct.event_id
              WHERE t.first_network = a.network AND date_trunc('day', t.first_seen) = a.day
              GROUP BY ct.query, ct.image_id) per_target
    ) clicked ON true
    WHERE a.newcomers > 5;

CREATE MATERIALIZED VIEW feedback_imagesummary AS
    SELECT i.id AS image_id,
           coalesce(imp.impressions, 0) AS impressions,
           coalesce(imp.examinations, 0) AS examinations,
           coalesce(cl.clicks, 0) AS clicks,
           coalesce(r.ratings, 0) AS ratings,
           r.mean_utility,
           greatest(imp.last_shown, cl.last_clicked, r.last_rated) AS last_activity,
           coalesce(imp.trusted_impressions, 0) AS trusted_impressions,
           coalesce(imp.trusted_examinations, 0) AS trusted_examinations,
           coalesce(cl.trusted_clicks, 0) AS trusted_clicks
    FROM searchapp_image i
    LEFT JOIN (SELECT im.image_id, count(*) AS impressions, sum(1.0 / im.position) AS examinations,
                      sum(t.burst_weight) AS trusted_impressions,
                      sum(t.identity_weight * t.burst_weight / im.position) AS trusted_examinations,
                      max(t.created_at) AS last_shown
               FROM feedback_impression im JOIN feedback_eventtrust t ON t.event_id = im.event_id
               GROUP BY im.image_id) imp ON imp.image_id = i.id
    LEFT JOIN (SELECT c.image_id, count(*) AS clicks, coalesce(sum(ct.weight), 0) AS trusted_clicks,
                      max(c.created_at) AS last_clicked
               FROM feedback_click c LEFT JOIN feedback_clicktrust ct ON ct.click_id = c.id
               GROUP BY c.image_id) cl ON cl.image_id = i.id
    LEFT JOIN (SELECT image_id, count(*) AS ratings, avg({UTILITY}) AS mean_utility, max(created_at) AS last_rated
               FROM feedback_rating GROUP BY image_id) r ON r.image_id = i.id
    WHERE imp.image_id IS NOT NULL OR cl.image_id IS NOT NULL OR r.image_id IS NOT NULL;
CREATE UNIQUE INDEX feedback_imagesummary_image ON feedback_imagesummary (image_id);

CREATE MATERIALIZED VIEW feedback_queryimagesummary AS
    SELECT e.normalised_query AS query, im.image_id,
           count(*) AS impressions, sum(1.0 / im.position) AS examinations,
           coalesce(sum(c.clicks), 0) AS clicks,
           sum(t.burst_weight) AS trusted_impressions,
           sum(t.identity_weight * t.burst_weight / im.position) AS trusted_examinations,
           coalesce(sum(ct.weight), 0) AS trusted_clicks
    FROM feedback_impression im
    JOIN feedback_searchevent e ON e.id = im.event_id
    JOIN feedback_eventtrust t ON t.event_id = im.event_id
    LEFT JOIN (SELECT event_id, image_id, count(*) AS clicks FROM feedback_click GROUP BY event_id, image_id) c
           ON c.event_id = im.event_id AND c.image_id = im.image_id
    LEFT JOIN (SELECT event_id, image_id, sum(weight) AS weight FROM feedback_clicktrust
               GROUP BY event_id, image_id) ct
           ON ct.event_id = im.event_id AND ct.image_id = im.image_id
    WHERE e.kind = 'text' AND e.normalised_query <> ''
    GROUP BY e.normalised_query, im.image_id;
CREATE UNIQUE INDEX feedback_queryimagesummary_key ON feedback_queryimagesummary (query, image_id);
"""

DROP = f"""
DROP MATERIALIZED VIEW IF EXISTS feedback_queryimagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;
DROP VIEW IF EXISTS feedback_networkburst;
DROP VIEW IF EXISTS feedback_clicktrust;
DROP VIEW IF EXISTS feedback_eventtrust;
DROP VIEW IF EXISTS feedback_networkarrival;
DROP VIEW IF EXISTS feedback_identityhistory;
{PREVIOUS}
"""


class Migration(migrations.Migration):
    dependencies = [("feedback", "0009_search_event_network")]

    operations = [migrations.RunSQL(CREATE, DROP)]

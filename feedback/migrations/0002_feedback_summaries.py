"""Per-image and per-query feedback summaries as materialised views (refreshed by a beat task).

They feed the admin's summary pages and, later, the ranker's image priors: one indexed read per
search instead of aggregating the event tables each time. A rating's utility puts both scales on
0-1: thumbs down 0, up 1; stars 1 -> 0 ... 5 -> 1.
"""

from django.db import migrations

UTILITY = "CASE WHEN scale = 'thumbs' THEN (value + 1) / 2.0 ELSE (value - 1) / 4.0 END"

CREATE = f"""
CREATE MATERIALIZED VIEW feedback_imagesummary AS
    SELECT i.id AS image_id,
           coalesce(imp.impressions, 0) AS impressions,
           coalesce(cl.clicks, 0) AS clicks,
           coalesce(r.ratings, 0) AS ratings,
           r.mean_utility,
           greatest(imp.last_shown, cl.last_clicked, r.last_rated) AS last_activity
    FROM searchapp_image i
    LEFT JOIN (SELECT im.image_id, count(*) AS impressions, max(e.created_at) AS last_shown
               FROM feedback_impression im JOIN feedback_searchevent e ON e.id = im.event_id
               GROUP BY im.image_id) imp ON imp.image_id = i.id
    LEFT JOIN (SELECT image_id, count(*) AS clicks, max(created_at) AS last_clicked
               FROM feedback_click GROUP BY image_id) cl ON cl.image_id = i.id
    LEFT JOIN (SELECT image_id, count(*) AS ratings, avg({UTILITY}) AS mean_utility, max(created_at) AS last_rated
               FROM feedback_rating GROUP BY image_id) r ON r.image_id = i.id
    WHERE imp.image_id IS NOT NULL OR cl.image_id IS NOT NULL OR r.image_id IS NOT NULL;
CREATE UNIQUE INDEX feedback_imagesummary_image ON feedback_imagesummary (image_id);

CREATE MATERIALIZED VIEW feedback_querysummary AS
    SELECT e.normalised_query AS query,
           count(*) AS searches,
           count(DISTINCT e.user_key) AS users,
           sum(e.result_count) AS impressions,
           coalesce(sum(c.clicks), 0) AS clicks,
           count(c.event_id) AS searches_with_click,
           coalesce(sum(r.ratings), 0) AS ratings,
           sum(r.utility_sum) / nullif(sum(r.ratings), 0) AS mean_utility,
           max(e.created_at) AS last_searched
    FROM feedback_searchevent e
    LEFT JOIN (SELECT event_id, count(*) AS clicks FROM feedback_click GROUP BY event_id) c ON c.event_id = e.id
    LEFT JOIN (SELECT event_id, count(*) AS ratings, sum({UTILITY}) AS utility_sum
               FROM feedback_rating WHERE event_id IS NOT NULL GROUP BY event_id) r ON r.event_id = e.id
    WHERE e.kind = 'text' AND e.normalised_query <> ''
    GROUP BY e.normalised_query;
CREATE UNIQUE INDEX feedback_querysummary_query ON feedback_querysummary (query);
"""

DROP = "DROP MATERIALIZED VIEW IF EXISTS feedback_querysummary; DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;"


class Migration(migrations.Migration):
    dependencies = [("feedback", "0001_initial"), ("searchapp", "0007_fill_has_captions")]

    operations = [migrations.RunSQL(CREATE, DROP)]

"""The per-image and per-(query, image) summary views, with the examination weight as a parameter.

Kept beside the migrations that create them; a later change of the views writes a new migration.
"""

UTILITY = "CASE WHEN scale = 'thumbs' THEN (value + 1) / 2.0 ELSE (value - 1) / 4.0 END"

POWER_LAW_EXAMINATIONS = "1.0 / im.position"
# The written curve at the impression's position (the last row's past its end), else the power law.
CURVE_EXAMINATIONS = (
    "coalesce((SELECT w.weight FROM feedback_examinationweight w WHERE w.position = least(im.position, "
    "(SELECT max(position) FROM feedback_examinationweight))), 1.0 / im.position)"
)


def create(examinations: str) -> str:
    return f"""
DROP MATERIALIZED VIEW IF EXISTS feedback_queryimagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;
CREATE MATERIALIZED VIEW feedback_imagesummary AS
    SELECT i.id AS image_id,
           coalesce(imp.impressions, 0) AS impressions,
           coalesce(imp.examinations, 0) AS examinations,
           coalesce(cl.clicks, 0) AS clicks,
           coalesce(r.ratings, 0) AS ratings,
           r.mean_utility,
           greatest(imp.last_shown, cl.last_clicked, r.last_rated) AS last_activity
    FROM searchapp_image i
    LEFT JOIN (SELECT im.image_id, count(*) AS impressions, sum({examinations}) AS examinations,
                      max(e.created_at) AS last_shown
               FROM feedback_impression im JOIN feedback_searchevent e ON e.id = im.event_id
               GROUP BY im.image_id) imp ON imp.image_id = i.id
    LEFT JOIN (SELECT image_id, count(*) AS clicks, max(created_at) AS last_clicked
               FROM feedback_click GROUP BY image_id) cl ON cl.image_id = i.id
    LEFT JOIN (SELECT image_id, count(*) AS ratings, avg({UTILITY}) AS mean_utility, max(created_at) AS last_rated
               FROM feedback_rating GROUP BY image_id) r ON r.image_id = i.id
    WHERE imp.image_id IS NOT NULL OR cl.image_id IS NOT NULL OR r.image_id IS NOT NULL;
CREATE UNIQUE INDEX feedback_imagesummary_image ON feedback_imagesummary (image_id);

CREATE MATERIALIZED VIEW feedback_queryimagesummary AS
    SELECT e.normalised_query AS query, im.image_id,
           count(*) AS impressions, sum({examinations}) AS examinations,
           count(DISTINCT c.id) AS clicks
    FROM feedback_impression im
    JOIN feedback_searchevent e ON e.id = im.event_id
    LEFT JOIN feedback_click c ON c.event_id = im.event_id AND c.image_id = im.image_id
    WHERE e.kind = 'text' AND e.normalised_query <> ''
    GROUP BY e.normalised_query, im.image_id;
CREATE UNIQUE INDEX feedback_queryimagesummary_key ON feedback_queryimagesummary (query, image_id);
"""

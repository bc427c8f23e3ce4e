"""The feedback retrieval channel's tables (feedback.click_graph): each query's chosen images, and past queries' vectors.

``feedback_querytopimage`` is a materialised view refreshed with the summaries (feedback.summaries): per
normalised query, the images its users chose, scored by the debiased click rate smoothed toward the
collection's (a Beta prior of PRIOR_STRENGTH 20 pseudo-examinations, ranking.features' strength), kept only
when trusted users worth at least MIN_TRUSTED_USERS 3 chose it and its rate beats the collection's, at most
TOP_PER_QUERY 50 per query. Everything counts by feedback.trust's weights (migration 0010's views), each
identity at most once per (query, image) (its most trusted vote), and nothing of an erased user (the
``ErasedUser`` fence of feedback.erasure). A good rating given on a search (utility >= 0.75) is a vote too.

The numbers are frozen here as the trust views' are; ``feedback.click_graph`` repeats them and
``tests/integration/feedback/test_click_graph.py`` pins them.

``feedback_pastquery`` holds one vector per (encoder version, normalised query) for the queries in the
view, written by the refresh; each version gets a partial HNSW index (feedback.click_graph). No foreign key to
the version: Django's test flush truncates the tables it manages and would refuse one that an unmanaged table
references; the refresh deletes the vectors of versions that are gone.
"""

from django.db import migrations

from feedback.migrations import _summary_views as views

UTILITY = views.UTILITY.replace("scale", "r.scale").replace("value", "r.value")
ERASED = (
    "NOT EXISTS (SELECT 1 FROM feedback_eraseduser erased "
    "WHERE erased.key_digest = encode(sha256(convert_to(e.user_key, 'UTF8')), 'hex') "
    "AND e.created_at <= erased.erased_at + interval '60 seconds')"
)

CREATE = f"""
CREATE MATERIALIZED VIEW feedback_querytopimage AS
WITH prior AS (
    SELECT coalesce(sum(trusted_clicks) / nullif(sum(trusted_examinations), 0), 0.1)::float8 AS rate
    FROM feedback_imagesummary
), shown AS (
    SELECT e.normalised_query AS query, im.image_id,
           sum(t.identity_weight * t.burst_weight * {views.CURVE_EXAMINATIONS})::float8 AS examinations
    FROM feedback_impression im
    JOIN feedback_searchevent e ON e.id = im.event_id
    JOIN feedback_eventtrust t ON t.event_id = im.event_id
    WHERE e.kind = 'text' AND e.normalised_query <> '' AND {ERASED}
    GROUP BY e.normalised_query, im.image_id
), votes AS (
    SELECT ct.query, ct.image_id, ct.user_key, ct.weight
    FROM feedback_clicktrust ct JOIN feedback_searchevent e ON e.id = ct.event_id
    WHERE ct.weight > 0 AND e.kind = 'text' AND e.normalised_query <> '' AND {ERASED}
    UNION ALL
    SELECT e.normalised_query, r.image_id, r.user_key, t.identity_weight * t.burst_weight
    FROM feedback_rating r
    JOIN feedback_searchevent e ON e.id = r.event_id
    JOIN feedback_eventtrust t ON t.event_id = e.id
    WHERE {UTILITY} >= 0.75 AND e.kind = 'text' AND e.normalised_query <> '' AND {ERASED}
), voters AS (
    SELECT query, image_id, user_key, max(weight) AS vote FROM votes GROUP BY query, image_id, user_key
), chosen AS (
    SELECT query, image_id, sum(vote)::float8 AS trusted_users FROM voters GROUP BY query, image_id
), scored AS (
    SELECT c.query, c.image_id, c.trusted_users, coalesce(s.examinations, 0) AS examinations,
           (c.trusted_users + 20.0 * p.rate) / (coalesce(s.examinations, 0) + 20.0) AS rate, p.rate AS prior
    FROM chosen c CROSS JOIN prior p
    LEFT JOIN shown s ON s.query = c.query AND s.image_id = c.image_id
    WHERE c.trusted_users >= 3.0
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY query ORDER BY rate DESC, image_id) AS rank
    FROM scored WHERE rate > prior
)
SELECT query, image_id, rank, trusted_users, examinations, rate, (rate - prior)::float8 AS lift
FROM ranked WHERE rank <= 50;
CREATE UNIQUE INDEX feedback_querytopimage_key ON feedback_querytopimage (query, image_id);
CREATE INDEX feedback_querytopimage_rank ON feedback_querytopimage (query, rank);

CREATE TABLE feedback_pastquery (
    encoder_version_id bigint NOT NULL,
    query text NOT NULL,
    vector vector NOT NULL,
    PRIMARY KEY (encoder_version_id, query)
);
ALTER TABLE feedback_pastquery ALTER COLUMN vector SET STORAGE MAIN;
"""

DROP = """
DROP TABLE IF EXISTS feedback_pastquery;
DROP MATERIALIZED VIEW IF EXISTS feedback_querytopimage;
"""


class Migration(migrations.Migration):
    dependencies = [("feedback", "0017_incremental_summaries"), ("searchapp", "0014_near_duplicates")]

    operations = [migrations.RunSQL(CREATE, DROP)]

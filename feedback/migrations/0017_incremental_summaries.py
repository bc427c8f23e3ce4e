"""The feedback summaries become tables folded from hourly rollups, recounting only the hours that changed.

Until now the three summaries were materialised views that ``REFRESH ... CONCURRENTLY`` recomputed
over the whole log (issue 21, item 3). They are now plain tables with the same names and columns
(``feedback.summary_fold`` keeps them), beside:

- hourly rollups (``feedback_imagehour``, ``feedback_queryimagehour``, ``feedback_queryhour``): what the
  searches of one UTC hour (and the ratings made in it) contribute to each summary row;
- ``feedback_queryuser``: searches per (query, user), so a query's distinct users add up across hours;
- ``feedback_summaryidentity`` and ``feedback_summarycohort``: each identity's arrival (first search, its
  network and day) and the newcomers per (network, day), the inputs of the trust weights that are not
  local to one hour (``feedback.trust``);
- ``feedback_summarystale``: marks written by triggers whenever a search, a click or a rating is written,
  changed or deleted (erasure included), naming the hour, the user and when the change happened.

Going back recreates the views as migrations 0012 (image, query-image) and 0002 (query) made them.
"""

import importlib

from django.db import migrations

TRUSTED = importlib.import_module("feedback.migrations.0012_trusted_summaries_with_the_curve")
FIRST = importlib.import_module("feedback.migrations.0002_feedback_summaries").CREATE
QUERY_VIEW = FIRST[FIRST.index("CREATE MATERIALIZED VIEW feedback_querysummary") :]

MARK = """
CREATE TABLE feedback_summarystale (
    id bigserial PRIMARY KEY,
    hour timestamptz NOT NULL,
    user_key varchar(200) NOT NULL,
    at timestamptz NOT NULL
);

-- A search marks its own hour; a click its search's hour; a rating its own hour (the image summary counts
-- it there) and its search's (the query summary counts it with the search). ``at`` is when the changed
-- row is dated: the fold recounts the user's searches and clicks from then on, whose trust it may move.
CREATE FUNCTION feedback_mark_summary_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'feedback_searchevent' THEN
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO feedback_summarystale (hour, user_key, at)
            VALUES (date_trunc('hour', NEW.created_at, 'UTC'), NEW.user_key, NEW.created_at);
        END IF;
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO feedback_summarystale (hour, user_key, at)
            VALUES (date_trunc('hour', OLD.created_at, 'UTC'), OLD.user_key, OLD.created_at);
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO feedback_summarystale (hour, user_key, at)
        SELECT date_trunc('hour', e.created_at, 'UTC'), NEW.user_key, NEW.created_at
        FROM feedback_searchevent e WHERE e.id = NEW.event_id;
        IF TG_TABLE_NAME = 'feedback_rating' THEN
            INSERT INTO feedback_summarystale (hour, user_key, at)
            VALUES (date_trunc('hour', NEW.created_at, 'UTC'), NEW.user_key, NEW.created_at);
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO feedback_summarystale (hour, user_key, at)
        SELECT date_trunc('hour', e.created_at, 'UTC'), OLD.user_key, OLD.created_at
        FROM feedback_searchevent e WHERE e.id = OLD.event_id;
        IF TG_TABLE_NAME = 'feedback_rating' THEN
            INSERT INTO feedback_summarystale (hour, user_key, at)
            VALUES (date_trunc('hour', OLD.created_at, 'UTC'), OLD.user_key, OLD.created_at);
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER summary_stale AFTER INSERT OR UPDATE OR DELETE ON feedback_searchevent
    FOR EACH ROW EXECUTE FUNCTION feedback_mark_summary_stale();
CREATE TRIGGER summary_stale AFTER INSERT OR UPDATE OR DELETE ON feedback_click
    FOR EACH ROW EXECUTE FUNCTION feedback_mark_summary_stale();
CREATE TRIGGER summary_stale AFTER INSERT OR UPDATE OR DELETE ON feedback_rating
    FOR EACH ROW EXECUTE FUNCTION feedback_mark_summary_stale();
-- A deleted image leaves the rollups and the summaries together (the sums stay equal). A trigger rather
-- than foreign keys: Django's test flush truncates searchapp_image, which a referencing table would refuse.
CREATE FUNCTION feedback_forget_summary_image() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM feedback_imagehour WHERE image_id = OLD.id;
    DELETE FROM feedback_queryimagehour WHERE image_id = OLD.id;
    DELETE FROM feedback_imagesummary WHERE image_id = OLD.id;
    DELETE FROM feedback_queryimagesummary WHERE image_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER summary_image_gone AFTER DELETE ON searchapp_image
    FOR EACH ROW EXECUTE FUNCTION feedback_forget_summary_image();
-- Every search already logged is folded by the first fold (an empty feedback_imagehour means "never folded").
"""

TABLES = """
DROP MATERIALIZED VIEW IF EXISTS feedback_queryimagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_querysummary;

CREATE TABLE feedback_summaryidentity (
    user_key varchar(200) PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    first_network varchar(16) NOT NULL,
    first_day timestamptz NOT NULL
);
CREATE INDEX feedback_summaryidentity_cohort ON feedback_summaryidentity (first_network, first_day);
CREATE TABLE feedback_summarycohort (
    network varchar(16) NOT NULL,
    day timestamptz NOT NULL,
    newcomers bigint NOT NULL,
    PRIMARY KEY (network, day)
);

CREATE TABLE feedback_imagehour (
    hour timestamptz NOT NULL,
    image_id bigint NOT NULL,
    impressions bigint NOT NULL, examinations float8 NOT NULL,
    trusted_impressions float8 NOT NULL, trusted_examinations float8 NOT NULL,
    clicks bigint NOT NULL, trusted_clicks float8 NOT NULL,
    ratings bigint NOT NULL, utility_sum float8 NOT NULL,
    last_activity timestamptz,
    PRIMARY KEY (hour, image_id)
);
CREATE INDEX feedback_imagehour_image ON feedback_imagehour (image_id);
CREATE TABLE feedback_queryimagehour (
    hour timestamptz NOT NULL,
    query varchar(500) NOT NULL,
    image_id bigint NOT NULL,
    impressions bigint NOT NULL, examinations float8 NOT NULL, clicks bigint NOT NULL,
    trusted_impressions float8 NOT NULL, trusted_examinations float8 NOT NULL, trusted_clicks float8 NOT NULL,
    last_activity timestamptz,
    PRIMARY KEY (hour, query, image_id)
);
CREATE INDEX feedback_queryimagehour_image ON feedback_queryimagehour (image_id);
CREATE TABLE feedback_queryhour (
    hour timestamptz NOT NULL,
    query varchar(500) NOT NULL,
    user_key varchar(200) NOT NULL,
    searches bigint NOT NULL, impressions bigint NOT NULL, clicks bigint NOT NULL,
    searches_with_click bigint NOT NULL, ratings bigint NOT NULL, utility_sum float8 NOT NULL,
    last_activity timestamptz,
    PRIMARY KEY (hour, query, user_key)
);
CREATE INDEX feedback_queryhour_query ON feedback_queryhour (query);

-- The summaries, under the names (and with the columns) the features and the admin read.
CREATE TABLE feedback_imagesummary (
    image_id bigint PRIMARY KEY,
    impressions bigint NOT NULL, examinations float8 NOT NULL, clicks bigint NOT NULL,
    ratings bigint NOT NULL, utility_sum float8 NOT NULL, mean_utility float8,
    last_activity timestamptz,
    trusted_impressions float8 NOT NULL, trusted_examinations float8 NOT NULL, trusted_clicks float8 NOT NULL
);
CREATE TABLE feedback_queryimagesummary (
    query varchar(500) NOT NULL,
    image_id bigint NOT NULL,
    impressions bigint NOT NULL, examinations float8 NOT NULL, clicks bigint NOT NULL,
    trusted_impressions float8 NOT NULL, trusted_examinations float8 NOT NULL, trusted_clicks float8 NOT NULL,
    last_activity timestamptz,
    PRIMARY KEY (query, image_id)
);
CREATE INDEX feedback_queryimagesummary_image ON feedback_queryimagesummary (image_id);
CREATE TABLE feedback_querysummary (
    query varchar(500) PRIMARY KEY,
    searches bigint NOT NULL, users bigint NOT NULL DEFAULT 0, impressions bigint NOT NULL, clicks bigint NOT NULL,
    searches_with_click bigint NOT NULL, ratings bigint NOT NULL, utility_sum float8 NOT NULL,
    mean_utility float8, last_searched timestamptz
);
CREATE TABLE feedback_queryuser (
    query varchar(500) NOT NULL,
    user_key varchar(200) NOT NULL,
    searches bigint NOT NULL,
    last_activity timestamptz,
    PRIMARY KEY (query, user_key)
);
"""

UNDO = f"""
DROP TRIGGER IF EXISTS summary_image_gone ON searchapp_image;
DROP FUNCTION IF EXISTS feedback_forget_summary_image();
DROP TRIGGER IF EXISTS summary_stale ON feedback_rating;
DROP TRIGGER IF EXISTS summary_stale ON feedback_click;
DROP TRIGGER IF EXISTS summary_stale ON feedback_searchevent;
DROP FUNCTION IF EXISTS feedback_mark_summary_stale();
DROP TABLE IF EXISTS feedback_summarystale, feedback_summaryidentity, feedback_summarycohort, feedback_imagehour,
    feedback_queryimagehour, feedback_queryhour, feedback_imagesummary, feedback_queryimagesummary,
    feedback_querysummary, feedback_queryuser;
{TRUSTED.WITH_CURVE}
{QUERY_VIEW}
"""


class Migration(migrations.Migration):
    dependencies = [("feedback", "0016_refold_day_users")]

    operations = [migrations.RunSQL(TABLES + MARK, UNDO)]

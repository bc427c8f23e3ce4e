"""The feedback channel's top lists (0018) leave out a taken-down image's detached votes (image NULL, 0019).

Without this, the clicks and good ratings of every image taken down for a query pool into one NULL "image"
that can take one of the query's TOP_PER_QUERY places (tests/integration/collection/test_takedown.py).
The view is made again from 0018's text with that one condition added; nothing else changes.
"""

import importlib

from django.db import migrations

CHANNEL = importlib.import_module("feedback.migrations.0018_feedback_channel").CREATE
OLD_VIEW = CHANNEL[: CHANNEL.index("CREATE TABLE feedback_pastquery")]
CHOSEN = "SELECT query, image_id, sum(vote)::float8 AS trusted_users FROM voters GROUP BY query, image_id"
KEPT = CHOSEN.replace("FROM voters GROUP BY", "FROM voters WHERE image_id IS NOT NULL GROUP BY")
if CHOSEN not in OLD_VIEW:
    raise ValueError("0018's top-list view changed: say again where detached votes are left out")
DROP = "DROP MATERIALIZED VIEW IF EXISTS feedback_querytopimage;\n"


class Migration(migrations.Migration):
    dependencies = [("feedback", "0019_detached_feedback")]

    operations = [migrations.RunSQL(DROP + OLD_VIEW.replace(CHOSEN, KEPT), DROP + OLD_VIEW)]

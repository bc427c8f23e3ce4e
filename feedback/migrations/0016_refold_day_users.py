"""Mark every logged hour stale, so the next fold writes the new DayUsers rows for days folded before 0015."""

from django.db import migrations

MARK_ALL = """
INSERT INTO feedback_stalesearchhour (hour)
SELECT DISTINCT date_trunc('hour', created_at, 'UTC') FROM feedback_searchevent
"""


class Migration(migrations.Migration):
    dependencies = [("feedback", "0015_day_user_sets")]

    operations = [migrations.RunSQL(MARK_ALL, migrations.RunSQL.noop)]

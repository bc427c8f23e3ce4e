"""Data migration: fill the full-text documents of images that existed before the text channel."""

from django.conf import settings
from django.db import migrations

FILL_SQL = """
UPDATE searchapp_image AS i SET text_document =
    setweight(to_tsvector(%(config)s::regconfig, array_to_string(i.tags, ' ')), 'A')
    || setweight(to_tsvector(%(config)s::regconfig, coalesce(
        (SELECT string_agg(c.text, ' ' ORDER BY c.position) FROM searchapp_caption c WHERE c.image_id = i.id), ''
    )), 'B')
"""


def fill(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(FILL_SQL, {"config": settings.LOUPE_FTS_CONFIG})


class Migration(migrations.Migration):
    dependencies = [("searchapp", "0002_text_channel")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]

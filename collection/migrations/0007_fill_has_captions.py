"""Data migration: mark the images that already have captions (see 0006)."""

from django.db import migrations


def fill(apps, schema_editor):
    schema_editor.execute(
        "UPDATE searchapp_image i SET has_captions = true "
        "WHERE EXISTS (SELECT 1 FROM searchapp_caption c WHERE c.image_id = i.id)"
    )


class Migration(migrations.Migration):
    dependencies = [("searchapp", "0006_image_has_captions")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("searchapp", "0016_catalogue_listing_tombstones"),
    ]

    operations = [
        migrations.AddField(
            model_name="fusionsetting",
            name="normalisation",
            field=models.CharField(default="max", max_length=16),
        ),
    ]

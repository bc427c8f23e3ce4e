from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("ranking", "0004_attempt_base"),
    ]

    operations = [
        migrations.AddField(
            model_name="experiment",
            name="statistics",
            field=models.CharField(
                choices=[
                    ("sequential", "always valid (mSPRT): safe to read at any time"),
                    ("fixed", "fixed horizon: valid only when read once, at a sample size planned in advance"),
                ],
                default="sequential",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="experiment",
            name="expected_effect",
            field=models.FloatField(
                default=0.1,
                help_text="Relative effect the sequential test is tuned for (0.1 = 10%); see docs/experiments.md.",
            ),
        ),
    ]

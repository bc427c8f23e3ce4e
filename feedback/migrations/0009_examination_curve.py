"""Summaries count examinations with the curve training uses, once one is written (issue 17, finding 7).

Until now an impression at position p counted 1/p examinations in the summary views while training
weighted clicks by the swap-estimated curve. The views now read ``feedback_examinationweight``
(position -> weight); with no rows they count 1/p as before. A position past the last row takes the
last row's weight.
"""

from django.db import migrations, models

from feedback.migrations import _summary_views as views


class Migration(migrations.Migration):
    dependencies = [("feedback", "0008_api_key_experiments_scope")]

    operations = [
        migrations.CreateModel(
            name="ExaminationWeight",
            fields=[
                ("position", models.PositiveIntegerField(primary_key=True, serialize=False)),
                ("weight", models.FloatField()),
            ],
            options={"ordering": ["position"]},
        ),
        migrations.RunSQL(views.create(views.CURVE_EXAMINATIONS), views.create(views.POWER_LAW_EXAMINATIONS)),
    ]

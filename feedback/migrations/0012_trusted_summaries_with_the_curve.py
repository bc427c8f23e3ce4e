"""The trust-weighted summaries (0010) count examinations with the written curve (0009_examination_curve).

Two changes landed side by side: one made the summary views read ``feedback_examinationweight`` (the
curve training uses, 1/position until one is written), the other rebuilt the views with trust-weighted
columns, still at 1/position. This rebuilds the trust-weighted summaries with the curve, in both the
raw and the trusted examination counts.
"""

import importlib

from django.db import migrations

from feedback.migrations import _summary_views as views

TRUST = importlib.import_module("feedback.migrations.0010_trust_weighted_feedback").CREATE
SUMMARIES = TRUST[TRUST.index("CREATE MATERIALIZED VIEW feedback_imagesummary") :]
DROP_SUMMARIES = """
DROP MATERIALIZED VIEW IF EXISTS feedback_queryimagesummary;
DROP MATERIALIZED VIEW IF EXISTS feedback_imagesummary;
"""
WITH_CURVE = SUMMARIES.replace("sum(1.0 / im.position)", f"sum({views.CURVE_EXAMINATIONS})").replace(
    "sum(t.identity_weight * t.burst_weight / im.position)",
    f"sum(t.identity_weight * t.burst_weight * {views.CURVE_EXAMINATIONS})",
)
assert WITH_CURVE.count("feedback_examinationweight") == 8, "every examination count must read the curve"


class Migration(migrations.Migration):
    dependencies = [("feedback", "0011_network_burst_model"), ("feedback", "0009_examination_curve")]

    operations = [migrations.RunSQL(DROP_SUMMARIES + WITH_CURVE, DROP_SUMMARIES + SUMMARIES)]

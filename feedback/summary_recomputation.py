"""The summaries as the materialised views of migrations 0012 and 0002 computed them, over the whole log.

The fold (``feedback.summary_fold``) must give the same numbers: the tests pin it against these views,
and ``bench/summary_refresh.py`` measures today's ``REFRESH ... CONCURRENTLY`` of them as its baseline.
They are created under other names (``<summary><suffix>``) so they sit beside the folded tables.
"""

from __future__ import annotations

import importlib
import time

from django.db import connection

TRUSTED = importlib.import_module("feedback.migrations.0012_trusted_summaries_with_the_curve").WITH_CURVE
FIRST = importlib.import_module("feedback.migrations.0002_feedback_summaries").CREATE
QUERY_VIEW = FIRST[FIRST.index("CREATE MATERIALIZED VIEW feedback_querysummary") :]
SUMMARIES = ("feedback_imagesummary", "feedback_queryimagesummary", "feedback_querysummary")


# A taken-down image's impressions stay with the image NULL (collection.takedown); they summarise no image,
# in the fold as here (the per-image view already joins the images).
GROUPED_BY_IMAGE = "WHERE e.kind = 'text' AND e.normalised_query <> ''\n    GROUP BY e.normalised_query, im.image_id"
KEPT_IMAGES = GROUPED_BY_IMAGE.replace("<> ''", "<> '' AND im.image_id IS NOT NULL", 1)


def full_views_sql(suffix: str) -> str:
    if GROUPED_BY_IMAGE not in TRUSTED:
        raise ValueError("the query-image view's SQL changed: say again how it leaves detached rows out")
    sql = TRUSTED.replace(GROUPED_BY_IMAGE, KEPT_IMAGES) + QUERY_VIEW
    for name in SUMMARIES:
        sql = sql.replace(name, name + suffix)
    return sql


def create_full_views(suffix: str = "_full") -> None:
    with connection.cursor() as cursor:
        for name in SUMMARIES:
            cursor.execute(f"DROP MATERIALIZED VIEW IF EXISTS {name}{suffix}")
        cursor.execute(full_views_sql(suffix))


def refresh_full_views(suffix: str = "_full") -> float:
    """Today's refresh of the three views; seconds taken."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        for name in SUMMARIES:
            cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {name}{suffix}")
    return time.perf_counter() - started

"""Refresh the feedback summary views (per image, per query, per query and image)."""

from __future__ import annotations

import time

from django.db import connection

from feedback.models import ImageFeedbackSummary, QueryFeedbackSummary

# The per-(query, image) view has no model of its own: features read it by this name.
QUERY_IMAGE_SUMMARY_VIEW = "feedback_queryimagesummary"
VIEWS = (ImageFeedbackSummary._meta.db_table, QueryFeedbackSummary._meta.db_table, QUERY_IMAGE_SUMMARY_VIEW)


def refresh_summaries() -> dict[str, float]:
    """Recompute both summaries; readers keep seeing the previous version meanwhile. Returns seconds taken."""
    took = {}
    with connection.cursor() as cursor:
        for view in VIEWS:
            started = time.perf_counter()
            cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
            took[view] = round(time.perf_counter() - started, 3)
    return took

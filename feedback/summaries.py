"""Refresh the feedback summary views (per image, per query, per query and image)."""

from __future__ import annotations

import time

from django.db import connection

VIEWS = ("feedback_imagesummary", "feedback_querysummary", "feedback_queryimagesummary")


def refresh_summaries() -> dict[str, float]:
    """Recompute both summaries; readers keep seeing the previous version meanwhile. Returns seconds taken."""
    took = {}
    with connection.cursor() as cursor:
        for view in VIEWS:
            started = time.perf_counter()
            cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
            took[view] = round(time.perf_counter() - started, 3)
    return took

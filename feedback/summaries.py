"""Refresh the feedback summary views (per image, per query, per query and image) and the feedback channel's
top lists with their past-query vectors (``feedback.click_graph``).

Examinations (the denominators of the click rates the ranker's features read) are impressions weighted
by the examination curve in ``ExaminationWeight``: the caller that knows the curve passes it
(``ranking.summaries`` passes the swap-estimated one that training weights clicks by); with none ever
written, the views count 1/position. ``examination_curve`` says which one the summaries use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from django.db import connection, transaction

from collection.versions import serving_version
from feedback.click_graph import TOP_VIEW, refresh_past_queries
from feedback.models import ExaminationWeight, ImageFeedbackSummary, QueryFeedbackSummary

# The per-(query, image) view has no model of its own: features read it by this name.
QUERY_IMAGE_SUMMARY_VIEW = "feedback_queryimagesummary"
# In this order: the feedback channel's top lists (feedback.click_graph) smooth toward the per-image view's rate.
VIEWS = (ImageFeedbackSummary._meta.db_table, QueryFeedbackSummary._meta.db_table, QUERY_IMAGE_SUMMARY_VIEW, TOP_VIEW)


class BadExaminationCurve(ValueError):
    """A curve the summaries cannot count by: empty, or a weight that is not in [0, 1]."""


def examination_curve() -> str:
    """Which examination weights the summaries count: the written curve or the 1/position prior."""
    positions = ExaminationWeight.objects.count()
    return f"written curve ({positions} positions)" if positions else "1/position (no curve written)"


def write_examination_curve(weights: Sequence[float]) -> None:
    """Replace the examination curve: ``weights[p - 1]`` is the chance position p is examined."""
    values = [float(w) for w in weights]
    if not values or any(not math.isfinite(w) or not 0.0 <= w <= 1.0 for w in values):
        raise BadExaminationCurve("An examination curve needs at least one position, each weight in [0, 1].")
    with transaction.atomic():
        ExaminationWeight.objects.all().delete()
        ExaminationWeight.objects.bulk_create(
            ExaminationWeight(position=p, weight=w) for p, w in enumerate(values, start=1)
        )


def refresh_summaries(examination: Sequence[float] | None = None) -> dict[str, float]:
    """Recompute the summaries (with ``examination`` as the new curve when given); readers keep seeing the
    previous version meanwhile. Returns seconds taken per view."""
    if examination is not None:
        write_examination_curve(examination)
    took = {}
    with connection.cursor() as cursor:
        for view in VIEWS:
            started = time.perf_counter()
            cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")
            took[view] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    choice, version = serving_version()
    refresh_past_queries(choice.encoder, version)  # the channel's past-query vectors follow its top lists
    took["past_queries"] = round(time.perf_counter() - started, 3)
    return took

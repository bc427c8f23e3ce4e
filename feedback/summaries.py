"""Refresh the feedback summaries (per image, per query, per query and image) and the feedback channel's
top lists with their past-query vectors (``feedback.click_graph``).

The summaries are tables folded from hourly rollups (``feedback.summary_fold``): a refresh recounts
the hours that changed since the last one. A new examination curve changes every examination ever
counted, so writing one recounts everything; the curve is therefore rewritten only when some weight
moved by more than ``CURVE_TOLERANCE`` (relative), not at every refresh. The channel's top lists are
still a materialised view over the log, refreshed after the fold (they smooth toward its per-image rates).

Examinations (the denominators of the click rates the ranker's features read) are impressions weighted
by the examination curve in ``ExaminationWeight``: the caller that knows the curve passes it
(``ranking.summaries`` passes the swap-estimated one that training weights clicks by); with none ever
written, the views count 1/position. ``examination_curve`` says which one the summaries use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict

from django.db import connection, transaction

from collection.versions import serving_version
from feedback.click_graph import TOP_VIEW, refresh_past_queries
from feedback.models import ExaminationWeight, ImageFeedbackSummary, QueryFeedbackSummary
from feedback.summary_fold import fold_summaries

# The per-(query, image) view has no model of its own: features read it by this name.
QUERY_IMAGE_SUMMARY_VIEW = "feedback_queryimagesummary"
VIEWS = (ImageFeedbackSummary._meta.db_table, QueryFeedbackSummary._meta.db_table, QUERY_IMAGE_SUMMARY_VIEW)


# A re-estimated curve within 1% of the written one at every position is not written: writing one recounts
# the whole history, and the swap estimate moves a little with every new swapped click. 1% is a choice,
# not a measurement: it moves a click rate the features read by at most 1%.
CURVE_TOLERANCE = 0.01


class BadExaminationCurve(ValueError):
    """A curve the summaries cannot count by: empty, or a weight that is not in [0, 1]."""


def examination_curve() -> str:
    """Which examination weights the summaries count: the written curve or the 1/position prior."""
    positions = ExaminationWeight.objects.count()
    return f"written curve ({positions} positions)" if positions else "1/position (no curve written)"


def write_examination_curve(weights: Sequence[float]) -> bool:
    """Replace the examination curve: ``weights[p - 1]`` is the chance position p is examined.

    Returns whether it was written: a curve within ``CURVE_TOLERANCE`` of the written one is not."""
    values = [float(w) for w in weights]
    if not values or any(not math.isfinite(w) or not 0.0 <= w <= 1.0 for w in values):
        raise BadExaminationCurve("An examination curve needs at least one position, each weight in [0, 1].")
    written = list(ExaminationWeight.objects.order_by("position").values_list("weight", flat=True))
    if len(written) == len(values) and all(
        abs(w - old) <= CURVE_TOLERANCE * old for w, old in zip(values, written, strict=True)
    ):
        return False
    with transaction.atomic():
        ExaminationWeight.objects.all().delete()
        ExaminationWeight.objects.bulk_create(
            ExaminationWeight(position=p, weight=w) for p, w in enumerate(values, start=1)
        )
    return True


def refresh_summaries(examination: Sequence[float] | None = None) -> dict:
    """Fold what changed into the summaries (with ``examination`` as the new curve when given: a curve that
    moved recounts everything), then refresh the feedback channel's top lists and past-query vectors.
    Returns what the fold recounted and how long each step took."""
    new_curve = examination is not None and write_examination_curve(examination)
    done = asdict(fold_summaries(everything=new_curve))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {TOP_VIEW}")
    done["top_lists_seconds"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    choice, version = serving_version()
    refresh_past_queries(choice.encoder, version)  # the channel's past-query vectors follow its top lists
    done["past_queries_seconds"] = round(time.perf_counter() - started, 3)
    return done

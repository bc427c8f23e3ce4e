"""The summaries' examinations: 1/position until a curve is written, then that curve (its last weight beyond)."""

import pytest
from django.db import connection

from feedback.models import ExaminationWeight, ImageFeedbackSummary
from feedback.summaries import (
    QUERY_IMAGE_SUMMARY_VIEW,
    BadExaminationCurve,
    examination_curve,
    refresh_summaries,
)

pytestmark = pytest.mark.django_db


def examinations_by_position(response) -> dict[int, tuple[float, float]]:
    """position -> (the image summary's examinations, the (query, image) summary's), for one logged search."""
    image = dict(ImageFeedbackSummary.objects.values_list("image_id", "examinations"))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT image_id, examinations FROM {QUERY_IMAGE_SUMMARY_VIEW} WHERE query = 'a test picture'")
        query_image = dict(cursor.fetchall())
    return {h.position: (float(image[h.image.pk]), float(query_image[h.image.pk])) for h in response.hits}


def test_without_a_curve_an_impression_counts_one_over_its_position(logged_search):
    refresh_summaries()
    counted = examinations_by_position(logged_search)
    assert {p: both for p, both in counted.items()} == {p: pytest.approx((1 / p, 1 / p)) for p in range(1, 7)}
    assert examination_curve() == "1/position (no curve written)"


def test_a_written_curve_replaces_it_and_its_last_weight_carries_on(logged_search):
    refresh_summaries([1.0, 0.9, 0.8, 0.5])
    counted = examinations_by_position(logged_search)
    expected = {1: 1.0, 2: 0.9, 3: 0.8, 4: 0.5, 5: 0.5, 6: 0.5}
    assert counted == {p: pytest.approx((w, w)) for p, w in expected.items()}
    assert examination_curve() == "written curve (4 positions)"
    refresh_summaries()  # a refresh without a curve (the admin's button) keeps the written one
    assert examinations_by_position(logged_search)[2] == pytest.approx((0.9, 0.9))


@pytest.mark.parametrize("curve", [[], [1.0, 1.5], [1.0, -0.1], [1.0, float("nan")]])
def test_a_bad_curve_is_refused_and_the_previous_one_stays(logged_search, curve):
    refresh_summaries([1.0, 0.7])
    with pytest.raises(BadExaminationCurve, match=r"each weight in \[0, 1\]"):
        refresh_summaries(curve)
    assert list(ExaminationWeight.objects.values_list("position", "weight")) == [(1, 1.0), (2, 0.7)]
    assert examinations_by_position(logged_search)[2] == pytest.approx((0.7, 0.7))

"""The product's summary refresh counts examinations by the curve training weights clicks by."""

import pytest

from feedback.models import ImageFeedbackSummary
from ranking.summaries import refresh_with_estimated_curve
from ranking.training_data import estimated_propensity
from searchapp.search import SearchRequest
from tests.integration.feedback.conftest import ALICE

pytestmark = pytest.mark.django_db


def test_the_summaries_use_the_training_curve_not_one_over_position(service, collection, settings):
    settings.LOUPE_PROPENSITY_EXPONENT = 0.5  # an image grid: deeper positions are seen more than 1/p says
    response = service.search(SearchRequest(text="a test picture", page_size=6), ALICE)
    outcome = refresh_with_estimated_curve()
    assert outcome["examination_curve"] == "power-law prior (too few swaps yet)"
    curve = estimated_propensity(None, settings.LOUPE_MAX_CANDIDATES, settings.LOUPE_SWAP_MAX_POSITION)
    counted = dict(ImageFeedbackSummary.objects.values_list("image_id", "examinations"))
    for hit in response.hits:
        assert counted[hit.image.pk] == pytest.approx(curve.at(hit.position))
    assert counted[response.hits[3].image.pk] == pytest.approx(4**-0.5)  # not 1/4

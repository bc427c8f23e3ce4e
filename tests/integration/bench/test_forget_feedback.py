"""Seeds of the learning simulation are independent: ``forget_feedback`` leaves nothing of the previous one."""

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache

from bench.simulate_learning import forget_feedback
from feedback.capture import ClickInput, record_click
from feedback.models import ExaminationWeight, ImageFeedbackSummary, SearchEvent
from feedback.summaries import refresh_summaries
from ranking.features import COLLECTION_RATES_KEY, collection_rates
from ranking.propensity import power_law
from searchapp.result_cache import result_cache
from searchapp.search import SearchRequest
from tests.integration.feedback.conftest import ALICE

pytestmark = pytest.mark.django_db


def test_forget_feedback_clears_the_logs_the_caches_and_the_examination_curve(service, collection, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 600
    result_cache.forget()
    response = service.search(SearchRequest(text="a test picture", page_size=6), ALICE)
    record_click(ALICE, ClickInput(str(response.event_id), response.hits[1].image.pk, 2, "seed-1"))
    refresh_summaries([1.0, 0.3])  # the previous seed's estimated curve
    collection_rates()  # cached for 5 minutes
    assert len(result_cache) and cache.get(COLLECTION_RATES_KEY) is not None and ImageFeedbackSummary.objects.exists()
    forget_feedback()
    assert not SearchEvent.objects.exists() and not ImageFeedbackSummary.objects.exists()
    assert len(result_cache) == 0  # the next seed computes its own orders
    assert cache.get(COLLECTION_RATES_KEY) is None  # and its own collection click rate
    prior = power_law(django_settings.LOUPE_MAX_CANDIDATES, django_settings.LOUPE_PROPENSITY_EXPONENT)
    weights = list(ExaminationWeight.objects.values_list("weight", flat=True))
    assert weights == pytest.approx(prior.values.tolist())  # the prior again, not the previous seed's curve

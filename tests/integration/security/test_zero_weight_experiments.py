"""Finding 8 of issue 19 (second half): an A/B experiment whose arms weigh 0 cannot start.

It could: everyone landed in one arm, the admin printed ``nan`` and the results API answered 500.
Refused by the model's validation (the admin's arm forms), by ``start`` (the admin's start action), and
results of such an experiment left from before read as a sample-ratio mismatch, not a 500.
"""

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from feedback.identity import Viewer
from ranking.experiments.actions import ExperimentError, start
from ranking.models import Experiment, Variant
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment
from tests.integration.feedback.conftest import bearer, key_with

pytestmark = pytest.mark.django_db

ZERO_ARMS = [{"name": "control", "is_control": True, "weight": 0}, {"name": "treatment", "weight": 0}]


def test_an_arm_of_weight_0_fails_validation():
    experiment = make_experiment(arms=[{"name": "control", "is_control": True}])
    with pytest.raises(ValidationError) as refused:
        Variant(experiment=experiment, name="treatment", weight=0).full_clean()
    assert "weight" in refused.value.message_dict
    Variant(experiment=experiment, name="treatment", weight=1).full_clean()


def test_start_refuses_arms_of_weight_0():
    experiment = make_experiment(arms=ZERO_ARMS)
    with pytest.raises(ExperimentError, match="weight of at least 1"):
        start(experiment)
    assert Experiment.objects.get().status == Experiment.Status.DRAFT


def test_the_admins_start_action_refuses_it_with_a_message(admin_client):
    experiment = make_experiment(arms=ZERO_ARMS)
    response = admin_client.post(f"/admin/ranking/experiment/{experiment.pk}/start/")
    assert response.status_code == 302
    assert any("weight of at least 1" in str(m) for m in get_messages(response.wsgi_request))
    assert Experiment.objects.get().status == Experiment.Status.DRAFT


def test_results_of_a_zero_weight_experiment_from_before_are_a_mismatch_not_a_500(service, collection):
    experiment = make_experiment(arms=ZERO_ARMS)
    Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.RUNNING)  # as before the fix
    for n in range(5):
        service.search(SearchRequest(text="a test picture"), Viewer(user_key=f"anon:zero-user-{n:04d}-0000000"))
    response = APIClient().get(f"/api/v1/experiments/{experiment.pk}/results", **bearer(key_with("experiments")))
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    assert sum(body["sample_ratio"]["observed"]) == 5 and body["sample_ratio"]["mismatch"] is True

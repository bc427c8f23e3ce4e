"""Results per arm from the feedback tables, the verdict, promotion to production, admin pages and the API."""

import datetime as dt

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.api_keys import issue_key
from feedback.capture import ClickInput, RatingInput, record_click, record_rating
from feedback.identity import Viewer
from feedback.models import Click, SearchEvent
from ranking.experiments.actions import promote_arm, start, stop
from ranking.experiments.results import results
from ranking.experiments.statistics import compare, ratio
from ranking.models import Experiment, ExperimentAudit, RankerVersion, ServingConfig
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment

pytestmark = pytest.mark.django_db
QUERY = "a test picture"


def search_as(service, n: int):
    viewer = Viewer(user_key=f"anon:res-user-{n:04d}-000000", surface="web")
    return viewer, service.search(SearchRequest(text=QUERY, page_size=12), viewer)


def transaction_age() -> float:
    """Seconds since this test's transaction began (PostgreSQL's now() is its start)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM clock_timestamp() - now())")
        return float(cursor.fetchone()[0])


def test_metrics_per_arm_match_a_hand_count(service, collection):
    experiment = make_experiment(
        statistics=Experiment.Statistics.FIXED,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "treatment"},
        ],
    )
    start(experiment)
    per_user = {"control": {}, "treatment": {}}  # user -> [searches, clicked searches]
    expected = {"control": [0, 0, 0, 0.0, 0, []], "treatment": [0, 0, 0, 0.0, 0, []]}  # searches, clicked, clicks,
    users = {"control": set(), "treatment": set()}  # reciprocal rank sum, abandoned, ratings
    for n in range(24):
        for s in range(1 + n % 3):  # users make 1-3 searches
            viewer, response = search_as(service, n)
            e = expected[response.arm]
            users[response.arm].add(n)
            e[0] += 1
            clicks = [h for h in response.hits if h.position in ((n + s) % 4 + 1, 5)][: (n + s) % 3]
            counts = per_user[response.arm].setdefault(n, [0, 0])
            counts[0] += 1
            counts[1] += bool(clicks)
            for i, hit in enumerate(clicks):
                record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{n}-{s}-{i}"))
            if clicks:
                e[1] += 1
                e[2] += len(clicks)
                e[3] += 1 / clicks[0].position
            if n % 4 == 0:
                rating = RatingInput(response.hits[0].image.pk, 1 + n % 5, f"r{n}-{s}", "stars", str(response.event_id))
                record_rating(viewer, rating)
                e[5].append((n % 5) / 4)
            elif not clicks:
                e[4] += 1
    found = {arm.variant.name: arm for arm in results(experiment).arms}
    for name, (searches, clicked, clicks, rr, abandoned, ratings) in expected.items():
        arm = found[name]
        assert arm.searches == searches and arm.users == len(users[name])
        assert arm.metrics["ctr"].value == pytest.approx(clicked / searches)
        assert arm.metrics["clicks_per_search"].value == pytest.approx(clicks / searches)
        assert arm.metrics["reciprocal_rank"].value == pytest.approx(rr / searches)
        assert arm.metrics["abandonment"].value == pytest.approx(abandoned / searches)
        if ratings:
            assert arm.metrics["mean_rating"].value == pytest.approx(sum(ratings) / len(ratings))
        # Clicked right after the search; the test's transaction (fixtures included) dates every search at its
        # start (now() in PostgreSQL), so on a loaded machine the gap is up to the transaction's age, never more.
        assert 0 <= arm.metrics["time_to_first_click"].value < transaction_age() + 1
    # The fixed-horizon comparison is the delta method over the hand-counted per-user pairs.
    by_hand = {
        arm: ratio(np.array([c for _, c in u.values()], float), np.array([s for s, _ in u.values()], float))
        for arm, u in per_user.items()
    }
    expected_ctr = compare(by_hand["control"], by_hand["treatment"])
    treatment = found["treatment"].comparisons["ctr"]
    assert treatment.method == "fixed-horizon"
    assert (treatment.p_value, treatment.low, treatment.high) == pytest.approx(
        (expected_ctr.p_value, expected_ctr.low, expected_ctr.high)
    )
    # The same logs read with the always-valid statistics: 24 users are below the monitored minimum (30
    # per arm), so no look has counted yet: p stays 1 and there is no interval.
    Experiment.objects.filter(pk=experiment.pk).update(statistics=Experiment.Statistics.SEQUENTIAL)
    experiment.refresh_from_db()
    sequential = next(a for a in results(experiment).arms if a.variant.name == "treatment").comparisons["ctr"]
    assert sequential.method == "always-valid" and sequential.p_value == 1.0 and np.isnan(sequential.low)


def test_time_to_first_click_is_measured_from_the_search(service, collection):
    experiment = make_experiment(arms=[{"name": "control", "is_control": True}, {"name": "t"}])
    start(experiment)
    viewer, response = search_as(service, 1)
    SearchEvent.objects.filter(pk=response.event_id).update(created_at=timezone.now() - dt.timedelta(seconds=30))
    hit = response.hits[0]
    record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, "first"))
    arm = next(a for a in results(experiment).arms if a.variant.name == response.arm)
    assert arm.metrics["time_to_first_click"].value == pytest.approx(30, abs=2)


def test_no_winner_before_the_minimum_sample_and_a_winner_after(service, collection):
    experiment = make_experiment(
        min_users_per_arm=30,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "treatment"},
        ],
    )
    start(experiment)
    for n in range(120):
        viewer, response = search_as(service, n)
        if response.arm == "treatment" or n % 5 == 0:  # treatment users click, control users rarely do
            hit = response.hits[0]
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{n}"))
        if n == 20:
            early = results(experiment)
            assert early.winner is None and "Not enough users" in early.verdict
    final = results(experiment)
    assert Experiment.objects.get(pk=experiment.pk).statistics == "sequential"  # the default
    assert not final.sample_ratio.mismatch
    assert final.winner.name == "treatment", final.verdict
    ctr = final.arms[1].comparisons["ctr"]
    assert ctr.method == "always-valid" and "always-valid p" in final.verdict
    assert ctr.p_value < 0.001 and ctr.low > 0.3  # treatment clicks every search, control one in five


def test_a_sample_ratio_mismatch_blocks_the_verdict(service, collection):
    experiment = make_experiment(
        min_users_per_arm=5,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "treatment"},
        ],
    )
    start(experiment)
    for n in range(80):
        search_as(service, n)
    # Simulate a logging bug that drops most control events.
    control_events = SearchEvent.objects.filter(experiment=experiment, arm="control")
    SearchEvent.objects.filter(pk__in=list(control_events.values_list("pk", flat=True)[5:])).delete()
    found = results(experiment)
    assert found.sample_ratio.mismatch and found.winner is None and "mismatch" in found.verdict.lower()


def test_interleaving_credits_clicks_to_teams(service, collection, reversing_ranker):
    experiment = make_experiment(
        mode=Experiment.Mode.INTERLEAVE,
        min_users_per_arm=20,
        arms=[
            {"name": "embedding", "use_reranker": False},
            {"name": "reversed", "ranker": reversing_ranker},
        ],
    )
    start(experiment)
    clicked_teams = []
    for n in range(60):
        viewer, response = search_as(service, n)
        liked = [h for h in response.hits if h.team == "reversed"][:1] if n % 6 else response.hits[:1]
        if n % 10 == 9:
            liked = []  # a search without a click: a tie
        for hit in liked:
            record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{n}"))
        clicked_teams.append(liked[0].team if liked else "")
    found = results(experiment)
    i = found.interleaving
    assert i.users == 60 and i.searches == 60
    # Each search's credit, counted from the teams the page showed on the clicked hits.
    assert (i.wins_a, i.wins_b, i.ties) == (clicked_teams.count("embedding"), clicked_teams.count("reversed"), 6)
    assert i.wins_b > 40 and i.method == "always-valid"
    assert i.preference.value < 0 and i.p_value < 0.001 and i.sign_test_p < 0.001
    assert found.winner.name == "reversed"


def test_promoting_an_arm_changes_production_with_an_audit_trail(service, collection, reversing_ranker, settings):
    settings.LOUPE_TEXT_CHANNEL, settings.LOUPE_RANKER_CHECK_SECONDS = False, 0
    experiment = make_experiment(
        arms=[
            {"name": "control", "is_control": True, "use_reranker": False},
            {"name": "winner", "ranker": reversing_ranker, "rerank_depth": 50},
        ]
    )
    start(experiment, "alice")
    before = service.search(SearchRequest(text=QUERY, page_size=12))
    assert before.ranker == "embedding"
    variant = experiment.variants.get(name="winner")
    config = promote_arm(variant, "alice", "winner beats control")
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.STOPPED and experiment.stopped_at is not None
    assert RankerVersion.objects.get(status="active") == reversing_ranker
    assert ServingConfig.objects.first() == config and config.rerank_depth == 50 and config.created_by == "alice"
    assert list(ExperimentAudit.objects.filter(experiment=experiment).order_by("at").values_list("action", "user")) == [
        ("start", "alice"),
        ("stop", "alice"),
        ("promote", "alice"),
    ]
    after = service.search(SearchRequest(text=QUERY, page_size=12), Viewer(user_key="anon:someone-else-000000"))
    assert after.ranker == reversing_ranker.label and after.arm == ""


def test_admin_pages_show_results_and_confirm_actions(admin_client, service, collection):
    experiment = make_experiment(
        min_users_per_arm=1,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "treatment"},
        ],
    )
    page = admin_client.get(f"/admin/ranking/experiment/{experiment.pk}/start/")
    assert page.status_code == 200 and b"Start" in page.content
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"  # a GET only asks
    admin_client.post(f"/admin/ranking/experiment/{experiment.pk}/start/")
    assert Experiment.objects.get(pk=experiment.pk).status == "running"
    for n in range(10):
        viewer, response = search_as(service, n)
        record_click(viewer, ClickInput(str(response.event_id), response.hits[0].image.pk, 1, f"c{n}"))
    change = admin_client.get(f"/admin/ranking/experiment/{experiment.pk}/change/")
    html = change.content.decode()
    assert change.status_code == 200
    assert 'class="loupe-arms"' in html and 'data-arm="treatment"' in html and "95% always-valid CI" in html
    assert "always valid (mSPRT): safe to read at any time" in html
    assert "<svg" in html and "Sample ratio" in html
    variant = experiment.variants.get(name="treatment")
    confirm = admin_client.get(f"/admin/ranking/experiment/{experiment.pk}/promote/{variant.pk}/")
    assert b"Promote" in confirm.content and not ServingConfig.objects.exists()
    admin_client.post(f"/admin/ranking/experiment/{experiment.pk}/promote/{variant.pk}/")
    assert ServingConfig.objects.get().source == f"experiment {experiment.name!r}, arm 'treatment'"
    assert ExperimentAudit.objects.filter(experiment=experiment, action="promote", user="admin").exists()
    # Stopping a stopped experiment is refused with a message, not an error page.
    refused = admin_client.post(f"/admin/ranking/experiment/{experiment.pk}/stop/", follow=True)
    assert b"is not running" in refused.content


def test_running_experiments_arms_are_frozen_in_admin(admin_client, collection):
    experiment = make_experiment(
        statistics=Experiment.Statistics.FIXED,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "treatment"},
        ],
    )
    start(experiment)
    html = admin_client.get(f"/admin/ranking/experiment/{experiment.pk}/change/").content.decode()
    assert 'name="variants-0-weight"' not in html  # read-only once users see the arms
    assert 'name="statistics"' not in html  # the statistics cannot be switched once it runs
    assert "fixed horizon: valid only when read once" in html and "inflates false winners" in html
    stop(experiment)


def test_partner_api_reads_results_with_the_experiments_scope(service, collection):
    experiment = make_experiment(arms=[{"name": "control", "is_control": True}, {"name": "treatment"}])
    start(experiment)
    for n in range(6):
        search_as(service, n)
    api = APIClient()
    reader = issue_key("dashboard", ["experiments"]).plaintext
    searcher = issue_key("search app", ["search"]).plaintext
    ok = api.get(f"/api/v1/experiments/{experiment.pk}/results", HTTP_AUTHORIZATION=f"Bearer {reader}")
    assert ok.status_code == 200
    body = ok.json()
    assert [a["name"] for a in body["arms"]] == ["control", "treatment"]
    assert sum(a["searches"] for a in body["arms"]) == 6 and "ctr" in body["arms"][1]["versus_control"]
    assert body["statistics"]["method"] == "sequential" and body["arms"][1]["versus_control"]["ctr"]["method"] == (
        "always-valid"
    )
    listed = api.get("/api/v1/experiments", HTTP_AUTHORIZATION=f"Bearer {reader}").json()
    assert listed[0]["name"] == experiment.name
    assert (
        api.get(f"/api/v1/experiments/{experiment.pk}/results", HTTP_AUTHORIZATION=f"Bearer {searcher}").status_code
        == 403
    )
    assert api.get(f"/api/v1/experiments/{experiment.pk}/results").status_code == 401
    missing = api.get("/api/v1/experiments/999999/results", HTTP_AUTHORIZATION=f"Bearer {reader}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert not Click.objects.exists()  # reading results writes nothing

"""The A/B vs interleaving simulation stops when its evaluated traffic reached what the ranker trained on or reads."""

from datetime import timedelta

import pytest
from django.db.models import F
from django.utils import timezone

from bench.held_out_queries import LeakageError, caltech_sets, new_phrasing_traffic
from bench.simulate_experiments import ServingChanged, check_leaks, check_settings, check_unchanged, serving_state
from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.models import ExaminationWeight, SearchEvent
from feedback.summaries import refresh_summaries
from ranking.models import RankerVersion
from ranking.registry import promote
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db
CLASSES = [f"class {n}" for n in range(20)]


def logged_search(service, text: str, n: int, after: RankerVersion | None = None):
    """A logged search and a click; ``after``: dated a second after that ranker's training window."""
    viewer = Viewer(user_key=f"anon:leak-user-{n:04d}-000000", surface="sim")
    response = service.search(SearchRequest(text=text, page_size=4), viewer)
    record_click(viewer, ClickInput(str(response.event_id), response.hits[0].image.pk, 1, f"leak-{n}"))
    if after is not None:  # the test's transaction gives every row its start time otherwise
        SearchEvent.objects.filter(pk=response.event_id).update(created_at=after.trained_until + timedelta(seconds=1))
    return response.event_id


def ranker_trained_until_now() -> RankerVersion:
    now = timezone.now()
    return RankerVersion.objects.create(
        artefact="unused.txt", checksum="0" * 64, feature_names=[], trained_from=now, trained_until=now
    )


def test_an_evaluated_string_among_the_rankers_training_searches_stops_the_run(service, collection):
    sets = caltech_sets(CLASSES, seed=1, per_set=1, zipf=1.1)
    traffic = new_phrasing_traffic(sets)
    logged_search(service, sets.training[0].text, 0)
    again = logged_search(service, sets.training[0].text, 2)  # the same string again, a second earlier: one string
    SearchEvent.objects.filter(pk=again).update(created_at=F("created_at") - timedelta(seconds=1))
    assert check_leaks(traffic, ranker_trained_until_now())["training_query_strings"] == 1  # training strings: fine
    logged_search(service, traffic.training[3].text, 1)
    with pytest.raises(LeakageError, match="training searches"):
        check_leaks(traffic, ranker_trained_until_now())


def test_evaluated_traffic_after_training_is_fine_until_a_refresh_puts_it_in_the_summaries(service, collection):
    sets = caltech_sets(CLASSES, seed=2, per_set=1, zipf=1.1)
    traffic = new_phrasing_traffic(sets)
    logged_search(service, sets.training[0].text, 0)
    refresh_summaries()
    ranker = ranker_trained_until_now()
    logged_search(service, traffic.training[0].text, 1, after=ranker)  # the experiments' own traffic
    assert check_leaks(traffic, ranker)["summarised_query_strings"] >= 1
    refresh_summaries()  # the features would now read the evaluated string's clicks
    with pytest.raises(LeakageError, match="query summaries"):
        check_leaks(traffic, ranker)


def test_the_run_stops_when_the_settings_let_the_experiments_clicks_reach_the_orders(settings):
    settings.LOUPE_FEEDBACK_CHANNEL, settings.LOUPE_PERSONALISE = False, False
    check_settings()
    settings.LOUPE_PERSONALISE = True
    with pytest.raises(ServingChanged, match="LOUPE_PERSONALISE"):
        check_settings()
    settings.LOUPE_PERSONALISE, settings.LOUPE_FEEDBACK_CHANNEL = False, True
    with pytest.raises(ServingChanged, match="LOUPE_FEEDBACK_CHANNEL"):
        check_settings()


def test_the_run_stops_when_what_the_orders_read_changes_during_an_experiment(service, collection):
    before = serving_state()
    logged_search(service, "a cat", 0)
    assert check_unchanged(before, "logging alone") == before  # logged clicks reach nothing until a refresh
    refresh_summaries()
    with pytest.raises(ServingChanged, match="image_summary"):
        check_unchanged(before, "after a refresh")
    before = serving_state()
    ExaminationWeight.objects.create(position=1, weight=1.0)
    with pytest.raises(ServingChanged, match="examination_curve"):
        check_unchanged(before, "a new curve")
    before = serving_state()
    promote(ranker_trained_until_now())
    with pytest.raises(ServingChanged, match="active_rankers"):
        check_unchanged(before, "another ranker")

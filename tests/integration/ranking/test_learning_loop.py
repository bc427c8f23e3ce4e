"""The loop end to end on a small collection: searches and clicks are logged, a ranker is trained from
them, promoted only because it beats the serving order, served without a restart, rolled back, and a
corrupt artefact is refused (search falls back to the first-stage order)."""

import pytest

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.summaries import refresh_summaries
from ranking.models import RankerVersion, TrainingRun
from ranking.registry import active_ranker, rankers_dir, rollback
from ranking.training import retrain
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db

QUERY = "a test picture"


@pytest.fixture(autouse=True)
def first_stage_without_feedback(settings):
    """These tests check that the ranker learns what the first stage does not know. The feedback channel
    (feedback.click_graph) puts the users' favourite into the first stage after the first refresh, which
    leaves a ranker nothing to gain over it; tests/integration/feedback/test_click_graph.py covers it."""
    settings.LOUPE_FEEDBACK_CHANNEL = False


@pytest.fixture(autouse=True)
def fresh_ranker(settings, tmp_path):
    settings.LOUPE_RANKER_CHECK_SECONDS = 0
    settings.VAR_DIR = tmp_path
    active_ranker.forget()
    yield
    active_ranker.forget()


def users_prefer(service, favourite, searches: int, start: int = 0) -> None:
    """Each user searches once and clicks the favourite wherever it is shown (and, now and then, the top hit)."""
    for n in range(start, start + searches):
        viewer = Viewer(user_key=f"anon:user-{n:04d}-000000000000")
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        hit = next(h for h in response.hits if h.image.pk == favourite.pk)
        record_click(viewer, ClickInput(str(response.event_id), hit.image.pk, hit.position, f"c{n}"))
        if n % 5 == 0 and response.hits[0].image.pk != favourite.pk:
            top = response.hits[0]
            record_click(viewer, ClickInput(str(response.event_id), top.image.pk, top.position, f"t{n}"))


def first_stage_order(service) -> list[int]:
    return [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]


def shown_seventh(service, collection):
    seventh = first_stage_order(service)[6]
    return next(image for image in collection if image.pk == seventh)


def test_feedback_trains_a_ranker_that_is_promoted_served_and_rolled_back(service, collection, settings):
    first_stage = first_stage_order(service)
    favourite = shown_seventh(service, collection)
    users_prefer(service, favourite, 40)
    refresh_summaries()  # priors now show the favourite's clicks; the next searches log them as features
    users_prefer(service, favourite, 80, start=40)
    assert retrain().outcome == TrainingRun.Outcome.SKIPPED  # 120 < 200 new labelled searches
    run = retrain(force=True)
    assert run.outcome == TrainingRun.Outcome.PROMOTED, run.message
    version = RankerVersion.objects.get(status="active")
    gate = run.metrics["gate"]
    assert gate["promote"] and gate["candidate"] > gate["serving"] * (1 + settings.LOUPE_PROMOTION_MARGIN)
    assert gate["lower_bound"] > 0
    assert run.metrics["serving_name"] == "first stage"
    # The gate judged the most recent searches only, after the window that chose the boosting round.
    windows = run.metrics["windows"]
    # (one test transaction: every search has the same timestamp, so the bounds can only tie here)
    assert windows["train"][1] <= windows["early_stopping"][0] <= windows["early_stopping"][1] <= windows["gate"][0]
    assert gate["searches"] == version.validation_searches == round(0.2 * 120)
    assert run.metrics["early_stopping_searches"] == round(0.15 * 120)

    served = service.search(SearchRequest(text=QUERY, page_size=12))
    assert served.ranker == version.label
    assert served.hits[0].image.pk == favourite.pk  # learned from the clicks
    assert sorted(h.image.pk for h in served.hits) == sorted(first_stage)  # reordered, nothing lost
    # The page reuses the features reranking computed; they are the same as computed for the plain order.
    settings.LOUPE_RERANK = False
    plain_features = {h.image.pk: h.features for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits}
    settings.LOUPE_RERANK = True
    assert all(
        h.features == pytest.approx(plain_features[h.image.pk]) for h in served.hits if h.image.pk in plain_features
    )

    rollback()
    active_ranker.forget()
    plain = service.search(SearchRequest(text=QUERY, page_size=12))
    assert plain.ranker == "embedding" and [h.image.pk for h in plain.hits] == first_stage


def test_a_corrupt_artefact_is_refused_and_search_falls_back(service, collection, caplog):
    favourite = shown_seventh(service, collection)
    users_prefer(service, favourite, 60)
    refresh_summaries()
    users_prefer(service, favourite, 60, start=60)
    run = retrain(force=True)
    assert run.outcome == TrainingRun.Outcome.PROMOTED, run.message
    version = RankerVersion.objects.get(status="active")
    artefact = rankers_dir() / version.artefact
    artefact.write_text(artefact.read_text().replace("Tree=0", "Tree=0\n", 1) + "tampered\n")
    active_ranker.forget()
    response = service.search(SearchRequest(text=QUERY, page_size=12))
    assert response.ranker == "embedding" and len(response.hits) == 12
    assert "does not match its checksum" in caplog.text


def test_a_ranker_no_better_than_the_serving_order_is_not_promoted(service, collection):
    """Users click whatever is first: nothing to learn beyond the first stage, so nothing is promoted."""
    for n in range(150):
        viewer = Viewer(user_key=f"anon:user-{n:04d}-111111111111")
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        top = response.hits[0]
        record_click(viewer, ClickInput(str(response.event_id), top.image.pk, top.position, f"c{n}"))
        if n == 50:
            refresh_summaries()
    run = retrain(force=True)
    assert run.outcome == TrainingRun.Outcome.KEPT, run.message
    assert not RankerVersion.objects.filter(status="active").exists()
    assert RankerVersion.objects.get().status == "rejected"


def click_the_last(service, searches: int, start: int = 0) -> None:
    """Each user clicks only the image the first stage puts 12th, below DCG@10's cut-off."""
    for n in range(start, start + searches):
        viewer = Viewer(user_key=f"anon:user-{n:04d}-222222222222")
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        last = max(response.hits, key=lambda hit: hit.position)
        assert last.position == 12
        record_click(viewer, ClickInput(str(response.event_id), last.image.pk, last.position, f"c{n}"))


def test_retraining_completes_when_the_serving_order_scores_zero(service, collection):
    """Finding 8 of issue 19: the infinite gain was stored as ``Infinity``, which jsonb refuses, so the
    run failed and no ranker could ever be trained while the serving order scored 0 on the gate window."""
    click_the_last(service, 60)
    refresh_summaries()
    click_the_last(service, 60, start=60)
    run = retrain(force=True)
    assert run.outcome in (TrainingRun.Outcome.PROMOTED, TrainingRun.Outcome.KEPT), run.message
    run.refresh_from_db()  # what jsonb stored
    gate = run.metrics["gate"]
    assert gate["serving"] == 0 and gate["candidate"] > 0
    assert gate["relative_gain"] is None
    assert RankerVersion.objects.get().metrics["gate"]["relative_gain"] is None


@pytest.mark.django_db(transaction=True)
def test_the_retrain_task_never_runs_twice_at_once(settings, tmp_path):
    """Another connection holds the lock (another worker training): the task steps aside."""
    import psycopg

    from workers.tasks import RETRAIN_LOCK, retrain_ranker

    settings.VAR_DIR = tmp_path
    from django.db import connection

    other = psycopg.connect(**{k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"})
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [RETRAIN_LOCK])
        assert retrain_ranker.run() == {"outcome": "locked"}
        other.execute("SELECT pg_advisory_unlock(%s)", [RETRAIN_LOCK])
        result = retrain_ranker.run()
        assert result["outcome"] == "skipped" and TrainingRun.objects.get().outcome == "skipped"
    finally:
        other.close()


def test_admin_shows_rankers_and_runs(admin_client, service, collection):
    favourite = shown_seventh(service, collection)
    users_prefer(service, favourite, 40)
    refresh_summaries()
    users_prefer(service, favourite, 60, start=40)
    run = retrain(force=True)
    version = RankerVersion.objects.get()
    assert run.outcome == TrainingRun.Outcome.PROMOTED and run.ranker == version, run.message
    assert version.status == RankerVersion.Status.ACTIVE and version.promoted_at is not None
    # The pages list this version and this run (the filter sidebars print "active"/"promoted" regardless).
    versions = admin_client.get("/admin/ranking/rankerversion/").content.decode()
    assert f"/admin/ranking/rankerversion/{version.pk}/change/" in versions and version.label in versions
    runs = admin_client.get("/admin/ranking/trainingrun/").content.decode()
    assert f"/admin/ranking/trainingrun/{run.pk}/change/" in runs and f"{version.label} promoted" in runs
    action = {"action": "roll_back", "_selected_action": [version.pk]}
    response = admin_client.post("/admin/ranking/rankerversion/", action, follow=True)
    assert response.status_code == 200 and not RankerVersion.objects.filter(status="active").exists()
    version.refresh_from_db()
    assert version.status != RankerVersion.Status.ACTIVE

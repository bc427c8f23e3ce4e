"""Finding 8 of issue 19 (first half): retraining completes when the serving order's DCG is 0.

Users click only the image the first stage puts last (12th, below DCG@10's cut-off): the serving order
scores 0 on every gate search, the candidate's gain is infinite, and storing ``Infinity`` in the run's
jsonb metrics failed the run, so no ranker could ever be trained.
"""

import pytest

from feedback.capture import ClickInput, record_click
from feedback.identity import Viewer
from feedback.summaries import refresh_summaries
from ranking.models import RankerVersion, TrainingRun
from ranking.registry import active_ranker
from ranking.training import retrain
from searchapp.search import SearchRequest

pytestmark = pytest.mark.django_db

QUERY = "a test picture"


@pytest.fixture(autouse=True)
def fresh_ranker(settings, tmp_path):
    settings.LOUPE_RANKER_CHECK_SECONDS = 0
    settings.VAR_DIR = tmp_path
    active_ranker.forget()
    yield
    active_ranker.forget()


def click_the_last(service, searches: int, start: int = 0) -> None:
    for n in range(start, start + searches):
        viewer = Viewer(user_key=f"anon:user-{n:04d}-222222222222")
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        last = max(response.hits, key=lambda hit: hit.position)
        assert last.position == 12
        record_click(viewer, ClickInput(str(response.event_id), last.image.pk, last.position, f"c{n}"))


def test_retraining_completes_and_stores_valid_json_when_serving_scores_zero(service, collection):
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

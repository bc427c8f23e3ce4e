"""Click flooding through the real loop: made-up identities from one network cannot get a ranker promoted.

The attack of issue 19, finding 3, at test size: honest users (each from their own network) click what
is first; a crowd of new identities from one /24 clicks one image shown seventh. On raw counts the
candidate that learned the crowd's image wins the gate (the crowd's own searches validate it); on
trust-weighted feedback the gate finds the gain in one network and refuses it.
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


def honest_and_flood(service, bots: int, honest: int) -> int:
    """Interleaved: honest users click the first hit, bots click the image the first stage shows seventh."""
    target = service.search(SearchRequest(text=QUERY, page_size=12)).hits[6].image.pk
    for n in range(max(bots, honest)):
        if n < honest:
            viewer = Viewer(user_key=f"anon:user-{n:04d}-000000000000", network=f"home-{n}")
            response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
            top = response.hits[0]
            record_click(viewer, ClickInput(str(response.event_id), top.image.pk, top.position, f"u{n}"))
        if n < bots:
            viewer = Viewer(user_key=f"anon:bot-{n:04d}-0000000000000", network="botnet")
            response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
            hit = next(h for h in response.hits if h.image.pk == target)
            for c in range(3):  # three client ids for one click: once per impression is what counts
                record_click(viewer, ClickInput(str(response.event_id), target, hit.position, f"b{n}-{c}"))
        if n == 40:
            refresh_summaries()
    return target


def test_a_flood_from_one_network_does_not_get_its_ranker_promoted(service, collection):
    honest_and_flood(service, bots=120, honest=60)
    run = retrain(force=True)
    assert run.outcome == TrainingRun.Outcome.KEPT, run.message
    assert "concentrated" in run.metrics["gate"]["reason"]
    assert not RankerVersion.objects.filter(status="active").exists()


def test_on_raw_counts_the_same_flood_is_promoted(service, collection, settings):
    """The finding itself, reproduced with the weighting off: the crowd's image is served first."""
    settings.LOUPE_FEEDBACK_TRUST = False
    target = honest_and_flood(service, bots=120, honest=60)
    run = retrain(force=True)
    assert run.outcome == TrainingRun.Outcome.PROMOTED, run.message
    assert service.search(SearchRequest(text=QUERY, page_size=12)).hits[0].image.pk == target

"""Per-user reranker features (ranking.personal): one user's history moves their order only, every switch
gives the shared order byte for byte, the result cache keeps orders apart, erasure forgets, training sees
no future.

Real searches, clicks, erasure and LightGBM over the twelve-image collection and the demo CLIP. The ranker
is a real LightGBM model that learned to put the candidate nearest the user's taste first.
"""

import hashlib
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.capture import ClickInput, record_click
from feedback.erasure import erase_user_key, key_digest
from feedback.identity import Viewer
from feedback.models import Click, ErasedUser, SearchEvent
from ranking.experiments.actions import start
from ranking.features import NAMES, SHARED_NAMES
from ranking.ltr import RankingData, train_ranker
from ranking.personal import FutureLeak, Personal, check_history_before
from ranking.registry import promote, save_candidate
from ranking.training_data import load_searches
from searchapp.result_cache import result_cache
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment

pytestmark = pytest.mark.django_db

QUERY = "a small picture"
TASTE = NAMES.index("taste_similarity")
TAGS = NAMES.index("taste_tags")
ALICE = Viewer(user_key="account:alice", network="home-a")
BOB = Viewer(user_key="account:bob", network="home-b")


@pytest.fixture(autouse=True)
def personalising(settings):
    settings.LOUPE_PERSONALISE = True
    settings.LOUPE_TEXT_CHANNEL = False  # CLIP alone: the first stage is the same for everyone
    settings.LOUPE_FEEDBACK_CHANNEL = False


@pytest.fixture
def taste_ranker(settings, tmp_path):
    """Active LightGBM ranker that learned "the candidate whose tags the user chose most first", and nothing else.

    The tag column spans the values serving gives it (0 to 1); every other column is noise, so with no
    taste (all 0) its order is some fixed reshuffle: the shared order. Tags, not the CLIP cosine: the demo
    model's random weights put every image of this collection at cosine 0.999 from every other, so the
    taste similarity cannot tell them apart here (real CLIP can; docs/ranking.md)."""
    settings.VAR_DIR = tmp_path
    rng = np.random.default_rng(0)
    groups = 200
    X = rng.random((groups * 12, len(NAMES)))
    # Mostly 0 (no taste), else up to 0.5, as serving gives it (a share shrunk by 5 pseudo-choices), so that
    # the splits fall where serving's values do.
    X[:, TAGS] = 0.5 * rng.random(len(X)) * (rng.random(len(X)) < 0.5)
    y = np.zeros(len(X))
    for g in range(groups):
        rows = slice(12 * g, 12 * (g + 1))
        y[12 * g + int(np.argmax(X[rows, TAGS]))] = 1
    trained = train_ranker(RankingData(X, y, [12] * groups, feature_names=NAMES), rounds=60)
    now = timezone.now()
    version = save_candidate(
        trained, trained_from=now, trained_until=now, train_searches=groups, validation_searches=0, metrics={}
    )
    return promote(version)


def order(service, viewer=None, **request) -> list[tuple[int, float]]:
    """The served first page: (image id, score) in order, as the log and the response carry them."""
    response = service.search(SearchRequest(text=QUERY, page_size=12, **request), viewer)
    return [(h.image.pk, h.score) for h in response.hits]


def ids(served: list[tuple[int, float]]) -> list[int]:
    return [image_id for image_id, _ in served]


def click(service, viewer: Viewer, image_id: int, times: int = 3) -> None:
    """``viewer`` searches QUERY and clicks ``image_id`` (all twelve shown), ``times`` times."""
    for _ in range(times):
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        hit = next(h for h in response.hits if h.image.pk == image_id)
        record_click(viewer, ClickInput(str(response.event_id), image_id, hit.position, uuid.uuid4().hex))


def test_one_users_history_changes_their_order_and_not_anothers(service, collection, taste_ranker):
    shared = order(service)
    favourite = ids(shared)[-1]  # the shared order's last image
    assert order(service, BOB) == shared  # no history: the neutral value, the shared order
    click(service, ALICE, favourite)
    response = service.search(SearchRequest(text=QUERY, page_size=12), ALICE)
    assert response.hits[0].image.pk == favourite
    assert order(service, BOB) == shared
    logged = SearchEvent.objects.get(pk=response.event_id)
    row = logged.impressions.get(image=favourite).features
    assert list(logged.feature_names) == NAMES and row[TAGS] > 0  # logged as served: training reads it


def test_every_switch_gives_the_shared_order_byte_for_byte(service, collection, taste_ranker, settings):
    shared = order(service)
    click(service, ALICE, ids(shared)[-1])
    assert order(service, ALICE) != shared
    assert order(service, ALICE, personalise=False) == shared  # the API's personalise=false
    settings.LOUPE_PERSONALISE = False
    assert order(service, ALICE) == shared  # the deployment's switch
    settings.LOUPE_PERSONALISE = True
    experiment = make_experiment(
        arms=[{"name": "personalised", "is_control": True}, {"name": "shared", "personalise": False}]
    )
    start(experiment, "tester")
    served = {}
    for n in range(16):  # users of both arms, each with Alice's history
        viewer = Viewer(user_key=f"account:arm-{n}", network=f"net-{n}")
        click(service, viewer, ids(shared)[-1], times=2)
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer)
        served.setdefault(response.arm, []).append([(h.image.pk, h.score) for h in response.hits])
    assert set(served) == {"personalised", "shared"}
    assert all(s == shared for s in served["shared"]) and all(s != shared for s in served["personalised"])


def test_the_page_cookie_gives_the_shared_order(service, collection, taste_ranker):
    shared = order(service)
    browser = Client()
    browser.cookies["loupe_uk"] = "alice-browser-token-0001"
    click(service, Viewer(user_key="anon:alice-browser-token-0001"), ids(shared)[-1])

    def page_order() -> list[tuple[int, float]]:
        response = browser.get("/", {"q": QUERY})
        assert response.status_code == 200
        return [(h.image.pk, h.score) for h in response.context["response"].hits][:4]

    assert page_order() != shared[:4]
    assert b"Turn personalisation off" in browser.get("/").content  # the visible control
    switched = browser.post("/personalisation/", {"personalise": "off", "next": f"/?q={QUERY}"})
    assert switched.status_code == 302 and switched["Location"] == "/?q=a%20small%20picture"
    assert browser.cookies["loupe_personalise"].value == "off"
    assert page_order() == shared[:4]
    assert b"Turn personalisation on" in browser.get("/").content
    assert browser.post("/personalisation/", {"personalise": "maybe"}).status_code == 400
    away = browser.post("/personalisation/", {"personalise": "on", "next": "https://elsewhere.example/"})
    assert away["Location"] == "/"  # never an open redirect


def test_the_api_parameter_gives_the_shared_order(service, collection, taste_ranker):
    shared = order(service)
    api = APIClient()
    caller = Viewer(user_key=f"api-anon:{hashlib.sha256(b'127.0.0.1').hexdigest()[:16]}")
    click(service, caller, ids(shared)[-1])

    def api_order(**params) -> list[tuple[int, float]]:
        response = api.get("/api/v1/search", {"q": QUERY, "page_size": 12, **params})
        assert response.status_code == 200, response.content
        return [(r["image"]["id"], r["score"]) for r in response.json()["results"]]

    assert ids(api_order()) != ids(shared)
    assert api_order(personalise="false") == [(i, pytest.approx(s, abs=1e-6)) for i, s in shared]
    assert api.get("/api/v1/search", {"q": QUERY, "personalise": "perhaps"}).status_code == 400


def test_the_result_cache_never_serves_one_users_order_to_another(service, collection, taste_ranker, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    shared = order(service)
    click(service, ALICE, ids(shared)[-1])
    result_cache.forget()
    alices = order(service, ALICE)  # cached under Alice's key
    assert alices != shared
    assert order(service, BOB) == shared  # the same query, text and depth: not Alice's entry
    assert order(service, ALICE) == alices  # Alice's own entry still serves her
    assert order(service) == shared


def test_erasure_forgets_the_taste(service, collection, taste_ranker, settings):
    settings.LOUPE_RESULT_CACHE_SECONDS = 60
    shared = order(service)
    click(service, ALICE, ids(shared)[-1])
    result_cache.forget()  # Alice's order from before her clicks (her own entry, kept for its time to live)
    assert order(service, ALICE) != shared
    # The marker alone (an erasure still deleting in batches) fences the history off.
    result_cache.forget()
    marker = ErasedUser.objects.create(
        key_digest=key_digest(ALICE.user_key), requested_by="test", erased_at=timezone.now()
    )
    assert order(service, ALICE) == shared
    marker.delete()
    result_cache.forget()
    personalised = order(service, ALICE)  # cached under Alice's key in this process
    assert personalised != shared
    erase_user_key(ALICE.user_key, partner=None, requested_by="test")
    assert not any(getattr(key, "personal_user", None) == ALICE.user_key for key in result_cache._entries)
    ErasedUser.objects.all().delete()  # with the marker gone, only the deleted rows could still personalise
    assert order(service, ALICE) == shared


def test_training_computes_the_taste_of_older_searches_from_before_each_search(service, collection, settings):
    """Searches logged before the per-user columns get them from the choices made before each search: the
    search's own click (after it) is not in its row, an earlier search's click is."""
    favourite = collection[5].pk
    click(service, ALICE, favourite, times=1)  # search 1, clicked
    click(service, ALICE, favourite, times=1)  # search 2, clicked: search 1's click is its history
    clicks = list(Click.objects.filter(user_key=ALICE.user_key).order_by("created_at"))
    for made in clicks:  # as searches were logged before the columns existed
        event = made.event
        event.feature_names = SHARED_NAMES
        # Each search just before its click: inside the test's one transaction the log's now() is the same
        # transaction start for both (in production each search commits on its own).
        event.created_at = made.created_at - timedelta(milliseconds=1)
        event.save(update_fields=["feature_names", "created_at"])
        for impression in event.impressions.all():
            impression.features = impression.features[: len(SHARED_NAMES)]
            impression.save(update_fields=["features"])
    logged = load_searches(None, timezone.now(), _flat_curve())
    assert logged.data.X.shape[1] == len(NAMES) and len(logged.data.groups) == 2
    first, second = logged.data.X[:12], logged.data.X[12:]
    clicked = [row for row, label in zip(logged.data.X, logged.data.y, strict=True) if label > 0]
    assert np.all(first[:, TASTE] == 0)  # nothing before search 1: its own click is not in its row
    assert clicked[1][TASTE] == pytest.approx(1 / 6, abs=1e-3)  # one earlier click: a sixth of cosine 1
    assert second[:, TASTE].max() == clicked[1][TASTE]
    settings.LOUPE_PERSONALISE = False  # a deployment that does not personalise computes no one's taste
    assert len(load_searches(None, timezone.now(), _flat_curve()).data.groups) == 0


def test_a_choice_at_or_after_the_search_stops_the_run():
    now = timezone.now()
    check_history_before(None, now)
    check_history_before(now - timedelta(seconds=1), now)
    with pytest.raises(FutureLeak):
        check_history_before(now, now)
    assert Personal("account:x", now).as_of == now


def _flat_curve():
    from ranking.propensity import power_law

    return power_law(100, 1.0)

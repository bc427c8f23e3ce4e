"""Experiments at serve time: sticky arms, exposure logging, arm configurations, interleaving."""

from collections import Counter

import pytest

from feedback.identity import Viewer
from feedback.models import Impression, SearchEvent
from ranking.experiments.actions import ExperimentError, start
from ranking.experiments.assignment import bucket
from ranking.models import Experiment
from searchapp.search import SearchRequest
from tests.integration.experiments.conftest import make_experiment

pytestmark = pytest.mark.django_db
QUERY = "a test picture"


def viewer(n: int, surface: str = "web") -> Viewer:
    return Viewer(user_key=f"anon:exp-user-{n:04d}-0000000", surface=surface)


def plain_order(service) -> list[int]:
    return [h.image.pk for h in service.search(SearchRequest(text=QUERY, page_size=12)).hits]


def test_users_stay_in_their_arm_and_every_search_logs_it(service, collection, reversing_ranker):
    experiment = make_experiment(
        arms=[
            {"name": "control", "is_control": True, "use_reranker": False},
            {"name": "reversed", "ranker": reversing_ranker},
        ]
    )
    start(experiment, "tester")
    embedding = plain_order(service)
    arms = {}
    for n in range(40):
        for _ in range(2):
            response = service.search(SearchRequest(text=QUERY, page_size=12), viewer(n))
            assert arms.setdefault(n, response.arm) == response.arm  # sticky
            event = SearchEvent.objects.get(pk=response.event_id)
            assert (event.experiment_id, event.arm, event.ranker) == (experiment.pk, response.arm, response.ranker)
            shown = [h.image.pk for h in response.hits]
            if response.arm == "control":
                assert response.ranker == "embedding" and shown == embedding
            else:
                assert response.ranker == reversing_ranker.label and shown != embedding
                assert sorted(shown) == sorted(embedding)
    counts = Counter(arms.values())
    assert set(counts) == {"control", "reversed"}
    salt = Experiment.objects.get(pk=experiment.pk).salt
    for n, arm in arms.items():  # the arm is the hash's, so any process computes the same
        assert ["control", "reversed"][bucket(salt, viewer(n).user_key, 1.0, [1, 1])] == arm


def test_outside_the_traffic_share_users_get_production(service, collection, settings):
    settings.LOUPE_TEXT_CHANNEL = False  # thresholds cut the CLIP channel; keep it the only one
    experiment = make_experiment(
        traffic_share=0.3,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "strict", "min_score": 1.0},
        ],
    )
    start(experiment)
    salt = Experiment.objects.get(pk=experiment.pk).salt
    outcomes = Counter()
    for n in range(60):
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer(n))
        expected = bucket(salt, viewer(n).user_key, 0.3, [1, 1])
        if expected is None:
            assert response.arm == "" and response.experiment_id is None and len(response.hits) == 12
            outcomes["outside"] += 1
        elif expected == 1:  # min score 1.0: nothing passes the arm's fixed threshold
            assert response.arm == "strict" and response.hits == []
            outcomes["strict"] += 1
        else:
            assert response.arm == "control" and len(response.hits) == 12
    assert outcomes["outside"] > 25 and outcomes["strict"] > 0
    # No viewer (held-out measurement, internal calls): never in an experiment.
    assert service.search(SearchRequest(text=QUERY, page_size=12)).arm == ""


def test_an_experiment_only_applies_to_its_surface(service, collection):
    experiment = make_experiment(
        surface=Experiment.Surface.API,
        arms=[
            {"name": "control", "is_control": True},
            {"name": "other", "is_control": False},
        ],
    )
    start(experiment)
    assert service.search(SearchRequest(text=QUERY), viewer(1, "web")).arm == ""
    assert service.search(SearchRequest(text=QUERY), viewer(1, "api")).arm in {"control", "other"}


def test_one_running_experiment_per_surface(collection):
    arms = [{"name": "a", "is_control": True}, {"name": "b"}]
    web = make_experiment("web one", surface=Experiment.Surface.WEB, arms=arms)
    start(web)
    with pytest.raises(ExperimentError, match="running"):
        start(make_experiment("web two", surface=Experiment.Surface.WEB, arms=arms))
    with pytest.raises(ExperimentError, match="running"):
        start(make_experiment("everywhere", surface=Experiment.Surface.ALL, arms=arms))
    start(make_experiment("api one", surface=Experiment.Surface.API, arms=arms))
    with pytest.raises(ExperimentError, match="control"):
        start(make_experiment("no control", surface=Experiment.Surface.SIM, arms=[{"name": "a"}, {"name": "b"}]))
    with pytest.raises(ExperimentError, match="two arms"):
        start(make_experiment("lonely", surface=Experiment.Surface.SIM, arms=[{"name": "a", "is_control": True}]))


def test_an_arm_can_serve_another_encoder_version(service, collection, tmp_path, caplog):
    from collection.demo_model import build_demo_model
    from collection.embedding import embed_collection
    from collection.encoders import Encoder, EncoderChoice
    from collection.models import EncoderVersion
    from collection.versions import version_for

    other_dir = build_demo_model(tmp_path / "other-tiny", seed=1234)
    other = Encoder(str(other_dir), local_files_only=True)
    other_version = version_for(EncoderChoice(other, str(other_dir)))
    assert other_version.pk != service.version.pk
    embed_collection(other, other_version)
    missing = EncoderVersion.objects.create(
        name="gone", model_ref=str(tmp_path / "nowhere"), fingerprint="x", dimension=other_version.dimension
    )
    experiment = make_experiment(
        arms=[
            {"name": "control", "is_control": True, "encoder_version": missing},
            {"name": "new-encoder", "encoder_version": other_version},
        ]
    )
    start(experiment)
    seen = set()
    for n in range(20):
        response = service.search(SearchRequest(text=QUERY, page_size=12), viewer(n))
        event = SearchEvent.objects.get(pk=response.event_id)
        if response.arm == "new-encoder":
            assert response.encoder.version_id == event.encoder_version_id == other_version.pk
        else:  # its encoder cannot load: production's serves, and the event says which one did
            assert response.encoder.version_id == event.encoder_version_id == service.version.pk
        seen.add(response.arm)
    assert seen == {"control", "new-encoder"}
    assert "cannot be loaded" in caplog.text


def test_interleaving_mixes_both_rankers_and_logs_each_items_team(service, collection, reversing_ranker):
    experiment = make_experiment(
        mode=Experiment.Mode.INTERLEAVE,
        arms=[
            {"name": "embedding", "use_reranker": False},
            {"name": "reversed", "ranker": reversing_ranker},
        ],
    )
    start(experiment)
    embedding = plain_order(service)
    firsts = Counter()
    for n in range(30):
        response = service.search(SearchRequest(text=QUERY, page_size=6), viewer(n))
        assert response.arm == "interleaved" and response.ranker == f"embedding | {reversing_ranker.label}"
        teams = [h.team for h in response.hits]
        assert abs(teams.count("embedding") - teams.count("reversed")) <= 1
        firsts[teams[0]] += 1
        # The embedding team's items appear in the embedding order.
        mine = [h.image.pk for h in response.hits if h.team == "embedding"]
        assert mine == sorted(mine, key=embedding.index)
        logged = dict(Impression.objects.filter(event_id=response.event_id).values_list("image_id", "team"))
        assert logged == {h.image.pk: h.team for h in response.hits}
        again = service.search(SearchRequest(text=QUERY, page_size=6), viewer(n))
        assert [h.image.pk for h in again.hits] == [h.image.pk for h in response.hits]  # per user and query: stable
    assert firsts["embedding"] > 5 and firsts["reversed"] > 5  # the coin decides who picks first
    page_two = service.search(SearchRequest(text=QUERY, page=2, page_size=6), viewer(1))
    first_page = service.search(SearchRequest(text=QUERY, page=1, page_size=6), viewer(1))
    assert not {h.image.pk for h in page_two.hits} & {h.image.pk for h in first_page.hits}

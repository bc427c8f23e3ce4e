"""The reranker sees each channel's score as the fusion normalises it, and a ranker from the old list is refused."""

import numpy as np
import pytest
from django.utils import timezone

from collection.fusion import CONVEX, MAX, NORMALISATIONS, RRF
from collection.fusion_setting import Fusion
from ranking.experiments.serving import plan_search
from ranking.features import NAMES
from ranking.ltr import RankingData, train_ranker
from ranking.registry import promote, save_candidate
from searchapp.evaluation import labelled_query
from searchapp.search import SearchRequest, SearchService

pytestmark = pytest.mark.django_db
COLUMN = {name: i for i, name in enumerate(NAMES)}
SCORES = [f"{channel}_score_normalised" for channel in ("clip", "fts", "caption", "feedback")]
QUERY = "caption 3 of a test picture"


@pytest.mark.parametrize(
    "fusion",
    [Fusion(CONVEX, {"clip": 0.2, "fts": 0.3, "caption": 0.5}, MAX), Fusion(CONVEX, None, "minmax"), Fusion(RRF)],
    ids=["convex-max", "convex-minmax", "rrf"],
)
def test_the_channel_score_features_are_the_fusions_normalised_scores(service, collection, fusion):
    served = SearchService(service.choice, service.version, fusion=fusion)
    response = served.search(SearchRequest(text=QUERY, page_size=10))
    # The channel lists this search retrieved, as the held-out evaluation records them.
    recorded = labelled_query(service, plan_search(None, rerank_allowed=True), QUERY, frozenset(), 0, 10)
    normalise = NORMALISATIONS[fusion.normalisation]
    assert {"clip", "fts", "caption"} <= set(recorded.rankings)
    for channel in ("clip", "fts", "caption"):
        expected = normalise(recorded.rankings[channel])
        features = {hit.image.pk: hit.features[COLUMN[f"{channel}_score_normalised"]] for hit in response.hits}
        assert features == pytest.approx({pk: expected.get(pk, 0.0) for pk in features}), channel
        assert any(value > 0 for value in features.values()), channel  # found something: not all the default
    assert response.hits[0].features[COLUMN["fts_score_normalised"]] == pytest.approx(1.0)  # the exact caption


def trained_on(names: list[str]):
    """A real LightGBM ranker, on ``names``, that prefers the last first-stage positions (the order upside down)."""
    rng = np.random.default_rng(0)
    groups = 60
    X = rng.random((groups * 10, len(names)))
    X[:, names.index("first_stage_rank_log")] = np.tile(np.log1p(np.arange(1, 11)), groups)
    y = np.zeros(len(X))
    y[9::10] = 1
    trained = train_ranker(RankingData(X, y, [10] * groups, feature_names=names), rounds=40)
    now = timezone.now()
    return save_candidate(
        trained, trained_from=now, trained_until=now, train_searches=groups, validation_searches=0, metrics={}
    )


def test_a_ranker_trained_before_the_channel_scores_is_not_served(service, collection, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.LOUPE_RANKER_CHECK_SECONDS = 0  # each promotion seen by the next search, not 5 s later
    request = SearchRequest(text=QUERY, page_size=10)
    first_stage = [hit.image.pk for hit in service.search(request).hits]
    promote(trained_on([name for name in NAMES if name not in SCORES]))  # the list before this change
    assert [hit.image.pk for hit in service.search(request).hits] == first_stage
    promote(trained_on(NAMES))  # the same ranker on today's list does serve: the order changes
    assert [hit.image.pk for hit in service.search(request).hits] != first_stage

import numpy as np
import pytest
from django.utils import timezone

from ranking.features import NAMES
from ranking.ltr import RankingData, train_ranker
from ranking.models import Experiment, Variant
from ranking.registry import save_candidate


@pytest.fixture
def reversing_ranker(settings, tmp_path):
    """A real LightGBM ranker that learned to prefer the *last* first-stage positions: the embedding order upside down.

    It learns from the position column at the values serving gives it (log(1 + position)); learned from a
    uniform random CLIP cosine instead, its splits fell outside the demo model's narrow band of cosines
    whenever the feature count changed the random draws, and it served the embedding order unchanged."""
    settings.VAR_DIR = tmp_path
    rng = np.random.default_rng(0)
    groups = 60
    X = rng.random((groups * 10, len(NAMES)))
    X[:, NAMES.index("first_stage_rank_log")] = np.tile(np.log1p(np.arange(1, 11)), groups)
    y = np.zeros(len(X))
    y[9::10] = 1  # the last position of each group
    trained = train_ranker(RankingData(X, y, [10] * groups, feature_names=NAMES), rounds=40)
    now = timezone.now()
    return save_candidate(
        trained, trained_from=now, trained_until=now, train_searches=groups, validation_searches=0, metrics={}
    )


def make_experiment(name="ranker test", mode=Experiment.Mode.AB, surface=Experiment.Surface.ALL, arms=(), **fields):
    experiment = Experiment.objects.create(name=name, mode=mode, surface=surface, **fields)
    for arm in arms:
        Variant.objects.create(experiment=experiment, **arm)
    return experiment

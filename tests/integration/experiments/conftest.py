import numpy as np
import pytest
from django.utils import timezone

from ranking.features import NAMES
from ranking.ltr import RankingData, train_ranker
from ranking.models import Experiment, Variant
from ranking.registry import save_candidate


@pytest.fixture
def reversing_ranker(settings, tmp_path):
    """A real LightGBM ranker that learned to prefer *low* CLIP cosine: the embedding order upside down."""
    settings.VAR_DIR = tmp_path
    rng = np.random.default_rng(0)
    groups = 60
    X = rng.random((groups * 10, len(NAMES)))
    cosine = X[:, NAMES.index("clip_cosine")]
    y = np.zeros(len(X))
    for g in range(groups):
        block = slice(g * 10, g * 10 + 10)
        y[g * 10 + int(np.argmin(cosine[block]))] = 1
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

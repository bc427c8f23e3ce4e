"""Assignment by hashing: sticky, uniform across buckets, traffic share respected, salts independent."""

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from ranking.experiments.assignment import bucket, unit_hash

KEYS = [f"anon:{n:06d}-user" for n in range(30_000)]


def test_the_same_key_always_gets_the_same_arm():
    first = [bucket("salt-1", key, 1.0, [1, 1, 2]) for key in KEYS[:2000]]
    again = [bucket("salt-1", key, 1.0, [1, 1, 2]) for key in KEYS[:2000]]
    assert first == again


def test_arms_are_uniform_in_proportion_to_their_weights():
    counts = Counter(bucket("salt-2", key, 1.0, [1, 1, 2]) for key in KEYS)
    observed = [counts[0], counts[1], counts[2]]
    expected = [len(KEYS) / 4, len(KEYS) / 4, len(KEYS) / 2]
    assert stats.chisquare(observed, expected).pvalue > 0.001
    assert observed[2] / len(KEYS) == pytest.approx(0.5, abs=0.015)


def test_the_hash_is_uniform_on_the_unit_interval():
    points = np.array([unit_hash("salt-3", key) for key in KEYS])
    assert stats.kstest(points, "uniform").pvalue > 0.001
    deciles = np.histogram(points, bins=10, range=(0, 1))[0]
    assert stats.chisquare(deciles).pvalue > 0.001


def test_users_outside_the_traffic_share_are_not_in_the_experiment():
    arms = [bucket("salt-4", key, 0.2, [1, 1]) for key in KEYS]
    inside = sum(a is not None for a in arms) / len(arms)
    assert inside == pytest.approx(0.2, abs=0.01)
    assert Counter(a for a in arms if a is not None)[0] / sum(a is not None for a in arms) == pytest.approx(
        0.5, abs=0.03
    )


def test_different_salts_assign_independently():
    a = np.array([bucket("salt-a", key, 1.0, [1, 1]) for key in KEYS])
    b = np.array([bucket("salt-b", key, 1.0, [1, 1]) for key in KEYS])
    table = [[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)]
    assert stats.chi2_contingency(table).pvalue > 0.001
    assert bucket("s", "k", 1.0, []) is None

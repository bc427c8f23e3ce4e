"""The promotion gate and the counterfactual DCG it compares with, on small known cases."""

import json

import numpy as np
import pytest

from ranking.gate import decide
from ranking.ltr import RankingData, counterfactual_dcg


def test_counterfactual_dcg_weights_each_click_by_its_inverse_propensity():
    # One search, three shown items; the item logged third was clicked (propensity 1/3 -> weight 3).
    data = RankingData(np.zeros((3, 1)), [0, 0, 1], [3], weights=[1, 1, 3])
    logged = counterfactual_dcg(np.array([3.0, 2.0, 1.0]), data)  # the logged order: click at rank 3
    moved_up = counterfactual_dcg(np.array([1.0, 2.0, 3.0]), data)  # the clicked item first
    assert logged == pytest.approx([3 / np.log2(4)])
    assert moved_up == pytest.approx([3.0])


def test_counterfactual_dcg_is_not_normalised_per_search():
    """Two searches, each with one click: per-search normalisation would score both 1 whatever the weight."""
    data = RankingData(np.zeros((4, 1)), [1, 0, 1, 0], [2, 2], weights=[1, 1, 5, 1])
    scores = counterfactual_dcg(np.array([2.0, 1.0, 2.0, 1.0]), data)
    assert scores == pytest.approx([1.0, 5.0])


def test_counterfactual_dcg_is_unbiased_under_a_position_based_model():
    """Logged order random; examination 1/p; the estimate of the ideal order's DCG matches its true DCG."""
    rng = np.random.default_rng(0)
    n, size = 20_000, 5
    relevance = (rng.random((n, size)) < 0.3).astype(float)  # logged order = row order (random)
    examined = rng.random((n, size)) < 1.0 / np.arange(1, size + 1)
    clicks = relevance * examined
    weights = np.where(clicks > 0, np.arange(1, size + 1)[None, :], 1.0)
    data = RankingData(np.zeros((n * size, 1)), clicks.ravel(), [size] * n, weights.ravel())
    ideal_scores = relevance.ravel()  # the order that puts the relevant items first
    estimate = counterfactual_dcg(ideal_scores, data).mean()
    truth = RankingData(np.zeros((n * size, 1)), relevance.ravel(), [size] * n)
    true_value = counterfactual_dcg(ideal_scores, truth).mean()
    assert estimate == pytest.approx(true_value, rel=0.03)
    naive = counterfactual_dcg(ideal_scores, RankingData(data.X, data.y, data.groups)).mean()
    assert naive < 0.8 * true_value  # without the weights deep relevant items are missed


def test_a_clear_gain_is_promoted():
    rng = np.random.default_rng(1)
    serving = rng.random(500)
    decision = decide(serving * 1.2 + 0.01, serving, margin=0.02)
    assert decision.promote and decision.relative_gain > 0.2 and decision.lower_bound > 0


def test_a_gain_below_the_margin_is_refused():
    serving = np.linspace(0.5, 1.5, 400)
    decision = decide(serving * 1.01, serving, margin=0.02)
    assert not decision.promote and "below the margin" in decision.reason


def test_a_reshuffle_that_wins_by_luck_is_refused():
    """Same mean quality, different per-search results: the small observed gain is noise."""
    rng = np.random.default_rng(2)
    serving = rng.random(60)
    candidate = rng.permutation(serving) + 0.02
    decision = decide(candidate, serving, margin=0.0)
    assert not decision.promote and "not significant" in decision.reason


def test_mismatched_or_empty_inputs():
    with pytest.raises(ValueError):
        decide(np.ones(3), np.ones(4), margin=0.0)
    assert not decide(np.array([]), np.array([]), margin=0.0).promote


def test_a_serving_order_that_scores_0_gives_a_decision_that_is_valid_json():
    """Finding 8 of issue 19: the infinite gain was stored as ``Infinity``, which jsonb refuses."""
    decision = decide(np.array([1.0, 0.5, 1.0, 0.8]), np.zeros(4), margin=0.02)
    assert decision.promote and decision.relative_gain == float("inf")
    stored = json.loads(json.dumps(decision.as_dict(), allow_nan=False))
    assert stored["relative_gain"] is None and stored["candidate"] == pytest.approx(0.825)
    assert "serving order scores 0" in stored["reason"]


def test_a_gain_carried_by_a_few_identities_is_refused():
    """Flooding: five identities' searches carry the whole gain; without them the candidate is no better."""
    rng = np.random.default_rng(2)
    serving = rng.random(300) + 0.5
    candidate = serving.copy()
    flooders = [f"bot-{i % 5}" for i in range(60)] + [f"user-{i}" for i in range(240)]
    candidate[:60] += 2.0  # the flooders' own searches, where the model puts their target first
    decision = decide(candidate, serving, margin=0.02, identities=flooders, networks=[""] * 300)
    assert decision.relative_gain > 0.2 and decision.lower_bound > 0  # the old rules alone would promote
    assert not decision.promote and "concentrated" in decision.reason and "identities" in decision.reason
    assert decision.gain_without_top_identities == pytest.approx(0.0)


def test_a_gain_carried_by_one_network_is_refused_however_many_identities_it_has():
    rng = np.random.default_rng(3)
    serving = rng.random(300) + 0.5
    candidate = serving.copy()
    candidate[:60] += 2.0
    identities = [f"id-{i}" for i in range(300)]  # every search its own identity
    networks = ["botnet"] * 60 + [f"home-{i}" for i in range(240)]
    decision = decide(candidate, serving, margin=0.02, identities=identities, networks=networks)
    assert not decision.promote and "networks" in decision.reason
    assert decision.gain_without_top_identities > 0.2  # five of sixty bot identities left out: still a "gain"
    assert decision.gain_without_top_networks == pytest.approx(0.0)


def test_a_gain_spread_over_many_identities_and_networks_is_promoted():
    rng = np.random.default_rng(4)
    serving = rng.random(300) + 0.5
    candidate = serving * 1.2
    identities = [f"user-{i % 100}" for i in range(300)]
    networks = [f"home-{i % 80}" for i in range(300)]
    decision = decide(candidate, serving, margin=0.02, identities=identities, networks=networks)
    assert decision.promote and decision.gain_without_top_identities > 0.15
    assert decision.gain_without_top_networks > 0.15


def test_owners_must_name_each_search():
    with pytest.raises(ValueError):
        decide(np.ones(3), np.ones(3), margin=0.0, identities=["a", "b"])

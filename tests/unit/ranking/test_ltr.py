"""LambdaMART with inverse-propensity weights: gradients, and the point of it, learning past position bias."""

import numpy as np
import pytest

from ranking.ltr import RankingData, evaluate_scores, ipw_weights, lambdamart_gradients, train_ranker


def test_gradients_push_the_better_item_up_and_sum_to_zero():
    scores = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
    y = np.array([0.0, 1.0, 0.0, 0.0, 1.0])
    grad, hess = lambdamart_gradients(scores, y, np.array([3, 2]))
    assert grad[1] < 0 and grad[0] > 0 and grad[2] > 0  # LightGBM descends: negative gradient = push up
    assert grad[4] < 0 < grad[3]
    assert grad[:3].sum() == pytest.approx(0.0) and grad[3:].sum() == pytest.approx(0.0)
    assert (hess > 0).all()


def test_a_weight_scales_the_pairs_of_its_item():
    scores, y, groups = np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([3])
    plain, _ = lambdamart_gradients(scores, y, groups)
    weighted, _ = lambdamart_gradients(scores, y, groups, np.array([4.0, 1.0, 1.0]))
    assert weighted == pytest.approx(4 * plain)


def test_groups_wider_than_a_chunk_and_uneven_sizes(monkeypatch):
    import ranking.ltr as ltr

    rng = np.random.default_rng(0)
    groups = rng.integers(1, 30, size=50)
    y = rng.integers(0, 2, size=groups.sum()).astype(float)
    scores = rng.normal(size=groups.sum())
    whole, _ = lambdamart_gradients(scores, y, groups)
    monkeypatch.setattr(ltr, "GROUP_CHUNK", 7)
    chunked, _ = lambdamart_gradients(scores, y, groups)
    assert chunked == pytest.approx(whole)


def test_ipw_weights_only_for_clicks_and_clipped():
    weights = ipw_weights(np.array([1, 0, 1, 1]), np.array([1, 2, 4, 60]), [1.0, 0.5, 0.33, 0.25], clip=3.0)
    assert weights == pytest.approx([1.0, 1.0, 3.0, 3.0])


def simulated_logs(queries: int, seed: int, propensity: np.ndarray):
    """Items whose relevance depends on x0 and x1, shown in an order that follows the irrelevant x2.

    Clicks follow the position-based model: examined with propensity(position), then clicked when
    relevant (0.9) or by mistake (0.05). Returns the click data and the true relevance labels.
    """
    rng = np.random.default_rng(seed)
    size = 20
    X = rng.normal(size=(queries * size, 3))
    relevance = ((X[:, 0] + 0.5 * X[:, 1]) > 1.0).astype(float)
    positions = np.empty(queries * size, dtype=int)
    for q in range(queries):
        rows = slice(q * size, (q + 1) * size)
        order = np.argsort(-(X[rows, 2] + 0.3 * X[rows, 0] + 0.3 * rng.normal(size=size)))
        positions[q * size + order] = np.arange(1, size + 1)
    examined = rng.random(queries * size) < propensity[positions - 1]
    clicks = (examined & (rng.random(queries * size) < np.where(relevance > 0, 0.9, 0.05))).astype(float)
    groups = np.full(queries, size)
    return X, clicks, relevance, positions, groups


def test_inverse_propensity_weighting_beats_naive_click_training():
    propensity = 1.0 / np.arange(1, 21) ** 1.0
    X, clicks, _, positions, groups = simulated_logs(1500, seed=1, propensity=propensity)
    X_test, _, relevance_test, _, groups_test = simulated_logs(300, seed=2, propensity=propensity)
    truth = RankingData(X_test, relevance_test, groups_test)
    naive = train_ranker(RankingData(X, clicks, groups), rounds=80)
    weighted = train_ranker(RankingData(X, clicks, groups, ipw_weights(clicks, positions, propensity)), rounds=80)
    naive_ndcg = evaluate_scores(naive.predict(X_test), truth)["ndcg@10"]
    ipw_ndcg = evaluate_scores(weighted.predict(X_test), truth)["ndcg@10"]
    logged_ndcg = evaluate_scores(-X_test[:, 2], truth)["ndcg@10"]  # roughly the logging order
    assert ipw_ndcg > naive_ndcg + 0.03, (ipw_ndcg, naive_ndcg)
    assert ipw_ndcg > logged_ndcg + 0.2


def test_early_stopping_keeps_the_best_iteration():
    propensity = np.ones(20)
    X, clicks, relevance, _, groups = simulated_logs(300, seed=3, propensity=propensity)
    X_v, _, relevance_v, _, groups_v = simulated_logs(100, seed=4, propensity=propensity)
    ranker = train_ranker(
        RankingData(X, relevance, groups), RankingData(X_v, relevance_v, groups_v), rounds=200, early_stopping=10
    )
    assert 1 <= ranker.best_iteration < 200 and ranker.metrics["ndcg@10"] > 0.8


def test_inconsistent_arrays_are_refused():
    with pytest.raises(ValueError):
        RankingData(np.zeros((4, 2)), np.zeros(4), np.array([3]))
    with pytest.raises(ValueError):
        RankingData(np.zeros((4, 2)), np.zeros(4), np.array([4]), weights=np.zeros(4))

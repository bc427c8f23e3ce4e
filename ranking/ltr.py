"""Learning to rank from clicks: LambdaMART with inverse-propensity weights, as pure functions over arrays.

Clicks are biased by position: an item shown first is examined far more often than one shown ninth,
so "clicked" mostly means "was high". Training on raw clicks learns the old ranking back. Following
Joachims, Swaminathan & Schnabel (WSDM 2017) and Hu et al.'s Unbiased LambdaMART (WWW 2019), each
pair (clicked i, not clicked j) is weighted by 1 / propensity(position of i): the inverse of the
chance that position was examined at all, which makes the expected loss that of full relevance.

LightGBM's built-in lambdarank sums sample weights per query, so the per-item weights are applied
in a custom objective: the LambdaMART gradients (pairwise logistic loss scaled by |ΔNDCG|) computed
with NumPy over groups padded to the same length, a chunk of groups at a time.

Nothing here touches the database: ``ranking.training_data`` builds the arrays from the logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np

from ranking.metrics import ndcg_at_k, reciprocal_rank

GROUP_CHUNK = 512  # groups per vectorised step: bounds memory at chunk x length^2 floats


@dataclass
class RankingData:
    """Rows grouped by search: features ``X``, labels ``y`` (click 0/1 or graded), ``groups`` sizes in row order.

    ``weights`` are per-row inverse propensities (1 for rows that are not clicks); None means unweighted.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    weights: np.ndarray | None = None
    feature_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.X = np.asarray(self.X, dtype=np.float64)
        self.y = np.asarray(self.y, dtype=np.float64)
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if self.X.shape[0] != self.y.shape[0] or int(self.groups.sum()) != self.y.shape[0]:
            raise ValueError("X, y and groups do not describe the same rows.")
        if self.weights is not None:
            self.weights = np.asarray(self.weights, dtype=np.float64)
            if self.weights.shape != self.y.shape or (self.weights <= 0).any():
                raise ValueError("weights must be positive, one per row.")


def ipw_weights(
    clicked: np.ndarray, positions: np.ndarray, propensity: Sequence[float], clip: float = 20.0
) -> np.ndarray:
    """1 / propensity(position) for clicked rows, 1 elsewhere; clipped at ``clip`` to bound the variance.

    ``propensity[k - 1]`` is the examination probability of position k (1-based); positions past the
    curve use its last value.
    """
    curve = np.asarray(propensity, dtype=np.float64)
    index = np.clip(np.asarray(positions, dtype=np.int64) - 1, 0, len(curve) - 1)
    return inverse_propensity(clicked, curve[index], clip)


def inverse_propensity(clicked: np.ndarray, propensities: np.ndarray, clip: float = 20.0) -> np.ndarray:
    """1 / propensity for clicked rows (each row's own propensity), 1 elsewhere; clipped at ``clip``."""
    floor = np.maximum(np.asarray(propensities, dtype=np.float64), 1.0 / clip)
    return np.where(np.asarray(clicked) > 0, 1.0 / floor, 1.0)


def _padded(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray, width: int, fill: float) -> np.ndarray:
    out = np.full((len(starts), width), fill, dtype=np.float64)
    for row, (start, size) in enumerate(zip(starts, sizes, strict=True)):
        out[row, :size] = values[start : start + size]
    return out


def lambdamart_gradients(
    scores: np.ndarray, y: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of the (weighted) LambdaMART loss for each row."""
    grad = np.zeros_like(scores, dtype=np.float64)
    hess = np.zeros_like(scores, dtype=np.float64)
    weights = np.ones_like(y) if weights is None else weights
    starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
    for chunk in range(0, len(groups), GROUP_CHUNK):
        c_starts, c_sizes = starts[chunk : chunk + GROUP_CHUNK], groups[chunk : chunk + GROUP_CHUNK]
        width = int(c_sizes.max())
        valid = np.arange(width)[None, :] < c_sizes[:, None]
        s = _padded(scores, c_starts, c_sizes, width, -1e9)
        labels = _padded(y, c_starts, c_sizes, width, 0.0)
        w = _padded(weights, c_starts, c_sizes, width, 1.0)
        # Current rank of each item by score (1-based), for the |ΔNDCG| of swapping two items.
        order = np.argsort(-s, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, width + 1)[None, :].repeat(len(c_sizes), 0), axis=1)
        discount = np.where(valid, 1.0 / np.log2(1.0 + ranks), 0.0)
        gain = np.where(valid, 2.0**labels - 1.0, 0.0)
        ideal = -np.sort(-gain, axis=1)
        idcg = (ideal / np.log2(2.0 + np.arange(width))[None, :]).sum(axis=1)
        idcg = np.where(idcg > 0, idcg, 1.0)
        pairs = (labels[:, :, None] > labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        delta = np.abs((gain[:, :, None] - gain[:, None, :]) * (discount[:, :, None] - discount[:, None, :]))
        delta /= idcg[:, None, None]
        rho = 1.0 / (1.0 + np.exp(np.clip(s[:, :, None] - s[:, None, :], -50, 50)))
        pair_weight = np.where(pairs, w[:, :, None] * delta, 0.0)  # weighted by the better item's 1/propensity
        lam = pair_weight * rho
        curvature = pair_weight * rho * (1.0 - rho)
        g = -lam.sum(axis=2) + lam.sum(axis=1)
        h = curvature.sum(axis=2) + curvature.sum(axis=1)
        for row, (start, size) in enumerate(zip(c_starts, c_sizes, strict=True)):
            grad[start : start + size] = g[row, :size]
            hess[start : start + size] = np.maximum(h[row, :size], 1e-9)
    return grad, hess


@dataclass
class TrainedRanker:
    booster: lgb.Booster
    feature_names: list[str]
    metrics: dict[str, float]
    best_iteration: int

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(np.asarray(X, dtype=np.float64), num_iteration=self.best_iteration or None)


DEFAULT_PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "verbose": -1,
    "num_threads": 0,
    "seed": 7,
    "deterministic": True,
    "force_row_wise": True,
}


def train_ranker(
    train: RankingData,
    valid: RankingData | None = None,
    *,
    rounds: int = 300,
    early_stopping: int = 30,
    params: dict | None = None,
) -> TrainedRanker:
    """Fit LambdaMART with the rows' inverse-propensity weights; early-stop on ``valid``'s counterfactual DCG@10.

    ``valid`` is the early-stopping window only: it chooses the round, so it flatters the model it
    chose and must not also judge it (the gate reads its own window, ``ranking.training_data.split_windows``).
    """
    params = {**DEFAULT_PARAMS, **(params or {})}
    weights = train.weights

    def objective(preds: np.ndarray, dataset: lgb.Dataset):
        return lambdamart_gradients(preds, train.y, train.groups, weights)

    params["objective"] = "none"  # the gradients come from ``objective`` at each update
    train_set = lgb.Dataset(
        train.X, label=train.y, group=train.groups, feature_name=train.feature_names or "auto", free_raw_data=False
    )
    best = {"score": -np.inf, "iteration": 0}
    booster = lgb.Booster(params=params, train_set=train_set)
    for iteration in range(1, rounds + 1):
        booster.update(fobj=objective)
        if valid is None:
            best["iteration"] = iteration
            continue
        score = counterfactual_dcg(booster.predict(valid.X, num_iteration=iteration), valid).mean()
        if score > best["score"] + 1e-9:
            best.update(score=score, iteration=iteration)
        elif iteration - best["iteration"] >= early_stopping:
            break
    metrics = {}
    if valid is not None:
        scores = booster.predict(valid.X, num_iteration=best["iteration"])
        metrics = {**evaluate_scores(scores, valid), "dcg@10_ips": float(counterfactual_dcg(scores, valid).mean())}
    return TrainedRanker(booster, list(train.feature_names), metrics, best["iteration"])


def evaluate_scores(scores: np.ndarray, data: RankingData, k: int = 10) -> dict[str, float]:
    """nDCG@k and MRR of the order ``scores`` gives within each group, against the data's labels as they are.

    On logged clicks this favours whatever order produced the log (users click what it put first);
    compare rankers on logs with ``counterfactual_dcg``. This is for labels that are the truth, such as
    a simulator's relevance.
    """
    ndcgs, rrs = [], []
    start = 0
    for size in data.groups:
        labels = data.y[start : start + size]
        order = np.argsort(-scores[start : start + size], kind="stable")
        ranked = labels[order]
        start += size
        if ranked.max() <= 0:
            continue  # a search with no positive label says nothing about the order
        gains = {i: float(g) for i, g in enumerate(ranked)}
        ndcgs.append(ndcg_at_k(list(range(len(ranked))), gains, k))
        rrs.append(reciprocal_rank(list(range(len(ranked))), {i for i, g in enumerate(ranked) if g > 0}))
    if not ndcgs:
        return {f"ndcg@{k}": 0.0, "mrr": 0.0, "groups": 0}
    return {f"ndcg@{k}": float(np.mean(ndcgs)), "mrr": float(np.mean(rrs)), "groups": len(ndcgs)}


def counterfactual_dcg(scores: np.ndarray, data: RankingData, k: int = 10) -> np.ndarray:
    """Per group, the inverse-propensity estimate of DCG@k on relevance if the group were ordered by ``scores``.

    Each clicked row counts (2^label - 1) x 1/propensity(its logged position) x 1/log2(1 + its new rank):
    in expectation over who examined what, that is the DCG of the new order on true relevance among the
    shown items (Joachims et al. 2017; Agarwal et al. 2019). It is *not* normalised per group: dividing
    by a group's ideal DCG computed from its clicks would bring the bias back, since a search whose one
    relevant item sat first gets its click far more often than one where it sat ninth.
    """
    weights = data.weights if data.weights is not None else np.ones_like(data.y)
    out = np.zeros(len(data.groups), dtype=np.float64)
    start = 0
    for g, size in enumerate(data.groups):
        block = slice(start, start + size)
        start += size
        order = np.argsort(-scores[block], kind="stable")[:k]
        gains = (2.0 ** data.y[block][order] - 1.0) * weights[block][order]
        out[g] = float((gains / np.log2(2.0 + np.arange(len(order)))).sum())
    return out

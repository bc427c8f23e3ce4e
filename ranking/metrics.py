"""Ranking and retrieval metrics: the one module used by tests, the evaluate command and benchmarks.

Every function takes a ranked list of ids (best first) and the relevant ids (a set, or a mapping
from id to graded relevance for nDCG). Conventions follow the IR literature:

- ``recall_at_k``: share of the relevant items found in the top k;
- ``hit_at_k``: 1 if any relevant item is in the top k (what CLIP papers call R@K for image-to-text,
  where an image has several correct captions); equal to recall when one item is relevant;
- ``ndcg_at_k``: exponential gain ``2^rel - 1`` and ``log2(rank + 1)`` discount (Järvelin & Kekäläinen 2002);
- ``reciprocal_rank``: ``1 / rank`` of the first relevant item, 0 if none is ranked.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Relevance = Collection[Hashable] | Mapping[Hashable, float]


def _grades(relevant: Relevance) -> Mapping[Hashable, float]:
    if isinstance(relevant, Mapping):
        return relevant
    return {item: 1.0 for item in relevant}


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError("k must be at least 1")


def recall_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    wanted = {item for item, grade in _grades(relevant).items() if grade > 0}
    if not wanted:
        raise ValueError("recall is undefined without relevant items")
    return len(wanted.intersection(ranked[:k])) / len(wanted)


def hit_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    grades = _grades(relevant)
    return 1.0 if any(grades.get(item, 0) > 0 for item in ranked[:k]) else 0.0


def precision_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    """Relevant items in the top k over k (a short list counts its missing places as misses)."""
    _check_k(k)
    grades = _grades(relevant)
    return sum(1 for item in ranked[:k] if grades.get(item, 0) > 0) / k


def reciprocal_rank(ranked: Sequence[Hashable], relevant: Relevance) -> float:
    grades = _grades(relevant)
    for rank, item in enumerate(ranked, 1):
        if grades.get(item, 0) > 0:
            return 1.0 / rank
    return 0.0


def dcg(gains: Iterable[float]) -> float:
    return sum((2.0**gain - 1.0) / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Relevance, k: int) -> float:
    _check_k(k)
    grades = _grades(relevant)
    ideal = dcg(sorted((g for g in grades.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        raise ValueError("nDCG is undefined without relevant items")
    return dcg(grades.get(item, 0.0) for item in ranked[:k]) / ideal


@dataclass
class MetricSummary:
    """Mean of each metric over queries, with the number of queries."""

    ks: tuple[int, ...] = (1, 5, 10)
    totals: dict[str, float] = field(default_factory=dict)
    queries: int = 0

    def add(self, ranked: Sequence[Hashable], relevant: Relevance) -> None:
        values = {"mrr": reciprocal_rank(ranked, relevant)}
        for k in self.ks:
            values[f"recall@{k}"] = recall_at_k(ranked, relevant, k)
            values[f"hit@{k}"] = hit_at_k(ranked, relevant, k)
            values[f"precision@{k}"] = precision_at_k(ranked, relevant, k)
            values[f"ndcg@{k}"] = ndcg_at_k(ranked, relevant, k)
        for name, value in values.items():
            self.totals[name] = self.totals.get(name, 0.0) + value
        self.queries += 1

    def means(self) -> dict[str, float]:
        if not self.queries:
            return {"queries": 0}
        return {"queries": self.queries, **{name: total / self.queries for name, total in sorted(self.totals.items())}}

"""Metrics pinned against hand-computed cases."""

import math

import pytest

from ranking.metrics import (
    MetricSummary,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
)

RANKED = ["a", "b", "c", "d", "e"]


def test_recall_and_precision():
    assert recall_at_k(RANKED, {"b", "e", "z"}, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, {"b", "e", "z"}, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED, {"b", "e"}, 2) == pytest.approx(0.5)
    assert precision_at_k(["a"], {"a"}, 5) == pytest.approx(0.2)  # a short list counts misses


def test_hit_is_any_relevant_in_top_k():
    assert hit_at_k(RANKED, {"c", "z"}, 2) == 0.0
    assert hit_at_k(RANKED, {"c", "z"}, 3) == 1.0


def test_reciprocal_rank():
    assert reciprocal_rank(RANKED, {"c"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(RANKED, {"z"}) == 0.0


def test_ndcg_binary_by_hand():
    # relevant at ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5); ideal = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(RANKED, {"b", "d"}, 5) == pytest.approx(expected)


def test_ndcg_graded_by_hand():
    grades = {"a": 1, "b": 3}
    dcg = (2**1 - 1) / math.log2(2) + (2**3 - 1) / math.log2(3)
    ideal = (2**3 - 1) / math.log2(2) + (2**1 - 1) / math.log2(3)
    assert ndcg_at_k(RANKED, grades, 3) == pytest.approx(dcg / ideal)


def test_perfect_ranking_scores_one():
    assert ndcg_at_k(["x", "y"], {"x", "y"}, 10) == pytest.approx(1.0)


def test_undefined_cases_raise():
    with pytest.raises(ValueError):
        recall_at_k(RANKED, set(), 3)
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, {"z": 0}, 3)
    with pytest.raises(ValueError):
        precision_at_k(RANKED, {"a"}, 0)


def test_summary_averages_over_queries():
    summary = MetricSummary(ks=(1,))
    summary.add(["a", "b"], {"a"})
    summary.add(["a", "b"], {"b"})
    means = summary.means()
    assert means["queries"] == 2
    assert means["recall@1"] == pytest.approx(0.5)
    assert means["mrr"] == pytest.approx(0.75)

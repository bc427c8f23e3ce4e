"""Experiment results as plain JSON-able data (the partner API and the simulation print this)."""

from __future__ import annotations

import math

from ranking.experiments.results import ExperimentResults, method_label
from ranking.experiments.statistics import Comparison, RatioEstimate


def _number(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))) else value


def _estimate(estimate: RatioEstimate) -> dict:
    return {
        "value": _number(estimate.value),
        "standard_error": _number(estimate.standard_error),
        "users": estimate.users,
    }


def _comparison(c: Comparison) -> dict:
    return {
        "difference": _number(c.difference),
        "relative": _number(c.relative),
        "ci95": [_number(c.low), _number(c.high)],
        "p_value": _number(c.p_value),
        "method": c.method,
    }


def as_report(r: ExperimentResults) -> dict:
    e = r.experiment
    report = {
        "id": e.pk,
        "name": e.name,
        "mode": e.mode,
        "surface": e.surface,
        "status": e.status,
        "primary_metric": e.primary_metric,
        "traffic_share": e.traffic_share,
        "started_at": e.started_at.isoformat() if e.started_at else None,
        "stopped_at": e.stopped_at.isoformat() if e.stopped_at else None,
        # What the p-values and intervals below mean: always valid (safe to read at any time) or fixed-horizon.
        "statistics": {"method": e.statistics, "description": method_label(e), "expected_effect": e.expected_effect},
        "verdict": r.verdict,
        "suggested_winner": r.winner.name if r.winner else None,
        "arms": [
            {
                "name": arm.variant.name,
                "control": arm.variant.is_control,
                "weight": arm.variant.weight,
                "config": arm.variant.describe(),
                "users": arm.users,
                "searches": arm.searches,
                "metrics": {name: _estimate(m) for name, m in arm.metrics.items()},
                "versus_control": {name: _comparison(c) for name, c in arm.comparisons.items()},
            }
            for arm in r.arms
        ],
        "sample_ratio": {
            "observed": r.sample_ratio.observed,
            "expected": r.sample_ratio.expected,
            "p_value": _number(r.sample_ratio.p_value),
            "mismatch": r.sample_ratio.mismatch,
        },
    }
    if r.interleaving is not None:
        i = r.interleaving
        report["interleaving"] = {
            "teams": [i.team_a, i.team_b],
            "users": i.users,
            "searches": i.searches,
            "wins": [i.wins_a, i.wins_b],
            "ties": i.ties,
            "preference": _estimate(i.preference),
            "p_value": _number(i.p_value),
            "method": i.method,
            "ci95": [_number(i.interval[0]), _number(i.interval[1])],
            "sign_test_p_value": _number(i.sign_test_p),
        }
    return report

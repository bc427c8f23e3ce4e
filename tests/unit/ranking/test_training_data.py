"""The three training windows: disjoint, in time order, and the gate's is never the early-stopping one."""

from datetime import UTC, datetime, timedelta

import numpy as np

from ranking.ltr import RankingData
from ranking.training_data import LoggedSearches, split_windows


def logged(n: int) -> LoggedSearches:
    """n searches of 3 rows each; every row's first column is its search's index in time."""
    X = np.repeat(np.arange(n, dtype=float), 3)[:, None] * np.ones((1, 2))
    y = np.tile([1.0, 0.0, 0.0], n)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(n)]
    data = RankingData(X, y, np.full(n, 3), np.ones(3 * n), ["search", "other"])
    return LoggedSearches(data, np.tile([1, 2, 3], n), np.tile([1.0, 2.0, 3.0], n), times[0], times[-1], times)


def searches(data: RankingData) -> set[int]:
    return {int(v) for v in data.X[:, 0]}


def test_the_gate_never_reads_the_early_stopping_window():
    windows = split_windows(logged(100))
    train, stopping, gate = searches(windows.train), searches(windows.early_stopping), searches(windows.gate)
    assert gate == set(range(80, 100)) and stopping == set(range(65, 80)) and train == set(range(65))
    assert not gate & stopping and not gate & train
    assert len(windows.gate_first_stage_rank) == windows.gate.y.shape[0]
    assert windows.bounds["early_stopping"][1] < windows.bounds["gate"][0]

"""Is a streaming replica fit to serve searches? Checked with one cheap query, remembered for about a second.

Lag is judged the way the standby sees it. ``now() - pg_last_xact_replay_timestamp()`` alone is wrong
on a quiet site: when the primary writes nothing for an hour, the last replayed commit is an hour old
although the replica is perfectly current. So a replica whose WAL receiver is streaming and has
replayed everything it received (``pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()``) counts as
caught up (lag 0); only a replica with received-but-unreplayed WAL (replay paused, or too slow) or no
live stream is judged by the age of its last replayed commit, which then bounds how stale it is.

A check costs one round trip on a connection the process keeps anyway; a search never waits for one
that another thread is running (it uses the last answer). A replica that did not answer is tried
again only after ``LOUPE_REPLICA_RETRY_SECONDS``, so a dead host costs one connect timeout per that
period, not one per search.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connections

from core.metrics import REPLICA_LAG_SECONDS

# pg_stat_wal_receiver shows ``status`` only to superusers and pg_read_all_stats; to others the row
# exists (the receiver's pid) with a NULL status, which we read as streaming.
LAG_SQL = """
SELECT pg_is_in_recovery(),
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE coalesce(status, 'streaming') = 'streaming')
           AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(),
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
"""


@dataclass(frozen=True)
class ReplicaState:
    alias: str
    usable: bool
    lag_seconds: float  # inf when unknown (down, never replayed anything)
    reason: str  # why it is not usable, or "caught up" / "lags N s"
    checked_at: float  # time.monotonic()


def judge(alias: str, in_recovery: bool, caught_up: bool | None, replay_age: float | None) -> ReplicaState:
    """The state a check's answer means (pure: tested without a server)."""
    now = time.monotonic()
    if not in_recovery:
        return ReplicaState(alias, False, math.inf, "not a standby (promoted, or the primary itself)", now)
    if caught_up:
        return ReplicaState(alias, True, 0.0, "caught up", now)
    lag = math.inf if replay_age is None else max(0.0, float(replay_age))
    limit = float(settings.LOUPE_REPLICA_MAX_LAG_SECONDS)
    if lag > limit:
        return ReplicaState(alias, False, lag, f"lags {lag:.1f} s (limit {limit:g} s)", now)
    return ReplicaState(alias, True, lag, f"lags {lag:.1f} s", now)


class ReplicaHealth:
    """Each replica's last known state in this process, refreshed when older than the check interval."""

    def __init__(self) -> None:
        self._states: dict[str, ReplicaState] = {}
        self._checking: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def state(self, alias: str) -> ReplicaState:
        known = self._states.get(alias)
        if known is not None and time.monotonic() - known.checked_at < self._max_age(known):
            return known
        with self._guard:
            lock = self._checking.setdefault(alias, threading.Lock())
        if not lock.acquire(blocking=False):  # another thread is checking: its answer comes shortly
            return known or ReplicaState(alias, False, math.inf, "first check running", time.monotonic())
        try:
            return self._remember(self.check(alias))
        finally:
            lock.release()

    @staticmethod
    def check(alias: str) -> ReplicaState:
        """Ask the replica now (on this thread's connection to it)."""
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute(LAG_SQL)
                in_recovery, caught_up, replay_age = cursor.fetchone()
        except DatabaseError as exc:
            with contextlib.suppress(DatabaseError):
                connections[alias].close()
            return ReplicaState(alias, False, math.inf, f"down: {type(exc).__name__}: {exc}", time.monotonic())
        return judge(alias, in_recovery, caught_up, replay_age)

    def mark_down(self, alias: str, reason: str) -> None:
        """A search just failed there: skip it until the next check is due."""
        self._remember(ReplicaState(alias, False, math.inf, f"down: {reason}", time.monotonic()))

    def forget(self) -> None:
        self._states.clear()

    def _remember(self, state: ReplicaState) -> ReplicaState:
        self._states[state.alias] = state
        REPLICA_LAG_SECONDS.labels(state.alias).set(state.lag_seconds)  # +Inf when down
        return state

    @staticmethod
    def _max_age(state: ReplicaState) -> float:
        if state.reason.startswith("down"):
            return float(settings.LOUPE_REPLICA_RETRY_SECONDS)
        return float(settings.LOUPE_REPLICA_CHECK_SECONDS)


replica_health = ReplicaHealth()

"""Judging a replica from its check's answer, and the replica aliases DATABASE_REPLICA_URLS makes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.replica_health import judge

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.LOUPE_REPLICA_MAX_LAG_SECONDS = 5.0


def test_a_caught_up_replica_serves_however_old_its_last_replayed_commit():
    """A quiet primary writes nothing for an hour: the replica is current, not an hour behind."""
    state = judge("replica1", in_recovery=True, caught_up=True, replay_age=3600.0)
    assert state.usable and state.lag_seconds == 0.0


def test_a_replica_with_unreplayed_wal_is_judged_by_its_last_replayed_commit():
    assert judge("replica1", True, False, 2.0).usable
    lagging = judge("replica1", True, False, 9.0)
    assert not lagging.usable and lagging.lag_seconds == 9.0 and lagging.reason.startswith("lags 9.0 s")
    never = judge("replica1", True, None, None)  # nothing replayed yet, no stream
    assert not never.usable and math.isinf(never.lag_seconds)


def test_a_server_that_is_not_a_standby_never_serves_as_a_replica():
    state = judge("replica1", in_recovery=False, caught_up=None, replay_age=None)
    assert not state.usable and "not a standby" in state.reason


def test_replica_urls_become_mirrored_replica_aliases_with_a_connect_timeout(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_REPLICA_URLS")}
    env.update(
        LOUPE_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL="postgres://loupe@primary:5432/loupe",
        DATABASE_REPLICA_URLS="postgres://loupe@r1:5432/loupe,postgres://loupe@/loupe?host=/run/pg",
    )
    code = "import json, config.settings as s; print(json.dumps(s.DATABASES, default=str))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    databases = json.loads(done.stdout)
    assert list(databases) == ["default", "replica1", "replica2"]
    assert "LOUPE_REPLICA" not in databases["default"]
    first, second = databases["replica1"], databases["replica2"]
    assert first["HOST"] == "r1" and first["LOUPE_REPLICA"] and first["TEST"] == {"MIRROR": "default"}
    assert first["OPTIONS"]["connect_timeout"] == 2
    assert second["HOST"] == "/run/pg" and "host" not in second["OPTIONS"]

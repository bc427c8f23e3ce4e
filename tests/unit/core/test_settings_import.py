"""Importing the settings starts no server and writes no file; the layering contract holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.runtime import runtime_dir

ROOT = Path(__file__).resolve().parents[3]


def test_importing_settings_creates_nothing_and_starts_nothing(tmp_path):
    var_dir = tmp_path / "fresh-var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY")}
    env.update(LOUPE_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="config.settings")
    code = "import config.settings as s; print(s.DATABASES['default']['ENGINE'], s.REDIS_URL)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    engine, redis_url = done.stdout.split()
    assert engine == "core.embedded_postgres"  # the server starts on first connect, not on import
    assert not var_dir.exists()  # no var folder, secret key, static folder or database cluster
    assert not runtime_dir(var_dir).exists()  # no socket folder either, so no Redis was started
    assert redis_url == f"redis+socket://{runtime_dir(var_dir) / 'redis.sock'}"


def test_the_layers_contract_is_kept():
    """bin/test runs the same contract; this says which import broke it when it fails in pytest."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:]

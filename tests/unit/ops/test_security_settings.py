"""Issue 19, finding 10: the production configuration passes Django's deployment checks, and the
security headers and TLS settings follow the environment.

The compose file's own environment is used (its ``${VAR:-default}`` defaults resolved as Compose
would), so a change to docker-compose.yml that weakens it fails here.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50), "POSTGRES_PASSWORD": "a-test-password"}


def _resolve(value: str) -> str:
    """Compose's interpolation for the forms the file uses: ${A}, ${A:-default}, ${A:?message}."""

    def one(match: re.Match) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in REQUIRED:
            return REQUIRED[name]
        return rest if op == ":-" else ""

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, str(value))


def compose_env() -> dict[str, str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return {name: _resolve(value) for name, value in compose["services"]["web"]["environment"].items()}


def _check_deploy(tmp_path, **overrides) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LOUPE_", "DATABASE_", "REDIS_"))}
    env = {
        **keep,
        **compose_env(),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "LOUPE_VAR_DIR": str(tmp_path / "var"),
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_compose_environment(tmp_path):
    result = _check_deploy(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_without_tls(tmp_path):
    # The same check sees what a deployment without LOUPE_TLS would miss.
    result = _check_deploy(tmp_path, LOUPE_TLS="false")
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def _settings_with(tmp_path, **env) -> dict:
    """The settings module imported fresh in a child process with ``env``: the values it chose."""
    names = [
        "SECURE_PROXY_SSL_HEADER",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "SECURE_CONTENT_TYPE_NOSNIFF",
        "SECURE_REFERRER_POLICY",
        "X_FRAME_OPTIONS",
    ]
    code = f"import json, config.settings as s; print(json.dumps({{n: getattr(s, n, None) for n in {names!r}}}))"
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "LOUPE_"))}
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**keep, "LOUPE_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(run.stdout)


@pytest.mark.parametrize("tls", [False, True])
def test_tls_settings_follow_the_environment(tmp_path, tls):
    found = _settings_with(tmp_path, LOUPE_TLS=str(tls).lower(), LOUPE_BEHIND_PROXY=str(tls).lower())
    assert found["SECURE_SSL_REDIRECT"] is tls
    assert found["SESSION_COOKIE_SECURE"] is tls and found["CSRF_COOKIE_SECURE"] is tls
    assert (found["SECURE_HSTS_SECONDS"] >= 31_536_000) if tls else found["SECURE_HSTS_SECONDS"] == 0
    assert found["SECURE_PROXY_SSL_HEADER"] == (["HTTP_X_FORWARDED_PROTO", "https"] if tls else None)
    # Always on, whatever the environment:
    assert found["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert found["SECURE_REFERRER_POLICY"] == "same-origin" and found["X_FRAME_OPTIONS"] == "DENY"


def test_nginx_passes_on_the_load_balancers_scheme():
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-Proto $loupe_forwarded_proto;" in conf
    assert re.search(r"map \$http_x_forwarded_proto \$loupe_forwarded_proto \{[^}]*https https;", conf)


def test_each_gunicorn_instance_has_its_own_control_socket(tmp_path):
    code = (
        "from gunicorn.config import Config; import config.gunicorn_conf as g; c = Config(); "
        "c.set('control_socket', g.control_socket); print(c.control_socket)"
    )
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    sockets = []
    for name in ("one", "two"):
        run = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**keep, "LOUPE_VAR_DIR": str(tmp_path / name)},
            capture_output=True,
            text=True,
            check=True,
        )
        sockets.append(run.stdout.strip())
    assert sockets[0] != sockets[1]
    assert all(s.endswith("/gunicorn.ctl") and "/loupe-" in s for s in sockets)

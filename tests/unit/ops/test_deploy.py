"""docker-compose.yml: valid against the Compose specification, and running the very commands the
embedded default (`manage.py run`) runs, with the settings the code really reads.

Docker cannot run on these machines, so this is how CI keeps the production files honest.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from searchapp.processes import PROCESSES

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_is_valid_against_the_compose_specification():
    checker = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_compose_file_is_caught_by_the_same_check(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    healthcheck:\n", "    healthcheck: yes-please\n", 1))
    checker = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([checker, "--builtin-schema", "vendor.compose-spec", str(broken)], capture_output=True)
    assert result.returncode != 0


@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_each_long_running_service_runs_the_command_manage_py_run_runs(compose, name):
    service = compose["services"][name]
    assert service["command"][: len(PROCESSES[name])] == PROCESSES[name]
    assert service["restart"] == "unless-stopped" and "test" in service["healthcheck"]


def test_the_services_a_deployment_needs(compose):
    services = compose["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:") and "--appendonly" in services["redis"]["command"]
    assert "training" in services["trainer"]["command"] and "training" not in services["worker"]["command"]
    assert services["web"]["healthcheck"]["test"][-1].endswith("/readyz', timeout=10)")
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in ("web", "worker", "trainer", "beat"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
        assert "loupe-var:/var/lib/loupe" in services[name]["volumes"]
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "loupe-var"}


def test_every_environment_variable_given_is_one_the_code_reads(compose):
    packages = ("config", "core", "collection", "searchapp")
    read = "\n".join(p.read_text() for package in packages for p in (ROOT / package).rglob("*.py"))
    given = set(compose["services"]["web"]["environment"]) | set(compose["services"]["db"]["environment"])
    for name in given - {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "PROMETHEUS_MULTIPROC_DIR"}:
        assert re.search(rf'["\']{name}["\']', read), f"{name} is set in docker-compose.yml but never read"


def test_nginx_serves_media_from_where_the_app_stores_it(compose):
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    var_dir = compose["x-app"]["environment"].get("LOUPE_VAR_DIR", "/var/lib/loupe")
    assert f"alias {var_dir}/media/;" in conf
    assert "ENV PYTHONUNBUFFERED=1" in (ROOT / "Dockerfile").read_text()
    assert "LOUPE_VAR_DIR=/var/lib/loupe" in (ROOT / "Dockerfile").read_text()


def test_the_image_starts_the_web_process_by_default():
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert yaml.safe_load(cmd)[: len(PROCESSES["web"])] == PROCESSES["web"]

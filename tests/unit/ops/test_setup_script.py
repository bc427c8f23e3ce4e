"""bin/setup's arguments: the default install stays the CPU build; ``--cuda`` takes torch from PyTorch's CUDA index.

The install itself is not run (no GPU here, and it would reinstall .venv): ``LOUPE_SETUP_DRY_RUN=1`` makes the
script print what it would install after parsing its arguments, and stop.
"""

import os
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[3] / "bin" / "setup"


def dry_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SETUP), *args],
        env={**os.environ, "LOUPE_SETUP_DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SETUP)], capture_output=True).returncode == 0


@pytest.mark.parametrize("args, kind", [((), "run"), (("dev",), "dev")])
def test_the_default_install_is_the_cpu_build(args, kind):
    result = dry_run(*args)
    assert result.returncode == 0, result.stderr
    assert f"build=cpu kind={kind}" in result.stdout
    assert "download.pytorch.org" not in result.stdout


@pytest.mark.parametrize("args", [("--cuda", "dev"), ("dev", "--cuda")])
def test_cuda_takes_torch_from_the_cuda_index_in_either_order(args):
    result = dry_run(*args)
    assert result.returncode == 0, result.stderr
    assert "build=cuda kind=dev" in result.stdout
    assert "from https://download.pytorch.org/whl/cu128" in result.stdout


def test_the_cuda_index_can_be_chosen():
    result = dry_run("--cuda", LOUPE_TORCH_CUDA_INDEX="https://download.pytorch.org/whl/cu126")
    assert "from https://download.pytorch.org/whl/cu126" in result.stdout


def test_an_unknown_argument_is_refused_with_the_usage():
    result = dry_run("--gpu")
    assert result.returncode == 2
    assert "unknown argument '--gpu'" in result.stderr and "bin/setup [--cuda] [dev]" in result.stderr

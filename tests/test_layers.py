"""The layer contracts in pyproject.toml hold: backend/desktop separation, docker and NVML each in one module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
CONFIG = ROOT / "pyproject.toml"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # lint-imports puts its working directory first on sys.path: the packages it checks are those under cwd.
    return subprocess.run([str(LINT), "--no-cache", "--config", str(CONFIG)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    contracts = len(tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"])
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {contracts} kept, 0 broken" in result.stdout, result.stdout


def test_a_forbidden_import_would_be_caught(tmp_path):
    """The linter really looks: a desktop module importing docker breaks a contract.

    The probe goes into a copy of the packages, so the source tree is never written (a run
    interrupted mid-test, or a parallel one, would otherwise see or keep the probe).
    """
    for package in ("backend", "desktop"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "desktop" / "_contract_probe.py").write_text("import docker\n")
    result = _lint(tmp_path)
    assert result.returncode != 0 and "broken" in result.stdout, result.stdout + result.stderr
    assert "desktop._contract_probe -> docker" in result.stdout, result.stdout
    assert not (ROOT / "desktop" / "_contract_probe.py").exists()

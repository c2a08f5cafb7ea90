"""The layer contracts in pyproject.toml hold: backend/desktop separation, docker and NVML each in one module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken" in result.stdout, result.stdout


def test_a_forbidden_import_would_be_caught(tmp_path):
    """The linter really looks: a desktop module importing docker breaks a contract."""
    bad = ROOT / "desktop" / "_contract_probe.py"
    bad.write_text("import docker\n")
    try:
        result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT,
                                capture_output=True, text=True, timeout=300)
    finally:
        bad.unlink()
    assert result.returncode != 0 and "broken" in result.stdout

"""`modeldeck --self-check` (desktop/self_check.py) and how the desktop finds the backend program to spawn."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from desktop import self_check
from desktop.backend_process import backend_command
from tests.conftest import DISPLAY_PROBLEM

ROOT = Path(__file__).resolve().parents[2]


def run_self_check(*args: str, **env_vars: str | None) -> subprocess.CompletedProcess:
    """``--self-check`` from source on the suite's platform (xcb on the X display tests/conftest.py found)."""
    env = {**os.environ, **env_vars}
    for key in [k for k, v in env_vars.items() if v is None]:
        env.pop(key)
    return subprocess.run([sys.executable, "-m", "desktop", "--self-check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_backend_command_runs_the_module_from_source(monkeypatch):
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert backend_command(8123) == (sys.executable, ["-m", "backend.server", "--port", "8123"])


def test_backend_command_in_a_bundle_is_the_executable_beside_the_desktop(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "modeldeck"))
    name = "modeldeck-backend.exe" if sys.platform == "win32" else "modeldeck-backend"
    assert backend_command(8123) == (str(tmp_path / name), ["--port", "8123"])


def test_catalog_check_names_what_is_missing():
    ok = self_check.catalog_result({"recipes": [{"name": n} for n in sorted(self_check.EXPECTED_RECIPES)]})
    assert ok.ok is True and ok.detail.startswith("6 recipes")
    bad = self_check.catalog_result({"recipes": [{"name": "demo"}]})
    assert bad.ok is False and "missing: llama-cpp, ollama, sglang, tgi, vllm" in bad.detail
    assert self_check.catalog_result({"recipes": []}).ok is False


def test_an_unreachable_engine_is_information_not_failure():
    info = self_check.engine_result({"reachable": False, "reason": "no socket"})
    assert info.ok is None and info.line().startswith("[INFO] engine") and "no socket" in info.detail
    assert self_check.engine_result({"reachable": True, "kind": "docker", "version": "27"}).ok is True
    assert self_check.engine_result("garbage").ok is False


@pytest.mark.gui
def test_self_check_from_source_passes_and_names_every_check():
    result = run_self_check()
    report = result.stdout
    assert result.returncode == 0, report + result.stderr[-3000:]
    for name in self_check.CHECKS:
        assert re.search(rf"^\[(PASS|INFO)\] {re.escape(name)} ", report, re.M), report
    assert f"spawned ({Path(sys.executable).name})" in report and report.rstrip().endswith("self-check passed")
    if DISPLAY_PROBLEM is None:  # the platform a person's desktop uses, on the X server the tests use
        assert f"[PASS] platform  xcb (X display {os.environ['DISPLAY']})" in report, report


@pytest.mark.gui
def test_self_check_without_a_display_runs_offscreen_and_checks_xcbs_libraries():
    # Offscreen truly needed: this is the headless case (no DISPLAY, no platform asked for).
    result = run_self_check(DISPLAY=None, WAYLAND_DISPLAY=None, QT_QPA_PLATFORM=None, XDG_SESSION_TYPE=None)
    report = result.stdout
    assert result.returncode == 0, report + result.stderr[-3000:]
    assert ("[PASS] platform  offscreen: no display named (DISPLAY, WAYLAND_DISPLAY unset); "
            "xcb's system libraries are all present") in report, report


@pytest.mark.gui
def test_an_engine_that_does_not_answer_is_reported_but_passes(tmp_path):
    result = run_self_check(MODELDECK_DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    report = result.stdout
    assert result.returncode == 0, report + result.stderr[-3000:]
    assert re.search(r"^\[INFO\] engine +not reachable", report, re.M), report


@pytest.mark.gui
def test_self_check_gives_up_at_its_time_limit_and_leaves_no_backend():
    result = run_self_check("--self-check-timeout", "0.3")
    report = result.stdout
    assert result.returncode == 1, report + result.stderr[-3000:]
    assert "no answer within" in report and report.rstrip().endswith("self-check FAILED")
    port = int(re.search(r"backend at http://127\.0\.0\.1:(\d+)", report).group(1))
    with socket.socket() as sock:  # a backend it started was stopped on the way out
        assert sock.connect_ex(("127.0.0.1", port)) != 0

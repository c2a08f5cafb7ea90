"""`modeldeck-backend` as a real process: start-up, token file, a taken port, a clean stop with a stream open."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import free_port

BIN = str(Path(sys.executable).with_name("modeldeck-backend"))


def test_taken_port_is_a_clear_startup_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([BIN, "--port", str(port)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MODELDECK_HOME": str(tmp_path)})
    assert r.returncode == 2
    assert f"port {port}" in r.stderr and "already in use" in r.stderr and "--port" in r.stderr


@pytest.mark.docker
def test_serves_writes_a_private_token_and_stops_with_a_stream_open(tmp_path, engine):
    port = free_port()
    home = tmp_path / "home"
    proc = subprocess.Popen([BIN, "--port", str(port), "--log-level", "warning"],
                            env={**os.environ, "MODELDECK_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        token_file = home / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        assert httpx.get(f"{base}/api/deployments", headers=auth).status_code == 200
        assert httpx.get(f"{base}/api/deployments").status_code == 401

        with httpx.stream("GET", f"{base}/api/stats/stream", headers=auth, timeout=10) as s:
            lines = s.iter_lines()  # kept: collecting it would close the stream before the Ctrl+C
            next(lines)
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        assert time.monotonic() - started < 5, "an open stats stream must not hold up shutdown"
        # uvicorn re-raises the captured SIGINT after its graceful shutdown.
        output = proc.stdout.read()
        assert proc.returncode == 130, output  # the shell convention for Ctrl+C
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_exits_130_whatever_sigint_disposition_it_was_started_with(tmp_path, inherited):
    # A shell without job control (scripts run with `&`, many CI and test runners) starts its
    # background commands with SIGINT ignored. uvicorn re-raises the Ctrl+C it handled after its
    # graceful shutdown; with SIGINT ignored that re-raise vanished and the backend exited 0.
    port = free_port()
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None
    proc = subprocess.Popen([BIN, "--port", str(port), "--log-level", "warning"], preexec_fn=ignore,
                            env={**os.environ, "MODELDECK_HOME": str(tmp_path / "home")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the backend did not answer within 30 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        output = proc.stdout.read()
        assert proc.returncode == 130, output
        assert "Traceback" not in output, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

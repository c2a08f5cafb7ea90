"""`modeldeck-backend` as a real process: start-up, token file, a taken port, a clean stop with a stream open."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time

import httpx
import pytest

from tests.support.backend_process import BackendProcess

def test_taken_port_is_a_clear_startup_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([*BackendProcess.command(), "--port", str(port)], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MODELDECK_HOME": str(tmp_path)})
    assert r.returncode == 2
    assert f"port {port}" in r.stderr and "already in use" in r.stderr and "--port" in r.stderr


@pytest.mark.docker
def test_serves_writes_a_private_token_and_stops_with_a_stream_open(tmp_path, engine):
    backend = BackendProcess(tmp_path / "home", token=None, log_level="warning")
    try:
        backend.start()
        token_file = backend.home / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        auth = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        assert httpx.get(f"{backend.url}/api/deployments", headers=auth).status_code == 200
        assert httpx.get(f"{backend.url}/api/deployments").status_code == 401

        with httpx.stream("GET", f"{backend.url}/api/stats/stream", headers=auth, timeout=10) as s:
            lines = s.iter_lines()  # kept: collecting it would close the stream before the Ctrl+C
            next(lines)
            started = time.monotonic()
            backend.proc.send_signal(signal.SIGINT)
            backend.proc.wait(timeout=10)
        assert time.monotonic() - started < 5, "an open stats stream must not hold up shutdown"
        # uvicorn re-raises the captured SIGINT after its graceful shutdown.
        output = backend.log()
        assert backend.proc.returncode == 130, output  # the shell convention for Ctrl+C
        assert "Traceback" not in output, output
    finally:
        backend.kill()


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_exits_130_whatever_sigint_disposition_it_was_started_with(tmp_path, inherited):
    # A shell without job control (scripts run with `&`, many CI and test runners) starts its
    # background commands with SIGINT ignored. uvicorn re-raises the Ctrl+C it handled after its
    # graceful shutdown; with SIGINT ignored that re-raise vanished and the backend exited 0.
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None
    backend = BackendProcess(tmp_path / "home", token=None, log_level="warning")
    try:
        backend.start(preexec_fn=ignore)
        backend.proc.send_signal(signal.SIGINT)
        backend.proc.wait(timeout=15)
        output = backend.log()
        assert backend.proc.returncode == 130, output
        assert "Traceback" not in output, output
    finally:
        backend.kill()

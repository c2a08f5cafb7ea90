"""The real backend (``modeldeck-backend``) as a child process on a free loopback port, in a temporary home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

TOKEN = "backend-process-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class BackendProcess:
    """``modeldeck-backend`` run as a child process, so that a test can signal or SIGKILL it.

    Containers it makes carry this run's label. Its output goes to ``log_path`` (appended across
    restarts, so checks for leaked secrets see all of it). Stop it at the end with ``stop()``
    (the reliability suite's ``backends`` fixture does).

    Args:
        home: its MODELDECK_HOME.
        demo_base_image: the demo's base image; None leaves the backend's own choice.
        docker_host: MODELDECK_DOCKER_HOST, e.g. a forwarder a test can cut.
        env: more variables for the process.
        token: the API token; None lets the backend write its own token file into ``home``.
        log_level: uvicorn's ``--log-level``.
    """

    def __init__(self, home: Path, *, demo_base_image: str | None = None, docker_host: str | None = None,
                 env: dict[str, str] | None = None, token: str | None = TOKEN, log_level: str = "info"):
        self.home = home
        self.log_path = home.parent / f"{home.name}-backend.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_level = log_level
        self.env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_EXTRA_LABELS": f"{RUN_LABEL}={RUN_ID}",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        if demo_base_image:
            self.env["MODELDECK_DEMO_BASE_IMAGE"] = demo_base_image
        self.token = token
        if token:
            self.env["MODELDECK_TOKEN"] = token
        else:
            self.env.pop("MODELDECK_TOKEN", None)
        if docker_host:
            self.env["MODELDECK_DOCKER_HOST"] = docker_host
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def command() -> list[str]:
        """The installed ``modeldeck-backend`` script, else ``python -m backend.server``."""
        script = Path(sys.executable).parent / "modeldeck-backend"
        return [str(script)] if script.exists() else [sys.executable, "-m", "backend.server"]

    def start(self, timeout: float = 30.0, *, preexec_fn: Callable[[], object] | None = None) -> float:
        """Start it and wait until ``/api/health`` answers; the seconds that took.

        Args:
            preexec_fn: run in the child before exec (e.g. to start it with SIGINT ignored).

        Raises:
            AssertionError: it exited, or did not answer within ``timeout``; the message has its log's tail.
        """
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.command(), "--port", str(self.port), "--log-level", self.log_level],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=preexec_fn)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"modeldeck-backend exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200

        try:
            wait_until(answers, timeout, what="modeldeck-backend to answer /api/health")
        except AssertionError as exc:
            if self.proc.poll() is None:
                raise AssertionError(f"{exc}\n{self.log()[-3000:]}") from None
            raise
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill of the backend."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s; nothing if it is not running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        """Everything it has written so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- API shortcuts, with this process's token ------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header: the given token, else the one the backend wrote into its home."""
        token = self.token or (self.home / "token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.auth, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, headers={**self.auth, **kw.pop("headers", {})},
                          timeout=kw.pop("timeout", 30), **kw)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.url + path, headers=self.auth, timeout=30)

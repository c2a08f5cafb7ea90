"""Helpers of the reliability suite: the real backend as a killable process, SSE reading, waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import free_port
from tests.support.sse import sse_events  # noqa: F401 - re-exported for the reliability tests

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Call ``check`` until it returns something truthy; that value, or AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s (last: {last!r})")
        time.sleep(interval)


class BackendProcess:
    """``modeldeck-backend`` run as a child process on a free port, so that a test can SIGKILL it.

    Its output goes to ``log_path`` (appended across restarts, so secret checks see all of it).
    """

    def __init__(self, home: Path, *, demo_base_image: str, docker_host: str | None = None,
                 env: dict[str, str] | None = None, token: str | None = TOKEN):
        self.home = home
        self.log_path = home.parent / f"{home.name}-backend.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_DEMO_BASE_IMAGE": demo_base_image,
                    "MODELDECK_EXTRA_LABELS": f"{RUN_LABEL}={RUN_ID}", "PYTHONUNBUFFERED": "1", **(env or {})}
        if token:
            self.env["MODELDECK_TOKEN"] = token
        else:
            self.env.pop("MODELDECK_TOKEN", None)
        if docker_host:
            self.env["MODELDECK_DOCKER_HOST"] = docker_host
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def command() -> list[str]:
        script = Path(sys.executable).parent / "modeldeck-backend"
        return [str(script)] if script.exists() else [sys.executable, "-m", "backend.server"]

    def start(self, timeout: float = 30.0) -> float:
        """Start it and wait until ``/api/health`` answers; the seconds that took."""
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*self.command(), "--port", str(self.port), "--log-level", "info"],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = t0 + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"modeldeck-backend exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"modeldeck-backend did not answer within {timeout} s:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill of the backend."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- API shortcuts ---------------------------------------------------------------

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=AUTH, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, headers={**AUTH, **kw.pop("headers", {})},
                          timeout=kw.pop("timeout", 30), **kw)

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(self.url + path, headers=AUTH, timeout=30)


def launch(base_url: str, served: str, *, follow: bool = True, stop_at: str | None = None,
           **extra) -> tuple[str, list[dict]]:
    """Launch the demo as ``served``; follow its progress until it ends, or until phase ``stop_at``."""
    r = httpx.post(f"{base_url}/api/deployments", headers=AUTH, timeout=30,
                   json={"recipe": "demo", "model": "demo-tiny", "served_name": served, **extra})
    assert r.status_code in (200, 202), r.text
    dep_id = r.json()["id"]
    events: list[dict] = []
    if follow:
        with httpx.stream("GET", f"{base_url}/api/deployments/{dep_id}/events", headers=AUTH, timeout=120) as s:
            for name, data in sse_events(s):
                if name != "progress":
                    continue
                events.append(json.loads(data))
                if stop_at is not None and events[-1]["phase"] == stop_at:
                    break
    return dep_id, events


def figure(name: str, value: float | int | str) -> None:
    """Report a measured figure (``pytest -s`` shows them; docs/reliability.md quotes them)."""
    print(f"\nFIGURE {name} = {value}", flush=True)

"""backend.sse through the deployments routes, over real HTTP: the frames clients parse, pings, and a client that leaves."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

import backend.sse as sse
from backend.launches import LaunchEvent
from backend.routes.deployments import router
from tests.support.live_server import serve
from tests.support.waiting import wait_until


class FakeDeployments:
    """What the deployments routes call for streams: followed logs and launch progress."""

    def __init__(self):
        self.open_streams = 0
        self.closed_streams = 0

    async def follow_logs(self, dep_id: str, tail: int):
        return self._lines(dep_id)

    async def _lines(self, dep_id: str):
        self.open_streams += 1
        try:
            yield "first line"
            yield 'a "quoted" line'
            if dep_id == "live":
                await asyncio.Event().wait()  # a container that keeps running, silently
        finally:
            self.closed_streams += 1

    def launch_progress(self, dep_id: str):
        return self

    async def follow(self):
        for seq, phase in enumerate(("pulling", "starting", "ready")):
            yield LaunchEvent(seq=seq, time=float(seq), deployment_id="d1", phase=phase, message=phase)


@pytest.fixture()
def api():
    fake = FakeDeployments()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.deployments = fake
        yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    with serve(app) as url:
        yield url, fake


def test_log_frames_byte_for_byte_then_end(api):
    url, fake = api
    with httpx.stream("GET", f"{url}/api/deployments/done/logs", params={"follow": "true"}, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache" and r.headers["x-accel-buffering"] == "no"
        body = r.read()
    assert body == (b'event: log\ndata: {"line": "first line"}\n\n'
                    b'event: log\ndata: {"line": "a \\"quoted\\" line"}\n\n'
                    b"event: end\ndata: {}\n\n")
    assert fake.closed_streams == 1


def test_launch_progress_frames_and_the_stream_ends(api):
    url, _ = api
    with httpx.stream("GET", f"{url}/api/deployments/d1/events", timeout=10) as r:
        frames = r.read().decode().split("\n\n")
    assert frames[-1] == ""
    events = []
    for frame in frames[:-1]:
        name, data = frame.split("\n")
        assert name == "event: progress"
        events.append(json.loads(data.removeprefix("data: ")))
    assert [e["phase"] for e in events] == ["pulling", "starting", "ready"]


def test_pings_while_quiet_and_a_client_that_leaves_ends_the_stream(api, monkeypatch):
    monkeypatch.setattr(sse, "HEARTBEAT_S", 0.2)
    url, fake = api
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{url}/api/deployments/live/logs", params={"follow": "true"}) as r:
            lines = r.iter_lines()
            seen = []
            for line in lines:
                seen.append(line)
                if line.startswith(":"):
                    break
            del lines
    assert seen[:2] == ['event: log', 'data: {"line": "first line"}']
    assert seen[-1] == ": ping", seen
    # The client went away while the container was quiet: the log stream is closed.
    wait_until(lambda: fake.closed_streams == 1, timeout=5, what="the engine's log stream to be closed")
    assert fake.open_streams == 1

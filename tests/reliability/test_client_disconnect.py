"""A client that leaves before or after the first token: the model server stops within 500 ms."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import RUN_ID
from tests.reliability.support import figure
from tests.support.backend_process import AUTH, TOKEN, BackendProcess
from tests.support.deployments import demo_body, launch
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN_DELAY_S = 0.2  # the demo checks its client before each token: this bounds how late it can notice
LIMIT_S = 0.5


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_base_image, engine, demo_image):
    backend = BackendProcess(tmp_path_factory.mktemp("disconnect") / "home", demo_base_image=demo_base_image)
    backend.start()
    served = f"t{RUN_ID}-disc"
    try:
        dep_id, events = launch(backend.url, TOKEN, demo_body(served, env={"DEMO_TOKEN_DELAY": str(TOKEN_DELAY_S)}))
        assert events[-1]["phase"] == "ready", events[-3:]
        port = backend.get(f"/api/deployments/{dep_id}").json()["host_port"]
        wait_until(lambda: served in [m["id"] for m in backend.get("/v1/models").json()["data"]], 5, what="routed")
        yield backend, served, f"http://127.0.0.1:{port}/health"
    finally:
        backend.stop()
        for c in engine.client.containers.list(all=True, filters={"label": f"modeldeck.id={served}"}):
            c.remove(force=True)


def wait_cancelled(health: str, before: int, t_left: float) -> float:
    """Seconds from the client leaving until the model server counted the generation cancelled."""
    def done():
        h = httpx.get(health, timeout=2).json()
        return h["active_generations"] == 0 and h["cancelled_generations"] > before
    wait_until(done, 3, interval=0.01, what="upstream generation cancelled")
    return time.monotonic() - t_left


def body(served: str, stream: bool) -> dict:
    return {"model": served, "stream": stream, "max_tokens": 200, "messages": [{"role": "user", "content": "story"}]}


@pytest.mark.parametrize("when", ["before first token", "after first token"])
def test_streaming_client_leaves(demo, when):
    backend, served, health = demo
    before = httpx.get(health).json()["cancelled_generations"]
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", f"{backend.url}/v1/chat/completions", headers=AUTH, json=body(served, True)) as r:
            assert r.status_code == 200
            if when == "after first token":
                lines = r.iter_lines()  # kept: collecting it would close the stream before t_left
                next(lines)
            else:
                assert httpx.get(health).json()["active_generations"] == 1
            t_left = time.monotonic()
    took = wait_cancelled(health, before, t_left)
    figure(f"stream, client leaves {when}: upstream stopped after (s)", f"{took:.3f}")
    assert took < LIMIT_S


def test_non_streaming_client_leaves_before_the_answer(demo):
    backend, served, health = demo
    before = httpx.get(health).json()["cancelled_generations"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{backend.url}/v1/chat/completions", headers=AUTH, json=body(served, False),
                   timeout=httpx.Timeout(30, read=0.5))
    t_left = time.monotonic()  # httpx closed the connection on the timeout
    took = wait_cancelled(health, before, t_left)
    figure("non-streamed, client leaves before the answer: upstream stopped after (s)", f"{took:.3f}")
    assert took < LIMIT_S

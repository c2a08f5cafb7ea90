"""Model containers that die: killed mid-stream, crashing on their own (restart policy), killed for memory."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from backend.catalog import load_catalog
from backend.launch_plan import LaunchRequest, plan
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.reliability.support import figure
from tests.support.backend_process import AUTH, TOKEN
from tests.support.deployments import demo_body, launch
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
# Kill the demo server process (not docker-init, PID 1) with SIGSEGV: a runtime crashing on its own.
CRASH = ["python3", "-c", "import os, signal\n"
         "for p in os.listdir('/proc'):\n"
         "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
         "        cmd = open(f'/proc/{p}/cmdline', 'rb').read()\n"
         "        if b'server.py' in cmd and b'python3\\x00-c' not in cmd:\n"
         "            os.kill(int(p), signal.SIGSEGV)\n"]


@pytest.fixture()
def backend(backends):
    b = backends(prefix=f"t{RUN_ID}-cf")
    b.start()
    return b


def stream_until_error(backend, served: str, after_chunks: int, action) -> tuple[int, dict | None, bool]:
    """Stream a long reply, call ``action`` after some chunks; (chunks, error event, [DONE] seen)."""
    chunks, error, done = 0, None, False
    with httpx.stream("POST", f"{backend.url}/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": served, "stream": True, "max_tokens": 400,
                            "messages": [{"role": "user", "content": "go on"}]}) as s:
        for _, data in sse_events(s):
            chunks += 1
            if chunks == after_chunks:
                threading.Thread(target=action, daemon=True).start()
            if data == "[DONE]":
                done = True
            elif data.startswith("{") and "error" in json.loads(data):
                error = json.loads(data)["error"]
    return chunks, error, done


def test_container_killed_mid_stream(backend, engine, demo_image):
    served = f"t{RUN_ID}-cf-kill"
    dep_id, events = launch(backend.url, TOKEN, demo_body(served, env={"DEMO_TOKEN_DELAY": "0.05"}))
    assert events[-1]["phase"] == "ready", events[-3:]
    name = f"modeldeck-{dep_id}"
    t = {}

    def kill():
        t["kill"] = time.monotonic()
        engine.client.api.kill(name)

    chunks, error, done = stream_until_error(backend, served, 3, kill)
    figure("docker kill mid-stream: error event after (s)", f"{time.monotonic() - t['kill']:.2f}")
    assert error is not None and error["message"] and error["type"], "the stream must end with an error event"
    assert done, "the error event is followed by [DONE] so OpenAI clients stop reading"
    d = wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}").json())["state"] == "exited" and d, 5,
                   what="shown exited")
    assert d["exit_code"] == 137 and not d["ready"] and "137" in d["message"], d
    assert backend.get(f"/api/deployments/{dep_id}/logs").json()["lines"], "the log tail stays readable"
    # `docker kill` is a manual stop for Docker: on-failure does not restart it. Docker decides when
    # the container exits, under the container's lock: a restart would show as "restarting" at
    # once (the back-off comes after), so "exited" seen above already means no restart, no wait needed.
    attrs = engine.client.api.inspect_container(name)
    assert attrs["State"]["Status"] == "exited" and not attrs["State"]["Restarting"], attrs["State"]
    assert attrs["RestartCount"] == 0
    # Killed by hand is stopped: on demand (the default since models on demand), the next request loads it
    # again with one `docker start` of the same container (docs/on-demand.md), which is not a Docker restart.
    r = backend.post("/v1/chat/completions", json={"model": served, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200, r.text
    d = backend.get(f"/api/deployments/{dep_id}").json()
    assert d["ready"] and d["last_load"]["trigger"] == "request", d
    assert engine.client.api.inspect_container(name)["RestartCount"] == 0


def test_container_crashing_on_its_own_is_restarted_as_the_recipe_says(backend, engine, demo_image):
    """The recipe's policy is on-failure with 3 retries: three crashes restarted, the fourth stays down."""
    served = f"t{RUN_ID}-cf-crash"
    dep_id, events = launch(backend.url, TOKEN, demo_body(served, env={"DEMO_TOKEN_DELAY": "0.05"}))
    assert events[-1]["phase"] == "ready", events[-3:]
    name = f"modeldeck-{dep_id}"
    policy = engine.client.api.inspect_container(name)["HostConfig"]["RestartPolicy"]
    assert policy == {"Name": "on-failure", "MaximumRetryCount": 3}

    chunks, error, done = stream_until_error(backend, served, 3,
                                             lambda: engine.client.containers.get(name).exec_run(CRASH))
    assert error is not None and done, "the crash ends the client's stream with an error event"
    for crash in range(1, 4):
        d = wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}").json())["restart_count"] == crash
                       and d["ready"] and d, 20, interval=0.1, what=f"restart {crash} and ready again")
        assert d["status"] == "ready"
        if crash < 3:
            engine.client.containers.get(name).exec_run(CRASH)
    engine.client.containers.get(name).exec_run(CRASH)
    d = wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}").json())["state"] == "exited" and d,
                   10, interval=0.1, what="the fourth crash stays down")
    assert d["status"] == "failed" and d["exit_code"] == 139 and "139" in d["message"], d
    assert d["restart_count"] == 3
    assert backend.get(f"/api/deployments/{dep_id}/logs").json()["lines"]


def test_container_killed_for_memory_is_shown_out_of_memory(backend, engine, demo_image, demo_base_image):
    """ModelDeck has no memory-limit option, so the container is made here with ModelDeck's labels and a limit."""
    served = f"t{RUN_ID}-cf-oom"
    settings = Settings(home=backend.home, demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    spec = plan(load_catalog(settings.catalog_dir).get("demo"),
                LaunchRequest(recipe="demo", model="demo-tiny", served_name=served), settings,
                image=demo_image, host_port=0, gpu_runtime=False)
    c = engine.client.containers.run(
        demo_image, entrypoint=["python3", "-c", "import time; b = bytearray(512 * 2**20); time.sleep(60)"],
        labels=spec.labels, name=spec.name, mem_limit="48m", memswap_limit="48m", detach=True,
        ports={"8000/tcp": ("127.0.0.1", None)})
    dep_id = spec.labels["modeldeck.id"]
    # Made outside ModelDeck: shown once the backend has seen it exit (polled; a 404 is "not yet").
    d = wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}").json()).get("state") == "exited" and d,
                   10, interval=0.1, what="the container is killed")
    assert d["oom_killed"] is True and d["status"] == "failed", d
    assert "out of memory" in d["message"], d
    c.remove(force=True)

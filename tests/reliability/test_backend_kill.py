"""The backend killed with SIGKILL (idle, mid-stream, mid-launch) and restarted on the same home: nothing lost."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time

import httpx
import pytest

from backend.catalog import load_catalog
from backend.engine import Engine
from backend.launch_plan import LaunchRequest, plan
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.reliability.support import figure
from tests.support.backend_process import AUTH, TOKEN, BackendProcess
from tests.support.deployments import demo_body, launch
from tests.support.live_server import free_port
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
CONSISTENT_WITHIN_S = 5.0


def docker_view(engine: Engine, prefix: str) -> dict[str, str]:
    """Deployment id -> container id of this run's containers whose id starts with ``prefix``."""
    rows = engine.client.api.containers(all=True, filters={"label": [f"{RUN_LABEL}={RUN_ID}", "modeldeck.managed=true"]})
    out: dict[str, str] = {}
    for row in rows:
        dep_id = row["Labels"].get("modeldeck.id", "")
        if dep_id.startswith(prefix):
            assert dep_id not in out, f"two containers for deployment {dep_id}"
            out[dep_id] = row["Id"]
    return out


def api_view(backend: BackendProcess, prefix: str) -> dict[str, str | None]:
    r = backend.get("/api/deployments", timeout=5)
    assert r.status_code == 200, r.text
    ids = [d["id"] for d in r.json()]
    assert len(ids) == len(set(ids)), f"duplicated deployments: {ids}"
    return {d["id"]: d["container_id"] for d in r.json() if d["id"].startswith(prefix)}


def restart_and_check(backend: BackendProcess, engine: Engine, prefix: str, label: str) -> float:
    """Restart the backend on its home; assert its list equals Docker's within 5 s; the seconds it took."""
    t0 = time.monotonic()
    backend.start()
    wait_until(lambda: api_view(backend, prefix) == docker_view(engine, prefix), CONSISTENT_WITHIN_S,
               what="deployments list == Docker's labelled containers")
    took = time.monotonic() - t0
    figure(f"{label}: restart to consistent list (s)", f"{took:.2f}")
    return took


def integrity(home) -> str:
    with sqlite3.connect(home / "history.sqlite3") as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def keep_history(backend: BackendProcess, served: str, marker: str) -> None:
    r = backend.post("/v1/chat/completions", headers={"X-ModelDeck-History": "1"},
                     json={"model": served, "max_tokens": 4, "messages": [{"role": "user", "content": marker}]})
    assert r.status_code == 200, r.text


def test_sigkill_while_idle(backends, engine, demo_image):
    prefix = f"t{RUN_ID}-kidle"
    backend = backends(prefix=prefix)
    figure("backend start (s)", f"{backend.start():.2f}")
    dep_id, events = launch(backend.url, TOKEN, demo_body(prefix))
    assert events[-1]["phase"] == "ready", events[-3:]
    wait_until(lambda: backend.get(f"/api/deployments/{dep_id}").json()["ready"], 5, what="ready")
    keep_history(backend, prefix, f"idle-{RUN_ID}")

    backend.kill()
    assert integrity(backend.home) == "ok"
    restart_and_check(backend, engine, prefix, "idle kill")
    t0 = time.monotonic()
    wait_until(lambda: backend.get(f"/api/deployments/{dep_id}").json()["ready"], CONSISTENT_WITHIN_S,
               what="the running deployment is ready again")
    wait_until(lambda: prefix in [m["id"] for m in backend.get("/v1/models").json()["data"]], 5, what="routed")
    figure("idle kill: restart to ready again (s, after consistent)", f"{time.monotonic() - t0:.2f}")
    assert [e["model"] for e in backend.get("/api/history", params={"q": f"idle-{RUN_ID}"}).json()] == [prefix]
    keep_history(backend, prefix, f"idle2-{RUN_ID}")  # the store is writable after the crash
    assert len(docker_view(engine, prefix)) == 1


def test_sigkill_while_streaming(backends, engine, demo_image):
    prefix = f"t{RUN_ID}-kstream"
    backend = backends(prefix=prefix)
    backend.start()
    dep_id, events = launch(backend.url, TOKEN, demo_body(prefix, env={"DEMO_TOKEN_DELAY": "0.05"}))
    assert events[-1]["phase"] == "ready", events[-3:]
    keep_history(backend, prefix, f"stream-{RUN_ID}")
    port = backend.get(f"/api/deployments/{dep_id}").json()["host_port"]
    demo_health = f"http://127.0.0.1:{port}/health"

    got: list[str] = []
    ended: dict = {}
    third = threading.Event()

    def read_stream() -> None:
        try:
            with httpx.stream("POST", f"{backend.url}/v1/chat/completions", headers=AUTH, timeout=30,
                              json={"model": prefix, "stream": True, "max_tokens": 400,
                                    "messages": [{"role": "user", "content": "a long story"}]}) as s:
                for _, data in sse_events(s):
                    got.append(data)
                    if len(got) == 3:
                        third.set()
            ended["how"] = "ended"
        except httpx.HTTPError as exc:
            ended["how"] = type(exc).__name__
        finally:
            third.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert third.wait(20)
    assert httpx.get(demo_health).json()["active_generations"] == 1
    backend.kill()
    t_kill = time.monotonic()
    reader.join(10)
    assert ended.get("how") not in (None, "ended") or "[DONE]" not in got, "a cut stream must not look complete"
    wait_until(lambda: httpx.get(demo_health).json()["active_generations"] == 0, 2,
               what="the model server stops generating for the dead backend")
    figure("stream kill: model server generation stopped after (s)", f"{time.monotonic() - t_kill:.2f}")
    assert integrity(backend.home) == "ok"

    restart_and_check(backend, engine, prefix, "stream kill")
    wait_until(lambda: backend.get(f"/api/deployments/{dep_id}").json()["ready"], CONSISTENT_WITHIN_S, what="ready")
    with httpx.stream("POST", f"{backend.url}/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": prefix, "stream": True, "max_tokens": 5,
                            "messages": [{"role": "user", "content": "again"}]}) as s:
        assert [d for _, d in sse_events(s)][-1] == "[DONE]"
    assert len(backend.get("/api/history", params={"q": f"stream-{RUN_ID}"}).json()) == 1


@pytest.mark.parametrize("phase", ["starting", "loading"])
def test_sigkill_in_the_middle_of_a_launch(backends, engine, demo_image, phase):
    """Killed as the container starts, or once it runs but before it answered.

    A container that never started is shown failed and can be removed; one that runs is
    probed by the next backend, which completes the launch (ready, restarts turned on).
    """
    prefix = f"t{RUN_ID}-klaunch-{phase}"
    backend = backends(prefix=prefix)
    backend.start()
    dep_id, events = launch(backend.url, TOKEN, demo_body(prefix), stop_at=phase)
    backend.kill()
    policy = engine.client.api.inspect_container(f"modeldeck-{dep_id}")["HostConfig"]["RestartPolicy"]["Name"]
    assert policy == "no", "the launch was interrupted before ready, so restarts are still off"

    restart_and_check(backend, engine, prefix, "mid-launch kill")
    state = engine.client.api.inspect_container(f"modeldeck-{dep_id}")["State"]["Status"]
    figure(f"mid-launch kill at '{phase}': container left", state)
    if state == "created":  # killed between create and start: shown failed, removable
        d = backend.get(f"/api/deployments/{dep_id}").json()
        assert d["status"] == "failed" and "interrupted" in d["message"]
        assert backend.delete(f"/api/deployments/{dep_id}").status_code == 204
        assert docker_view(engine, prefix) == {}
        return
    t0 = time.monotonic()
    d = wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}").json())["ready"] and d, 15,
                   what="the interrupted launch completes")
    figure("mid-launch kill: consistent to ready (s)", f"{time.monotonic() - t0:.2f}")
    assert d["status"] == "ready"
    wait_until(lambda: engine.client.api.inspect_container(f"modeldeck-{dep_id}")["HostConfig"]["RestartPolicy"]
               ["Name"] == "on-failure", 5, what="restart policy turned on by the new backend")
    assert len(docker_view(engine, prefix)) == 1
    # Launching the same configuration again adopts it instead of making a second container.
    r = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny", "served_name": prefix})
    assert r.status_code == 200 and r.json()["existing"], r.text
    assert len(docker_view(engine, prefix)) == 1


def test_container_created_but_never_started_is_shown_failed_and_removable(backends, engine, demo_image,
                                                                          demo_base_image):
    """What a kill between ``create`` and ``start`` leaves, made on purpose (the timing is too narrow to hit)."""
    prefix = f"t{RUN_ID}-kcreated"
    backend = backends(prefix=prefix)
    settings = Settings(home=backend.home, demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    recipe = load_catalog(settings.catalog_dir).get("demo")
    spec = plan(recipe, LaunchRequest(recipe="demo", model="demo-tiny", served_name=prefix), settings,
                image=demo_image, host_port=0, gpu_runtime=False)
    engine.create(dataclasses.replace(spec, host_port=free_port()))
    dep_id = spec.labels["modeldeck.id"]

    restart_and_check(backend, engine, prefix, "created-never-started")
    d = backend.get(f"/api/deployments/{dep_id}").json()
    assert d["status"] == "failed" and d["state"] == "created" and "interrupted" in d["message"], d
    assert backend.delete(f"/api/deployments/{dep_id}").status_code == 204
    assert docker_view(engine, prefix) == {} and api_view(backend, prefix) == {}
    # The name is free again: a new launch works.
    _, events = launch(backend.url, TOKEN, demo_body(prefix))
    assert events[-1]["phase"] == "ready", events[-3:]

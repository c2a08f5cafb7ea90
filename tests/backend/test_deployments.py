"""Launching the demo model on the real Docker engine: progress, readiness, actions, failures, dedupe."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from backend.catalog import load_catalog
from backend.deployments import DeploymentService
from backend.engine import Engine
from backend.errors import DeploymentNotFound, GpuRuntimeMissing, PortInUse
from backend.launch_plan import LaunchRequest
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture()
def service(engine, settings, demo_image):
    """A service with its refresh loop running, as the app runs it (list and get read its cache)."""
    svc = DeploymentService(engine, load_catalog(settings.catalog_dir), settings)
    stop = threading.Event()

    def loop():
        while not stop.wait(0.3):
            svc.refresh()

    refresher = threading.Thread(target=loop, name="test-refresh", daemon=True)
    refresher.start()
    yield svc
    stop.set()
    refresher.join(10)
    svc.close()


def launch_and_wait(svc: DeploymentService, req: LaunchRequest, timeout: float = 120):
    dep, lp = svc.launch(req)
    assert lp is not None
    assert lp.finished.wait(timeout), f"launch did not finish: {[e.message for e in lp.events][-5:]}"
    return dep, lp


def demo(run_id: str, name: str, **kw) -> LaunchRequest:
    return LaunchRequest(recipe="demo", model="demo-tiny", served_name=f"t{run_id}-{name}", **kw)


def test_launch_reaches_ready_and_streams_through_its_own_port(service, run_id):
    dep, lp = launch_and_wait(service, demo(run_id, "stream"))
    phases = [e.phase for e in lp.events]
    assert phases[0] == "queued" and phases[-1] == "ready", phases
    assert {"creating", "starting", "loading"} <= set(phases)

    d = service.get(dep.id)
    assert d.ready and d.status == "ready" and d.state == "running"
    assert d.endpoint == f"http://127.0.0.1:{d.host_port}/v1"
    body = {"model": d.served_name, "stream": True, "max_tokens": 12,
            "messages": [{"role": "user", "content": "Tell me a fable"}]}
    arrivals, chunks = [], []
    with httpx.stream("POST", d.endpoint + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    deltas = [json.loads(c)["choices"][0]["delta"].get("content") for c in chunks[:-1]
              if json.loads(c)["choices"]]
    assert len([x for x in deltas if x]) >= 5, "the reply should arrive as several chunks"
    assert arrivals[-1] - arrivals[0] > 0.05, "chunks must arrive over time, not in one burst"

    # The published port is bound to loopback only.
    spec = service.spec(dep.id)
    assert spec.host_ip == "127.0.0.1" and spec.host_port == 0, "no port asked: Docker assigns one at each start"
    attrs = service.engine.client.api.inspect_container(d.container_id)
    assert attrs["NetworkSettings"]["Ports"]["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(d.host_port)}]
    assert f"Starting on 127.0.0.1:{d.host_port}" in [e.message for e in lp.events], "the launch says the port"
    assert attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert attrs["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}


def test_stop_start_restart_logs_remove(service, run_id):
    dep, lp = launch_and_wait(service, demo(run_id, "actions"))
    assert lp.last.phase == "ready"
    url = service.get(dep.id).endpoint + "/models"
    assert httpx.get(url).status_code == 200

    stopped = service.stop(dep.id)
    assert stopped.status == "stopped" and not stopped.ready
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)

    service.start(dep.id)
    wait_until(lambda: service.get(dep.id).ready, 30, interval=0.2, what="ready again after start")

    before = service.get(dep.id).started_at
    service.restart(dep.id)
    d = wait_until(lambda: (d := service.get(dep.id)).ready and d.started_at != before and d, 30, interval=0.2,
                   what="ready again after restart")

    httpx.post(d.endpoint + "/completions", json={"model": d.served_name, "prompt": "The fox", "max_tokens": 3})
    lines = service.logs(dep.id, tail=50)
    assert any("/v1/completions" in line for line in lines), lines[-10:]

    service.remove(dep.id)
    assert dep.id not in {d.id for d in service.list()}
    with pytest.raises(DeploymentNotFound):
        service.get(dep.id)


def test_list_survives_a_new_engine_client(service, settings, run_id):
    dep, _ = launch_and_wait(service, demo(run_id, "survive"))
    before = {(d.id, d.container_id, d.served_name, d.host_port) for d in service.list()}
    fresh = DeploymentService(Engine(), load_catalog(settings.catalog_dir), settings)
    try:
        after_list = fresh.list()
        after = {(d.id, d.container_id, d.served_name, d.host_port) for d in after_list}
        assert after == before
        mine = next(d for d in after_list if d.id == dep.id)
        assert mine.ready, "a new backend must find the running deployment ready by probing it"
        # Launching the same thing again from the new backend adopts it: no second container.
        again, lp = fresh.launch(demo(run_id, "survive"))
        assert lp is None and again.container_id == mine.container_id
    finally:
        fresh.close()


def test_crashing_server_reports_exit_code_and_log_tail(service, run_id):
    dep, lp = launch_and_wait(service, demo(run_id, "crash", args=["--no-such-flag"]))
    last = lp.last
    assert last.phase == "failed"
    assert "exited with code 2" in last.message
    assert last.details["exit_code"] == 2
    assert any("--no-such-flag" in line for line in last.details["log_tail"]), last.details["log_tail"]
    d = service.get(dep.id)
    assert d.status == "failed" and d.exit_code == 2
    assert d.state == "exited", "a failed launch stops the restart loop"


def test_gpu_request_refused_before_any_container(service, engine, run_id):
    assert not engine.status().gpu_runtime, "this test expects a machine without an NVIDIA runtime"
    catalog = service.catalog
    recipe = next(r for r in catalog.recipes.values() if r.gpu.need.value != "none")
    with pytest.raises(GpuRuntimeMissing) as err:
        service.launch(LaunchRequest(recipe=recipe.name, model="org/model", served_name=f"t{run_id}-gpu",
                                     gpus=["0"]))
    assert "NVIDIA Container Toolkit" in err.value.hint
    assert not engine.list(labels={"modeldeck.served_name": f"t{run_id}-gpu"})


def test_taken_port_is_a_clear_error(service, run_id):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUse) as err:
            service.launch(demo(run_id, "port", port=port))
    assert str(port) in err.value.message and "taken" in err.value.message
    assert not service.engine.list(labels={"modeldeck.id": f"t{run_id}-port"})


def test_two_concurrent_launches_make_one_container(service, engine, run_id):
    results, errors = [], []
    barrier = threading.Barrier(2)

    def go():
        barrier.wait()
        try:
            results.append(service.launch(demo(run_id, "twice")))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    progresses = {id(lp) for _, lp in results if lp is not None}
    assert len(progresses) == 1, "both launches must share one launch"
    next(lp for _, lp in results if lp).finished.wait(120)
    assert len(engine.list(labels={"modeldeck.id": f"t{run_id}-twice"})) == 1


def test_build_reports_progress(engine, demo_base_image, run_id, settings):
    tag = f"modeldeck-test/build:{run_id}"
    events = list(engine.build(settings.catalog_dir / "demo", tag, {"BASE_IMAGE": demo_base_image}))
    try:
        steps = [e for e in events if e.message.startswith("Step ")]
        assert steps and steps[-1].current == steps[-1].total
        assert engine.image_exists(tag)
    finally:
        engine.client.images.remove(tag, force=True)


def test_interrupted_launch_that_never_answers_is_shown_failed(engine, settings, demo_base_image, run_id):
    """A backend killed mid-launch leaves a server with restarts off; if it never answers
    within its start-up time, a later backend shows it failed, not "loading" forever."""
    import dataclasses

    from backend.launch_plan import plan

    catalog = load_catalog(settings.catalog_dir)
    req = demo(run_id, "abandoned")
    spec = plan(catalog.get("demo"), req, settings, image=demo_base_image, host_port=free_port(),
                gpu_runtime=False)
    # The server never answers: it only sleeps. Created and started as a launch would, then
    # left behind (no launch thread finishes it).
    spec = dataclasses.replace(spec, entrypoint=("sleep",), command=("600",))
    engine.start(engine.create(spec))
    later = dataclasses.replace(settings, readiness_timeout_s=1.0) if dataclasses.is_dataclass(settings) \
        else settings.model_copy(update={"readiness_timeout_s": 1.0})
    svc = DeploymentService(Engine(), catalog, later)
    try:
        dep_id = spec.labels["modeldeck.id"]

        def failed():
            d = svc.get(dep_id)
            assert d.status in ("loading", "failed"), d
            return d.status == "failed" and d

        d = wait_until(failed, 15, interval=0.3, what="the interrupted launch shown failed")
        assert "interrupted" in d.message and not d.ready
    finally:
        svc.close()


def test_follow_logs_replays_the_tail_then_new_lines_and_closes(service, run_id):
    import asyncio

    dep, _ = launch_and_wait(service, demo(run_id, "logs"))
    url = service.get(dep.id).endpoint + "/models"

    async def read() -> list[str]:
        lines = await service.follow_logs(dep.id, tail=0)
        got: list[str] = []
        try:
            await asyncio.to_thread(httpx.get, url, timeout=10)  # writes an access-log line
            async with asyncio.timeout(20):
                async for line in lines:
                    got.append(line)
                    if "/v1/models" in line:
                        break
        finally:
            await lines.aclose()
        return got

    got = asyncio.run(read())
    assert any("/v1/models" in line for line in got), got
    with pytest.raises(DeploymentNotFound):
        asyncio.run(service.follow_logs(f"t{run_id}-nope", tail=1))

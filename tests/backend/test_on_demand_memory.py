"""Memory-aware swapping with real demo containers: least recently used first, pins respected, and a clear
refusal that unloads nothing when a model cannot fit.

CPU: containers limited by ``mem_limit`` under ``MODELDECK_HOST_MEMORY_BUDGET`` (the host's real available
memory is the other bound). GPU: the stats sampler reads a FakeNvml (no GPU here) whose processes are the
real PIDs of the running containers, which the sampler attributes to deployments through /proc as with
real NVML.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import httpx
import pytest

from backend.app import create_app
from backend.catalog import load_catalog
from backend.launch_plan import LaunchRequest, plan
from backend.settings import Settings
from tests.backend.stats.helpers import FakeNvml, fake_gpu
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import demo_body, launch, launch_ready
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "on-demand-memory-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB, GiB = 2**20, 2**30


def api(url: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, url + path, headers=AUTH, timeout=60, **kw)


def dep(url: str, dep_id: str) -> dict:
    r = api(url, "GET", f"/api/deployments/{dep_id}")
    assert r.status_code == 200, r.text
    return r.json()


def chat(url: str, model: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
    return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=120)


def evictions(url: str) -> list[dict]:
    return [e for e in api(url, "GET", "/api/lifecycle").json()["events"] if e["kind"] == "evict"]


def test_cpu_eviction_is_least_recently_used_first_within_the_host_budget(engine, demo_image, demo_base_image,
                                                                           tmp_path):
    settings = Settings(home=tmp_path / "home", token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID}, host_memory_budget="1500m")
    with serve(create_app(settings, engine=engine)) as url:
        names = [f"mem{RUN_ID}-{x}" for x in "abc"]
        a = launch_ready(url, TOKEN, demo_body(names[0], mem_limit="600m"))
        assert a["memory"]["need_bytes"] == 600 * MiB and a["memory"]["where"] == "host"
        assert a["memory"]["basis"].startswith("mem_limit")
        assert engine.client.api.inspect_container(a["container_id"])["HostConfig"]["Memory"] == 600 * MiB
        b = launch_ready(url, TOKEN, demo_body(names[1], mem_limit="600m"))
        # Two hold 1200 MiB of the 1500 MiB budget: launching the third unloads the least recently used, a.
        c = launch_ready(url, TOKEN, demo_body(names[2], mem_limit="600m"))
        assert dep(url, a["id"])["status"] == "stopped" and dep(url, b["id"])["ready"]
        (ev,) = evictions(url)
        assert ev["deployment_id"] == a["id"] and ev["for_deployment"] == c["id"] and ev["trigger"] == "eviction"
        assert "host memory" in ev["reason"] and "needs 600 MiB" in ev["reason"]
        assert dep(url, a["id"])["last_eviction"]["seq"] == ev["seq"] and dep(url, a["id"])["loads_on_request"]

        # b is used now, so c is the least recently used when a request loads a again.
        assert chat(url, names[1]).status_code == 200
        r = chat(url, names[0])
        assert r.status_code == 200, r.text
        assert dep(url, c["id"])["status"] == "stopped" and dep(url, b["id"])["ready"] and dep(url, a["id"])["ready"]
        assert [(e["deployment_id"], e["for_deployment"]) for e in evictions(url)] == [(a["id"], c["id"]),
                                                                                     (c["id"], a["id"])]

        # Pinned, a and b may not go: c cannot fit, and nothing is unloaded for nothing.
        for d in (a, b):
            assert api(url, "PATCH", f"/api/deployments/{d['id']}", json={"pinned": True}).status_code == 200
        r = chat(url, names[2])
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        err = r.json()["error"]
        assert err["code"] == "model_does_not_fit", err
        for d in (a, b):
            assert f"deployment '{d['id']}' 600 MiB (pinned)" in err["message"], err["message"]
        assert "MODELDECK_HOST_MEMORY_BUDGET" in err["message"] and "nothing was unloaded" in err["message"]
        r = api(url, "POST", f"/api/deployments/{c['id']}/start")
        assert r.status_code == 409, r.text
        body = r.json()["error"]
        assert body["code"] == "does_not_fit" and body["hint"] and len(body["details"]["holders"]) == 2
        assert dep(url, a["id"])["ready"] and dep(url, b["id"])["ready"] and dep(url, c["id"])["status"] == "stopped"
        # A launch goes through the same check: it fails before its container starts.
        new_id, events = launch(url, TOKEN, demo_body(f"mem{RUN_ID}-d", mem_limit="600m"))
        assert events[-1]["phase"] == "failed" and events[-1]["details"]["code"] == "does_not_fit", events[-1]
        assert dep(url, new_id)["status"] == "failed"
        assert len(evictions(url)) == 2

        # The limit is part of what `docker run` and compose reproduce.
        assert "mem_limit: 629145600" in api(url, "GET", f"/api/deployments/{a['id']}/compose").text
        r = api(url, "POST", "/api/deployments/plan", json=demo_body("plan-only", mem_limit="1g"))
        assert "--memory 1073741824b" in r.json()["docker_run"]
        def metrics() -> str | None:
            text = api(url, "GET", "/metrics").text
            return text if f'modeldeck_model_unloads_total{{model="{names[0]}",reason="eviction"}} 1.0' in text else None

        text = wait_until(metrics, 10, what="the eviction counter in /metrics")
        assert f'modeldeck_model_load_failures_total{{model="{names[2]}"}} 2.0' in text  # the request, the click


class ContainerNvml(FakeNvml):
    """FakeNvml with one GPU whose processes are the real host PIDs of the named containers while they run
    (each holding the bytes given), plus this test process holding ``other`` bytes (not ModelDeck's)."""

    def __init__(self, engine, total: int, holds: dict[str, int]):
        super().__init__([fake_gpu(0)])
        self.gpus[0]["total"] = total
        self.engine, self.holds, self.other = engine, holds, 0

    def _procs(self) -> list[tuple[int, int]]:
        out = []
        for name, size in self.holds.items():
            try:
                state = self.engine.client.api.inspect_container(name)["State"]
            except Exception:  # noqa: BLE001 - not created yet, or removed
                continue
            if state.get("Running") and state.get("Pid"):
                out.append((state["Pid"], size))
        return out + ([(os.getpid(), self.other)] if self.other else [])

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self._procs()]

    def nvmlDeviceGetMemoryInfo(self, h):
        used = sum(b for _, b in self._procs())
        return SimpleNamespace(used=used, total=self.gpus[h]["total"], free=self.gpus[h]["total"] - used)


def test_gpu_eviction_by_nvml_free_memory_and_a_refusal_that_names_the_holders(engine, demo_image, demo_base_image,
                                                                                tmp_path):
    settings = Settings(home=tmp_path / "home", token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    names = [f"gpu{RUN_ID}-{x}" for x in "abc"]
    nvml = ContainerNvml(engine, 12 * GiB, {f"modeldeck-{n}": 3 * GiB for n in names})
    recipe = load_catalog(settings.catalog_dir).get("demo")
    # Demo containers that say they run on GPU 0 (the demo itself is CPU-only; the GPU is the FakeNvml's).
    for n in names:
        spec = plan(recipe, LaunchRequest(recipe="demo", model="demo-tiny", served_name=n), settings,
                    image=demo_image, host_port=0, gpu_runtime=False)
        spec.labels["modeldeck.gpus"] = "0"
        engine.start(engine.create(spec))

    with serve(create_app(settings, engine=engine, nvml=nvml)) as url:
        def measured(n: str) -> dict | None:
            d = dep(url, n)
            m = d["memory"] or {}
            return d if d["ready"] and m.get("basis", "").startswith("measured") else None

        a, b, c = (wait_until(lambda n=n: measured(n), 60, what=f"{n} ready, its GPU memory measured") for n in names)
        assert c["memory"]["need_bytes"] == 3 * GiB and c["memory"]["where"] == "gpu" and c["memory"]["gpus"] == ["0"]

        def gpu_used(expected: int) -> bool:
            return api(url, "GET", "/api/stats").json()["gpus"][0]["memory_used_bytes"] == expected

        assert api(url, "POST", f"/api/deployments/{c['id']}/stop").status_code == 200
        assert chat(url, b["served_name"]).status_code == 200  # b is used now; a is the least recently used
        nvml.other = 4 * GiB  # someone else takes 4 GiB: 2 GiB free, c needs 3
        wait_until(lambda: gpu_used(10 * GiB), 20, what="the sampler to see 10 GiB used")

        r = chat(url, c["served_name"])
        assert r.status_code == 200, r.text
        (ev,) = evictions(url)
        assert ev["deployment_id"] == a["id"] and ev["for_deployment"] == c["id"]
        assert "GPU 0" in ev["reason"] and "needs 3.0 GiB" in ev["reason"] and "2.0 GiB free" in ev["reason"]
        assert dep(url, a["id"])["status"] == "stopped" and dep(url, b["id"])["ready"]

        # b and c pinned: a cannot fit; the answer names them and the other process, and unloads nothing.
        for d in (b, c):
            assert api(url, "PATCH", f"/api/deployments/{d['id']}", json={"pinned": True}).status_code == 200
        wait_until(lambda: gpu_used(10 * GiB), 20, what="the sampler to see c on the GPU")
        r = chat(url, a["served_name"])
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "model_does_not_fit"
        assert f"deployment '{b['id']}' 3.0 GiB (pinned)" in message and f"deployment '{c['id']}' 3.0 GiB (pinned)" \
            in message
        assert f"process {os.getpid()} 4.0 GiB on GPU 0 (not ModelDeck's)" in message
        assert dep(url, b["id"])["ready"] and dep(url, c["id"])["ready"] and len(evictions(url)) == 1

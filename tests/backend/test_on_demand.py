"""Models on demand against real demo containers: cold requests load, one start for many, streams wait with
comments, the idle time-out unloads, a pin holds, PATCH validates, failures answer 503 with the reason."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import demo_body, launch_ready
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "on-demand-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def backend(engine, demo_image, demo_base_image, tmp_path):
    """A real backend (in this process, under uvicorn) on a temporary home; its URL."""
    settings = Settings(home=tmp_path / "home", token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


def api(url: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, url + path, headers=AUTH, timeout=kw.pop("timeout", 60), **kw)


def chat(url: str, model: str, **extra) -> httpx.Response:
    body = {"model": model, "max_tokens": 6, "messages": [{"role": "user", "content": "Tell me a fable"}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=120)


def dep(url: str, dep_id: str) -> dict:
    r = api(url, "GET", f"/api/deployments/{dep_id}")
    assert r.status_code == 200, r.text
    return r.json()


def stop(url: str, dep_id: str) -> dict:
    r = api(url, "POST", f"/api/deployments/{dep_id}/stop")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["status"] == "stopped" and d["loads_on_request"], d
    return d


def lifecycle_events(url: str, dep_id: str | None = None, after: int = 0) -> list[dict]:
    r = api(url, "GET", "/api/lifecycle", params={"after": after})
    assert r.status_code == 200, r.text
    return [e for e in r.json()["events"] if dep_id is None or e["deployment_id"] == dep_id]


def model_state(url: str, name: str) -> str | None:
    data = httpx.get(f"{url}/v1/models", headers=AUTH, timeout=10).json()["data"]
    return next((m["state"] for m in data if m["id"] == name), None)


def start_events(engine, container_id: str, since: float) -> int:
    """How many times Docker started the container since ``since`` (the engine's own event log)."""
    events = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                  filters={"container": container_id, "event": "start"})
    return sum(1 for e in events if e["timeNano"] >= since * 1e9)


def test_cold_request_is_served_and_fifty_at_once_start_it_once(backend, engine):
    url, name = backend, f"od{RUN_ID}-cold"
    d = launch_ready(url, TOKEN, demo_body(name))
    assert d["on_demand"] and not d["pinned"] and d["idle_ttl_s"] is None and d["effective_idle_ttl_s"] is None
    assert d["last_load"]["trigger"] == "launch"
    stop(url, d["id"])
    assert model_state(url, name) == "unloaded"
    assert dep(url, d["id"])["last_unload"]["trigger"] == "click"

    # One cold request: started, then answered.
    since = time.time()
    r = chat(url, name)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
    assert model_state(url, name) == "ready"
    assert start_events(engine, d["container_id"], since) == 1
    load = dep(url, d["id"])["last_load"]
    assert load["trigger"] == "request" and load["duration_s"] > 0 and "chat/completions" in load["reason"]

    # Fifty at once against the unloaded model: exactly one start, fifty answers.
    stop(url, d["id"])
    since = time.time()
    seq = lifecycle_events(url)[-1]["seq"]

    async def fifty() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=AUTH, timeout=120) as client:
            body = {"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}
            return await asyncio.gather(*(client.post(f"{url}/v1/chat/completions", json=body) for _ in range(50)))

    replies = asyncio.run(fifty())
    assert [r.status_code for r in replies] == [200] * 50, [r.text for r in replies if r.status_code != 200][:2]
    assert all(r.json()["choices"][0]["message"]["content"] for r in replies)
    assert start_events(engine, d["container_id"], since) == 1
    loads = [e for e in lifecycle_events(url, d["id"], after=seq) if e["kind"] == "load"]
    assert len(loads) == 1 and loads[0]["trigger"] == "request", loads
    assert engine.inspect(d["container_id"]).restart_count == 0
    after = dep(url, d["id"])
    assert after["in_flight"] == 0 and after["last_request_at"]

    def loads_metric() -> str | None:
        text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
        line = f'modeldeck_model_loads_total{{model="{name}",trigger="request"}} 2.0'
        return line if line in text and f'modeldeck_model_load_seconds_count{{model="{name}"}}' in text else None

    wait_until(loads_metric, 10, what="the load counters in /metrics")


def test_streaming_cold_request_gets_comments_then_tokens(backend):
    url, name = backend, f"od{RUN_ID}-stream"
    d = launch_ready(url, TOKEN, demo_body(name))
    stop(url, d["id"])
    body = {"model": name, "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}
    lines = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[0].startswith(f": modeldeck loading {name} ("), lines[:3]
    data = [line[6:] for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    tokens = [json.loads(x)["choices"][0]["delta"].get("content") for x in data[:-1] if json.loads(x)["choices"]]
    assert any(tokens), data
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert all(line.startswith(":") for line in lines[:first_data]), "only comments before the first token"


def test_idle_ttl_unloads_and_a_pin_holds(backend):
    url = backend
    idle = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-ttl", idle_ttl_s=2))
    pinned = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-pin", idle_ttl_s=2, pinned=True))
    assert idle["effective_idle_ttl_s"] == 2 and idle["unload_at"]
    assert pinned["pinned"] and pinned["unload_at"] is None

    # Both idle from now; the unpinned one goes after its 2 s, the pinned one stays.
    assert chat(url, idle["served_name"]).status_code == 200
    assert chat(url, pinned["served_name"]).status_code == 200
    gone = wait_until(lambda: (d := dep(url, idle["id"]))["status"] == "stopped" and d, 30,
                      what="the idle time-out to unload the deployment")
    assert gone["loads_on_request"] and gone["last_unload"]["trigger"] == "ttl"
    assert "idle for" in gone["last_unload"]["reason"] and "idle_ttl_s 2" in gone["last_unload"]["reason"]
    still = dep(url, pinned["id"])
    assert still["ready"] and still["status"] == "ready" and still["last_unload"] is None

    # Unpinned by PATCH, the same time-out now applies to it.
    r = api(url, "PATCH", f"/api/deployments/{pinned['id']}", json={"pinned": False})
    assert r.status_code == 200 and r.json()["pinned"] is False and r.json()["unload_at"]
    wait_until(lambda: dep(url, pinned["id"])["status"] == "stopped", 30, what="the unpinned deployment to unload")
    ttl_unloads = [e for e in lifecycle_events(url) if e["kind"] == "unload" and e["trigger"] == "ttl"]
    assert {e["deployment_id"] for e in ttl_unloads} == {idle["id"], pinned["id"]}


def test_patch_validates_and_applies(backend):
    url = backend
    d = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-patch"))
    path = f"/api/deployments/{d['id']}"
    for bad, word in (({}, "at least one"), ({"idle_ttl_s": -1}, "idle_ttl_s"),
                      ({"idle_ttl_s": 31 * 86400}, "idle_ttl_s"), ({"pinned": "often"}, "pinned"),
                      ({"on_demand": None}, "on_demand"), ({"color": "red"}, "color")):
        r = api(url, "PATCH", path, json=bad)
        assert r.status_code == 422, (bad, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_request" and word in err["message"], (bad, err)
    r = api(url, "PATCH", "/api/deployments/nothing-here", json={"pinned": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "deployment_not_found"

    r = api(url, "PATCH", path, json={"idle_ttl_s": 600, "pinned": True, "on_demand": False})
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["idle_ttl_s"], got["effective_idle_ttl_s"], got["pinned"], got["on_demand"]) == (600, 600, True, False)
    r = api(url, "PATCH", path, json={"idle_ttl_s": None})  # back to the backend's default (never)
    assert r.json()["idle_ttl_s"] is None and r.json()["effective_idle_ttl_s"] is None and r.json()["pinned"]

    # Not on demand: a stopped deployment is not loaded by a request.
    stop_r = api(url, "POST", f"{path}/stop")
    assert stop_r.json()["loads_on_request"] is False
    assert model_state(url, d["served_name"]) is None
    r = chat(url, d["served_name"])
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"

    # Launching the same configuration again applies its values like a PATCH.
    r = api(url, "POST", "/api/deployments", json=demo_body(d["served_name"], on_demand=True, idle_ttl_s=0))
    assert r.status_code in (200, 202) and r.json()["existing"], r.text
    again = dep(url, d["id"])
    assert again["on_demand"] and not again["pinned"] and again["idle_ttl_s"] == 0 and again["loads_on_request"]


def test_failed_load_answers_503_with_the_reason(backend, engine):
    url = backend
    plain = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-fail"))
    streamed = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-fails"))
    for d in (plain, streamed):
        stop(url, d["id"])
        # The next start of this container fails: its server is killed for memory before it answers.
        engine.client.api.update_container(d["container_id"], mem_limit="6m", memswap_limit="6m")

    r = chat(url, plain["served_name"])
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    err = r.json()["error"]
    assert err["code"] == "model_load_failed" and err["type"] == "service_unavailable"
    assert plain["served_name"] in err["message"] and "exit code 137" in err["message"].lower(), err
    failed = [e for e in lifecycle_events(url, plain["id"]) if e["kind"] == "load_failed"]
    assert len(failed) == 1 and failed[0]["trigger"] == "request"
    after = dep(url, plain["id"])
    assert after["status"] == "failed" and not after["loads_on_request"] and after["state"] == "exited"
    # Failed, so a request does not start it again: it says it is not ready.
    r = chat(url, plain["served_name"])
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"

    # A stream gets its comments, then the proxy's error event.
    body = {"model": streamed["served_name"], "stream": True, "max_tokens": 4,
            "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=120) as s:
        assert s.status_code == 200
        lines = [line for line in s.iter_lines() if line]
    assert lines[0].startswith(": modeldeck loading")
    error = json.loads(next(line[6:] for line in lines if line.startswith("data: {")))
    assert "could not be loaded" in error["error"]["message"] and lines[-1] == "data: [DONE]"


def test_every_v1_route_loads_on_request(backend):
    """Completions, embeddings, Responses and Anthropic's Messages (streamed and not) all load the model."""
    url, name = backend, f"od{RUN_ID}-routes"
    d = launch_ready(url, TOKEN, demo_body(name))
    calls = [("/v1/completions", {"prompt": "Once", "max_tokens": 3}, "choices"),
             ("/v1/embeddings", {"input": "hello"}, "data"),
             ("/v1/responses", {"input": "Hello", "max_output_tokens": 3}, "output"),
             ("/v1/messages", {"max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}, "content")]
    for path, body, key in calls:
        stop(url, d["id"])
        r = httpx.post(url + path, headers=AUTH, json={"model": name, **body}, timeout=120)
        assert r.status_code == 200 and r.json()[key], (path, r.text)
        # The demo has no Messages API: ModelDeck serves it over chat completions.
        endpoint = "chat/completions" if path == "/v1/messages" else path[4:]
        assert dep(url, d["id"])["last_load"]["reason"] == f"a /v1/{endpoint} request for '{name}'"
    stop(url, d["id"])
    body = {"model": name, "stream": True, "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}
    with httpx.stream("POST", f"{url}/v1/messages", headers=AUTH, json=body, timeout=120) as s:
        lines = [line for line in s.iter_lines() if line]
    assert lines[0].startswith(": modeldeck loading") and "event: message_stop" in lines, lines
    loads = [e for e in lifecycle_events(url, d["id"]) if e["kind"] == "load" and e["trigger"] == "request"]
    assert len(loads) == 5


def test_backend_default_idle_ttl_and_mem_limit_validation(engine, demo_image, demo_base_image, tmp_path):
    settings = Settings.from_env({"MODELDECK_IDLE_TTL_S": "2"}, home=tmp_path / "home", token=TOKEN,
                                 demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        d = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-default"))
        assert d["idle_ttl_s"] is None and d["effective_idle_ttl_s"] == 2
        never = launch_ready(url, TOKEN, demo_body(f"od{RUN_ID}-never", idle_ttl_s=0))
        assert never["effective_idle_ttl_s"] is None and never["unload_at"] is None
        gone = wait_until(lambda: (x := dep(url, d["id"]))["status"] == "stopped" and x, 30,
                          what="the backend's default time-out to unload it")
        assert "idle_ttl_s 2" in gone["last_unload"]["reason"]
        assert dep(url, never["id"])["ready"]

        for bad, word in (("lots", "not a memory size"), ("1k", "smallest memory limit"), (0, "not a memory size"),
                          (True, "not a memory size")):
            r = api(url, "POST", "/api/deployments/plan", json=demo_body("x", mem_limit=bad))
            assert r.status_code == 422 and word in r.json()["error"]["message"], (bad, r.text)
        r = api(url, "POST", "/api/deployments/plan", json=demo_body("x", idle_ttl_s=-5))
        assert r.status_code == 422 and "idle_ttl_s" in r.json()["error"]["message"]
        r = api(url, "POST", "/api/deployments/plan", json=demo_body("x", mem_limit="512m", pinned=True))
        plan = r.json()
        assert plan["labels"]["modeldeck.mem_limit"] == str(512 * 2**20) and plan["labels"]["modeldeck.pinned"] == "true"
        r2 = api(url, "POST", "/api/deployments/plan", json=demo_body("x", mem_limit="1g", pinned=False))
        plain = api(url, "POST", "/api/deployments/plan", json=demo_body("x", pinned=True)).json()
        assert plain["labels"]["modeldeck.config_hash"] != plan["labels"]["modeldeck.config_hash"] \
            != r2.json()["labels"]["modeldeck.config_hash"], "mem_limit is part of the configuration"
        assert plain["labels"]["modeldeck.config_hash"] == api(
            url, "POST", "/api/deployments/plan", json=demo_body("x", pinned=False, idle_ttl_s=60)
        ).json()["labels"]["modeldeck.config_hash"], "on_demand, idle_ttl_s and pinned are not"

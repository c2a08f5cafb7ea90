"""The backend through HTTP: a real server on a free port, the real engine, the demo model, the openai client."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest
import yaml

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import demo_body, launch
from tests.support.live_server import serve
from tests.support.waiting import wait_until
from tests.support.sse import sse_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "api-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def api(engine, demo_image, demo_base_image, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("api-home"), token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


def wait_routed(api: str, served: str) -> None:
    """A model is routed the moment its launch says ready: no waiting for a refresh."""
    models = [m["id"] for m in httpx.get(f"{api}/v1/models", headers=AUTH).json()["data"]]
    assert served in models, f"{served} is ready but not in /v1/models: {models}"


@pytest.fixture(scope="module")
def demo(api) -> tuple[str, str]:
    served = f"t{RUN_ID}-api"
    dep_id, events = launch(api, TOKEN, demo_body(served))
    assert events[-1]["phase"] == "ready", events[-3:]
    wait_routed(api, served)
    return dep_id, served


@pytest.fixture()
def client(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api}/v1", api_key=TOKEN, max_retries=0)


def test_launch_progress_stream_ends_ready(api, demo):
    dep_id, _ = demo
    d = httpx.get(f"{api}/api/deployments/{dep_id}", headers=AUTH).json()
    assert d["ready"] and d["status"] == "ready" and d["host_port"]
    # A finished launch's stream replays from the start and ends.
    with httpx.stream("GET", f"{api}/api/deployments/{dep_id}/events", headers=AUTH, timeout=10) as s:
        phases = [json.loads(data)["phase"] for _, data in sse_events(s)]
    assert phases[0] == "queued" and phases[-1] == "ready" and "loading" in phases


def test_models_and_chat_through_the_openai_client(client, demo):
    _, served = demo
    assert served in [m.id for m in client.models.list().data]
    reply = client.chat.completions.create(model=served, max_tokens=8,
                                           messages=[{"role": "user", "content": "Hello fox"}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens == 8


def test_streamed_chat_arrives_incrementally(client, demo):
    _, served = demo
    stamps, text = [], []
    stream = client.chat.completions.create(model=served, max_tokens=20, stream=True,
                                            messages=[{"role": "user", "content": "Tell me about the crow"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.monotonic())
            text.append(chunk.choices[0].delta.content)
    assert len(text) >= 10
    assert stamps[-1] - stamps[0] > 0.1, "tokens must arrive over time through the proxy, not in one burst"


def test_unknown_model_is_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["message"] and "no-such-model" in err.value.body["message"]


def test_client_disconnect_cancels_the_upstream(api, demo, client):
    dep_id, served = demo
    port = httpx.get(f"{api}/api/deployments/{dep_id}", headers=AUTH).json()["host_port"]
    before = httpx.get(f"http://127.0.0.1:{port}/health").json()["cancelled_generations"]
    stream = client.chat.completions.create(model=served, max_tokens=500, stream=True,
                                            messages=[{"role": "user", "content": "A long story"}])
    for i, _ in enumerate(stream):
        if i == 3:
            break
    stream.close()
    wait_until(lambda: (h := httpx.get(f"http://127.0.0.1:{port}/health").json())["active_generations"] == 0
               and h["cancelled_generations"] > before, 3, what="the model server to cancel the generation")


def test_stop_mid_stream_gives_error_event_and_backend_stays_healthy(api, client):
    served = f"t{RUN_ID}-dies"
    dep_id, events = launch(api, TOKEN, demo_body(served, env={"DEMO_TOKEN_DELAY": "0.05"}))
    assert events[-1]["phase"] == "ready"
    wait_routed(api, served)
    got_error, chunks = None, 0
    with httpx.stream("POST", f"{api}/v1/chat/completions", headers=AUTH, timeout=60,
                      json={"model": served, "stream": True, "max_tokens": 400,
                            "messages": [{"role": "user", "content": "go"}]}) as s:
        for _, data in sse_events(s):
            chunks += 1
            if chunks == 3:
                httpx.post(f"{api}/api/deployments/{dep_id}/stop", headers=AUTH, timeout=30)
            if data.startswith("{") and "error" in json.loads(data):
                got_error = json.loads(data)["error"]
    assert got_error is not None and got_error["message"], "the stream must end with an error event"
    assert httpx.get(f"{api}/api/health").json()["status"] == "ok"
    assert httpx.get(f"{api}/api/deployments", headers=AUTH).status_code == 200
    httpx.delete(f"{api}/api/deployments/{dep_id}", headers=AUTH, timeout=30)


def test_stats_include_host_and_container(api, demo):
    dep_id, _ = demo
    snap = wait_until(lambda: (s := httpx.get(f"{api}/api/stats", headers=AUTH).json())["deployments"]
                      .get(dep_id, {}).get("mem_used_bytes") and s, 10, interval=0.2,
                      what="the deployment's memory in /api/stats")
    assert snap["host"]["mem_total_bytes"] > 0 and 0 <= snap["host"]["cpu_pct"] <= 100
    assert snap["gpu_status"]["available"] is False and snap["gpu_status"]["reason"]
    with httpx.stream("GET", f"{api}/api/stats/stream", headers=AUTH, timeout=10) as s:
        frames = []
        for name, data in sse_events(s):
            frames.append(json.loads(data))
            if len(frames) == 2:
                break
    assert frames[1]["seq"] > frames[0]["seq"] and dep_id in frames[1]["deployments"]


def test_metrics_parse(api, demo, client):
    _, served = demo
    client.completions.create(model=served, prompt="The lion", max_tokens=3)
    text = httpx.get(f"{api}/metrics", headers=AUTH).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name_labels, value = line.rsplit(" ", 1)
            samples[name_labels] = float(value)
    assert any(k.startswith("modeldeck_requests_total{") and f'model="{served}"' in k for k in samples)
    assert "modeldeck_host_cpu_percent" in samples


def test_history_stored_and_exported(api, demo):
    _, served = demo
    marker = f"history-marker-{RUN_ID}"
    r = httpx.post(f"{api}/v1/chat/completions", headers={**AUTH, "X-ModelDeck-History": "1"}, timeout=30,
                   json={"model": served, "max_tokens": 5, "temperature": 0.3,
                         "messages": [{"role": "user", "content": marker}]})
    assert r.status_code == 200
    found = httpx.get(f"{api}/api/history", params={"q": marker}, headers=AUTH).json()
    assert len(found) == 1
    entry = httpx.get(f"{api}/api/history/{found[0]['id']}", headers=AUTH).json()
    assert entry["model"] == served and entry["params"]["temperature"] == 0.3 and entry["output"]
    exported = httpx.get(f"{api}/api/history/export", headers=AUTH).json()
    assert any(marker in json.dumps(e) for e in exported)


def test_compose_export_reproduces_the_container(api, demo, engine):
    dep_id, served = demo
    text = httpx.get(f"{api}/api/deployments/{dep_id}/compose", headers=AUTH).text
    doc = yaml.safe_load(text)
    (svc,) = doc["services"].values()
    attrs = engine.client.api.inspect_container(f"modeldeck-{dep_id}")
    assert svc["image"] == attrs["Config"]["Image"]
    assert svc["command"] == attrs["Config"]["Cmd"]
    host_port = attrs["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostPort"]
    assert svc["ports"] == [f"127.0.0.1:{host_port}:8000"]


def test_routes_need_the_token(api):
    # Enumerated from the app itself: every operation of the OpenAPI document, plus the
    # routes kept out of it.
    paths = create_app(Settings(token="x")).openapi()["paths"]
    routes = [(m.upper(), p) for p, ops in paths.items() for m in ops] + [("GET", "/docs"), ("GET", "/openapi.json")]
    checked = 0
    for method, path in routes:
        if path == "/api/health":
            continue
        url = api + path.replace("{dep_id}", "x").replace("{entry_id}", "1").replace("{name}", "x") \
            .replace("{model}", "x")
        r = httpx.request(method, url, timeout=10)
        assert r.status_code == 401, (method, path, r.status_code)
        wrong = httpx.request(method, url, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert wrong.status_code == 401, (method, path)
        checked += 1
    assert checked >= 20
    assert httpx.get(f"{api}/api/health").status_code == 200


def raw_get(api: str, host_header: str | None, extra: str = "") -> int:
    port = int(api.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        host = f"Host: {host_header}\r\n" if host_header is not None else ""
        s.sendall(f"GET /api/deployments HTTP/1.1\r\n{host}Authorization: Bearer {TOKEN}\r\n{extra}"
                  f"Connection: close\r\n\r\n".encode())
        return int(s.recv(100).split()[1])


def test_dns_rebinding_and_foreign_origins_are_refused(api):
    port = api.rsplit(":", 1)[1]
    assert raw_get(api, f"127.0.0.1:{port}") == 200
    assert raw_get(api, "evil.example") == 403
    assert raw_get(api, f":{port}") == 403
    assert raw_get(api, "") == 403
    r = httpx.get(f"{api}/api/deployments", headers={**AUTH, "Origin": "http://evil.example"})
    assert r.status_code == 403 and not any(h.startswith("access-control") for h in r.headers)


def test_containers_started_outside_modeldeck_are_untouchable(api, engine, demo_base_image):
    outsider = engine.client.containers.run(demo_base_image, ["sleep", "60"], detach=True,
                                            labels={RUN_LABEL: RUN_ID}, name=f"outsider-{RUN_ID}")
    try:
        for action in ("stop", "restart"):
            r = httpx.post(f"{api}/api/deployments/{outsider.name}/{action}", headers=AUTH)
            assert r.status_code == 404, r.text
        assert httpx.delete(f"{api}/api/deployments/{outsider.name}", headers=AUTH).status_code == 404
        assert httpx.get(f"{api}/api/deployments/{outsider.id}/logs", headers=AUTH).status_code == 404
        outsider.reload()
        assert outsider.status == "running"
        assert outsider.name not in [d["name"] for d in httpx.get(f"{api}/api/deployments", headers=AUTH).json()]
    finally:
        outsider.remove(force=True)


@pytest.mark.parametrize("body,field", [
    ({"recipe": "demo", "model": "../../etc/passwd"}, "model"),
    ({"recipe": "demo", "model": "x; rm -rf /"}, "model"),
    ({"recipe": "demo", "model": "/etc/shadow"}, "model"),
    ({"recipe": "demo", "model": "demo-tiny", "port": 22}, "port"),
    ({"recipe": "demo", "model": "demo-tiny", "gpus": ["0;reboot"]}, "gpus"),
    ({"recipe": "demo", "model": "demo-tiny", "privileged": True}, "privileged"),
    ({"recipe": "demo", "model": "demo-tiny", "env": {"LD_PRELOAD": "/x.so"}}, "LD_PRELOAD"),
])
def test_bad_launch_fields_are_422_with_a_message(api, body, field):
    r = httpx.post(f"{api}/api/deployments", headers=AUTH, json=body)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert field in err["message"] or field in json.dumps(err), err
    assert err["hint"]


def test_fit_check_answers_without_a_gpu(api):
    r = httpx.post(f"{api}/api/fit-check", headers=AUTH,
                   json={"recipe": "vllm", "model": "Qwen/Qwen2.5-0.5B-Instruct"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["level"] == "unknown" and body["message"] and body["gpu"] is None
    missing = httpx.post(f"{api}/api/fit-check", headers=AUTH, json={"recipe": "vllm", "model": "x/y", "gpu": 3})
    assert missing.status_code == 404 and "GPU 3" in missing.json()["error"]["message"]


def test_docs_work_offline(api):
    page = httpx.get(f"{api}/docs", params={"token": TOKEN}, timeout=30)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    import re
    external = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page.text)
    assert not external, f"/docs must not load anything from the network: {external}"
    spec = httpx.get(f"{api}/openapi.json", headers=AUTH).json()
    ops = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("operationId") and op.get("summary") for op in ops), \
        [op.get("operationId") for op in ops if not op.get("summary")]

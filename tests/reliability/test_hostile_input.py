"""Hostile and bad input against the real backend process: secrets stay secret, ports stay local, bad bodies are refused."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import AUTH, TOKEN, BackendProcess
from tests.support.deployments import demo_body, launch
from tests.support.live_server import free_port
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
SECRET = f"hf_secret{RUN_ID}Zq8x"
KEY_SECRET = f"sk-key{RUN_ID}Wv3"
OPENAI_POSTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, demo_base_image, engine, demo_image):
    """A backend process with a model folder (holding a link that points out of it) and a demo launched with secrets."""
    root = tmp_path_factory.mktemp("hostile")
    models = root / "models"
    (models / "ok").mkdir(parents=True)
    (models / "escape").symlink_to("/etc")
    backend = BackendProcess(root / "home", demo_base_image=demo_base_image,
                             env={"MODELDECK_MODEL_DIRS": str(models)})
    backend.start()
    served = f"t{RUN_ID}-hostile"
    try:
        dep_id, events = launch(backend.url, TOKEN,
                                demo_body(served, env={"HF_TOKEN": SECRET, "MY_API_KEY": KEY_SECRET}))
        assert events[-1]["phase"] == "ready", events[-3:]
        wait_until(lambda: served in [m["id"] for m in backend.get("/v1/models").json()["data"]], 5, what="routed")
        yield backend, served, dep_id, models
    finally:
        backend.stop()
        for c in engine.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
            if c.labels.get("modeldeck.id", "").startswith(served):
                c.remove(force=True)


def test_secrets_never_leave_the_container(hostile, engine):
    backend, served, dep_id, _ = hostile
    attrs = engine.client.api.inspect_container(f"modeldeck-{dep_id}")
    assert f"HF_TOKEN={SECRET}" in attrs["Config"]["Env"], "the container does get the secret"
    assert SECRET not in json.dumps(attrs["Config"]["Labels"]) and KEY_SECRET not in json.dumps(attrs["Config"]["Labels"])

    # Exercise everything that could echo it: history, errors, exports, a relaunch.
    r = backend.post("/v1/chat/completions", headers={"X-ModelDeck-History": "1"},
                     json={"model": served, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    again = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                                   "env": {"HF_TOKEN": SECRET, "MY_API_KEY": KEY_SECRET}})
    assert again.status_code in (200, 202) and again.json()["existing"], again.text
    other = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                                   "env": {"HF_TOKEN": SECRET + "-changed"}})
    assert other.status_code in (200, 202, 409), other.text
    bad = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                                 "env": {"HF_TOKEN": SECRET + "\x00"}})
    assert bad.status_code == 422
    answers = [again.text, other.text, bad.text]
    for path in ["/api/deployments", f"/api/deployments/{dep_id}", f"/api/deployments/{dep_id}/compose",
                 f"/api/deployments/{dep_id}/logs", "/api/history", "/api/history/export", "/api/stats", "/metrics",
                 "/api/engine", "/openapi.json", "/v1/models"]:
        r = backend.get(path)
        assert r.status_code == 200, (path, r.status_code)
        answers.append(r.text)
    with httpx.stream("GET", f"{backend.url}/api/deployments/{dep_id}/events", headers=AUTH, timeout=10) as s:
        answers.extend(data for _, data in sse_events(s))
    compose = backend.get(f"/api/deployments/{dep_id}/compose").text
    assert "HF_TOKEN" in compose, "the export names the secret so it can be supplied"
    backend.stop()  # flushes the history database and the log
    stored = [p.read_bytes() for p in backend.home.rglob("*") if p.is_file()]
    for secret in (SECRET, KEY_SECRET):
        assert not any(secret in a for a in answers), f"{secret} in an API answer"
        assert secret not in backend.log(), "secret in the backend log"
        assert not any(secret.encode() in b for b in stored), "secret in a file of ModelDeck's home (history...)"
    backend.start()


def test_every_model_port_is_bound_to_loopback(hostile, engine):
    backend, served, _, _ = hostile
    pinned = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny",
                                                    "served_name": f"{served}-pinned", "port": free_port()})
    assert pinned.status_code == 202, pinned.text
    wait_until(lambda: backend.get(f"/api/deployments/{pinned.json()['id']}").json()["ready"], 60, what="ready")
    checked = 0
    for c in engine.client.api.containers(all=True, filters={"label": [f"{RUN_LABEL}={RUN_ID}",
                                                                         "modeldeck.managed=true"]}):
        attrs = engine.client.api.inspect_container(c["Id"])
        bindings = [b for bs in attrs["HostConfig"]["PortBindings"].values() for b in bs or []]
        published = [b for bs in (attrs["NetworkSettings"]["Ports"] or {}).values() for b in bs or []]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings), (attrs["Name"], bindings)
        assert all(b["HostIp"] == "127.0.0.1" for b in published), (attrs["Name"], published)
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("model", ["../../etc/passwd", "/etc/passwd", "/tmp/../etc/passwd", "~/../../etc/shadow",
                                   "C:\\Windows\\system32", "models/../../etc", "{models}/ok/../../../etc/passwd",
                                   "{models}/escape/passwd", "{models}/../home/token"])
def test_model_paths_outside_the_model_folders_are_refused(hostile, engine, model):
    backend, served, _, models = hostile
    model = model.format(models=models)
    r = backend.post("/api/deployments", json={"recipe": "demo", "model": model, "served_name": f"{served}-path"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"] and r.json()["error"]["hint"]
    assert not engine.client.api.containers(all=True, filters={"label": f"modeldeck.id={served}-path"})


@pytest.mark.parametrize("path", OPENAI_POSTS)
@pytest.mark.parametrize("raw", [b"{", b"not json", b"", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"{}",
                                 b'{"model": 5}', b'{"model": ""}', b'{"model": null, "messages": []}'])
def test_malformed_json_on_v1_gets_openai_error_shape(hostile, path, raw):
    backend, _, _, _ = hostile
    r = httpx.post(backend.url + path, content=raw, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code in (400, 422), (r.status_code, r.text)
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str)
    assert set(err) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("path", [*OPENAI_POSTS, "/api/deployments", "/api/fit-check"])
def test_oversized_bodies_get_413(hostile, path):
    backend, served, _, _ = hostile
    big = json.dumps({"model": served, "messages": [{"role": "user", "content": "x" * (9 * 2**20)}]}).encode()
    r = httpx.post(backend.url + path, content=big, headers={**AUTH, "Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["error"]["message"]

    def chunks():
        for _ in range(10):
            yield b"x" * 2**20

    r = httpx.post(backend.url + path, content=chunks(), headers={**AUTH, "Content-Type": "application/json"},
                   timeout=30)
    assert r.status_code == 413, r.text[:300]
    assert backend.get("/api/health").status_code == 200


def test_token_file_is_private_and_required(tmp_path, demo_base_image):
    backend = BackendProcess(tmp_path / "home", demo_base_image=demo_base_image, token=None)
    backend.start()
    try:
        token_file = backend.home / "token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(backend.home).st_mode) == 0o700
        token = token_file.read_text().strip()
        assert httpx.get(f"{backend.url}/api/deployments").status_code == 401
        assert httpx.get(f"{backend.url}/api/engine", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
        assert httpx.get(f"{backend.url}/api/engine", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert token not in backend.log()
    finally:
        backend.stop()

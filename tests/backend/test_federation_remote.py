"""Federation across a real second machine (``remote_node``: its own network namespace and link, sshd, dockerd
and modeldeck-backend), driven only through the local backend's API: add the node over SSH, place and launch
the demo there, chat with it through the local /v1, watch its stats, cut the link mid-stream, restore it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from backend.federation import POLL_TIMEOUT_S
from tests.backend.test_federation import same_but_ids
from tests.support.backend_process import BackendProcess
from tests.support.deployments import demo_body, launch_ready
from tests.support.waiting import wait_until

NODE = "gpu1"
#: This machine's host memory budget: the node (no budget) has more free, so placement picks it.
LOCAL_BUDGET = 1024 ** 3


@pytest.fixture()
def local(tmp_path, demo_image, demo_base_image):
    """The local backend, with HOME a temporary folder (its ~/.ssh is the test's) and a host memory budget."""
    home = tmp_path / "person"
    (home / ".ssh").mkdir(parents=True)
    backend = BackendProcess(tmp_path / "local-home", demo_base_image=demo_base_image,
                             env={"HOME": str(home), "MODELDECK_HOST_MEMORY_BUDGET": str(LOCAL_BUDGET)})
    backend.start()
    yield backend
    backend.stop()


def node_containers(remote_node, name: str) -> list[str]:
    """Container ids on the node's own engine called ``name``."""
    out = remote_node.docker(["ps", "-aq", "--no-trunc", "--filter", f"name=^{name}$"]).stdout
    return out.split()


def listed(local: BackendProcess) -> list[dict]:
    r = local.get("/api/deployments", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def by_id(local: BackendProcess) -> dict[str, dict]:
    return {d["id"]: d for d in listed(local)}


def add_node(local: BackendProcess, remote_node) -> dict:
    body = {"name": NODE, "transport": "ssh",
            "ssh": {"host": remote_node.ip, "user": remote_node.user, "port": remote_node.ssh_port,
                    "identity_file": str(remote_node.client_key)},
            "remote_port": remote_node.remote_port, "remote_home": str(remote_node.remote_home)}
    r = local.post("/api/nodes", json=body, timeout=60)
    assert r.status_code == 409 and r.json()["error"]["code"] == "host_key_unknown", r.text
    fingerprint = r.json()["error"]["details"]["fingerprint"]
    assert fingerprint == remote_node.host_key_fingerprint
    r = local.post(f"/api/nodes/{NODE}/trust", json={"fingerprint": fingerprint}, timeout=60)
    assert r.status_code == 200, r.text
    return wait_until(lambda: (n := local.get(f"/api/nodes/{NODE}").json())["state"] == "connected" and n, 60,
                      what="the node connected")


def test_the_demo_on_a_second_machine_through_the_local_backend(local, remote_node, demo_base_image):
    try:
        _the_whole_story(local, remote_node)
    finally:
        remote_node.reset()
        for name in ("modeldeck-fedr-auto", "modeldeck-fedr-demo"):
            for cid in node_containers(remote_node, name):
                remote_node.docker(["rm", "-f", cid], check=False)


def _the_whole_story(local: BackendProcess, remote_node) -> None:
    node = add_node(local, remote_node)
    tunnel, remote_auth = node["base_url"], {"Authorization": f"Bearer {remote_node.token}"}

    # Placement: each machine's own fit check; the node has more host memory free than this one's budget.
    r = local.get("/api/placement", params={"recipe": "demo", "model": "demo-tiny"}, timeout=30)
    assert r.status_code == 200, r.text
    cands = {c["node"]: c for c in r.json()["candidates"]}
    assert list(cands) == ["local", NODE]
    assert cands["local"]["free_bytes"] <= LOCAL_BUDGET < cands[NODE]["free_bytes"]
    assert r.json()["chosen"]["node"] == NODE
    auto = launch_ready(local.url, local.token, demo_body("fedr-auto", node="auto", env={"DEMO_TOKEN_DELAY": "0"}))
    assert (auto["id"], auto["node"]) == (f"fedr-auto@{NODE}", NODE)
    assert len(node_containers(remote_node, "modeldeck-fedr-auto")) == 1

    # Launch on the node by name, and one here.
    demo = launch_ready(local.url, local.token,
                        demo_body("fedr-demo", node=NODE, env={"DEMO_TOKEN_DELAY": "0.1"}), timeout=180)
    assert (demo["id"], demo["ready"]) == (f"fedr-demo@{NODE}", True)
    [container] = node_containers(remote_node, "modeldeck-fedr-demo")
    assert demo["container_id"] == container
    launch_ready(local.url, local.token, demo_body("fedr-here", env={"DEMO_TOKEN_DELAY": "0"}))
    deps = wait_until(lambda: (d := by_id(local)).get(f"fedr-demo@{NODE}", {}).get("ready") and d, 20,
                      what="the node's deployment listed")
    assert deps["fedr-here"]["node"] == "local" and deps[f"fedr-demo@{NODE}"]["node"] == NODE

    # /v1/models shows both machines' models.
    cards = {c["id"]: c for c in local.get("/v1/models").json()["data"]}
    assert cards["fedr-demo"]["node"] == NODE and cards["fedr-here"]["node"] == "local"

    # Chat through the local /v1: the node's own bytes (asked directly through the tunnel for comparison).
    ask = {"model": "fedr-auto", "messages": [{"role": "user", "content": "Once"}], "max_tokens": 10, "seed": 3}
    here = local.post("/v1/chat/completions", json=ask, timeout=60)
    there = httpx.post(f"{tunnel}/v1/chat/completions", json=ask, headers=remote_auth, timeout=60)
    assert here.status_code == there.status_code == 200, here.text
    assert same_but_ids(here.content, there.content)
    streamed = []
    for url, auth in ((local.url, local.auth), (tunnel, remote_auth)):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**ask, "stream": True}, headers=auth,
                          timeout=60) as s:
            streamed.append(b"".join(s.iter_raw()))
    assert streamed[0].endswith(b"data: [DONE]\n\n") and same_but_ids(*streamed)

    # Its stats, measured on the node.
    stats = local.get(f"/api/nodes/{NODE}/stats", timeout=30)
    assert stats.status_code == 200 and stats.json()["host"]["mem_total_bytes"] > 0, stats.text

    # The link is cut mid-stream: an error event and [DONE]; the rest keeps working.
    got = b""
    slow = {"model": "fedr-demo", "messages": [{"role": "user", "content": "Once"}], "max_tokens": 2000,
            "stream": True}
    with httpx.stream("POST", f"{local.url}/v1/chat/completions", json=slow, headers=local.auth, timeout=120) as s:
        chunks = s.iter_raw()
        while got.count(b"data:") < 3:
            got += next(chunks)
        remote_node.cut_link()
        t_cut = time.monotonic()
        mid = local.post("/v1/chat/completions", json={"model": "fedr-here", "max_tokens": 3,
                                                        "messages": [{"role": "user", "content": "x"}]}, timeout=30)
        assert mid.status_code == 200, mid.text  # a local model answers while the node's stream hangs
        for chunk in chunks:
            got += chunk
    assert b'"type":"upstream_error"' in got.replace(b" ", b""), got[-600:]
    assert got.endswith(b"data: [DONE]\n\n")
    assert time.monotonic() - t_cut < 60

    deps = wait_until(lambda: (d := by_id(local)).get(f"fedr-demo@{NODE}", {}).get("status") == "unreachable" and d,
                      30, what="the node's deployments marked unreachable")
    assert deps[f"fedr-demo@{NODE}"]["stale"] and f"'{NODE}'" in deps[f"fedr-demo@{NODE}"]["engine_error"]
    assert deps["fedr-here"]["status"] == "ready"
    t0 = time.perf_counter()
    listed(local)
    assert time.perf_counter() - t0 < POLL_TIMEOUT_S  # never waits for the node
    r = local.post("/v1/chat/completions", json={**slow, "stream": False, "max_tokens": 3}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "node_unreachable", r.text
    assert f"'{NODE}'" in r.json()["error"]["message"]
    r = local.post(f"/api/deployments/fedr-demo@{NODE}/stop", timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "node_unreachable", r.text

    # Restored: reconnected and reconciled; the same ids, nothing duplicated, one container on the node.
    remote_node.restore_link()
    wait_until(lambda: by_id(local).get(f"fedr-demo@{NODE}", {}).get("ready"), 120,
               what="the node's deployment ready again after the link came back")
    ids = [d["id"] for d in listed(local)]
    assert sorted(i for i in ids if i.startswith("fedr-")) == ["fedr-auto@gpu1", "fedr-demo@gpu1", "fedr-here"]
    assert node_containers(remote_node, "modeldeck-fedr-demo") == [container]
    again = local.post("/v1/chat/completions", json={**slow, "stream": False, "max_tokens": 3}, timeout=60)
    assert again.status_code == 200, again.text

    # Stop and remove through the local API.
    r = local.post(f"/api/deployments/fedr-demo@{NODE}/stop", timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "stopped", r.text
    for dep_id in (f"fedr-demo@{NODE}", f"fedr-auto@{NODE}"):
        assert local.delete(f"/api/deployments/{dep_id}").status_code == 204
    assert node_containers(remote_node, "modeldeck-fedr-demo") == []
    wait_until(lambda: not any(i.endswith(f"@{NODE}") and i.startswith("fedr-") for i in by_id(local)), 20,
               what="the removed deployments to leave the list")

    # Bad input: a node nobody added.
    r = local.post("/api/deployments", json=demo_body("fedr-x", node="mars"))
    assert r.status_code == 404 and r.json()["error"]["code"] == "node_not_found", r.text
    assert "mars" in r.json()["error"]["message"] and NODE in r.json()["error"]["message"]


@pytest.mark.slow
def test_llamacpp_on_the_node_through_the_local_v1(local, remote_node, remote_llamacpp_image, gguf_models):
    """A real runtime on the node: llama.cpp's image (copied into the node's engine) serving the tiny GGUF."""
    remote_node.backend_env["MODELDECK_MODEL_DIRS"] = str(gguf_models)
    remote_node.stop_backend()
    remote_node.start_backend()
    try:
        add_node(local, remote_node)
        body = {"recipe": "llama-cpp", "served_name": "fedr-llama", "image_source": "local", "node": NODE,
                "model": str(gguf_models / "tiny" / "tiny-llama.gguf")}
        dep = launch_ready(local.url, local.token, body, timeout=240)
        assert (dep["id"], dep["node"]) == (f"fedr-llama@{NODE}", NODE)
        assert len(node_containers(remote_node, "modeldeck-fedr-llama")) == 1
        ask = {"model": "fedr-llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        r = local.post("/v1/chat/completions", json=ask, timeout=120)
        assert r.status_code == 200 and r.json()["choices"][0]["message"] is not None, r.text
        with httpx.stream("POST", f"{local.url}/v1/chat/completions", json={**ask, "stream": True},
                          headers=local.auth, timeout=120) as s:
            streamed = b"".join(s.iter_raw())
        assert streamed.count(b"data:") >= 2 and streamed.endswith(b"data: [DONE]\n\n"), streamed[-300:]
        assert local.delete(f"/api/deployments/fedr-llama@{NODE}").status_code == 204
        assert node_containers(remote_node, "modeldeck-fedr-llama") == []
    finally:
        for cid in node_containers(remote_node, "modeldeck-fedr-llama"):
            remote_node.docker(["rm", "-f", cid], check=False)
        remote_node.backend_env.pop("MODELDECK_MODEL_DIRS", None)
        remote_node.stop_backend()
        remote_node.start_backend()

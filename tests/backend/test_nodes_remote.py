"""Nodes against the simulated second machine (tests/support/remote_node.py): its own network namespace and
link, sshd, engine and modeldeck-backend; reached through the person's ~/.ssh/config alias."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.backend_process import BackendProcess
from tests.support.waiting import wait_until


@pytest.fixture
def person(tmp_path):
    """HOME for the local backend: a ~/.ssh of the test's own."""
    home = tmp_path / "person"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    return home


@pytest.fixture
def local(tmp_path, person):
    backend = BackendProcess(tmp_path / "local-home", env={"HOME": str(person)})
    backend.start()
    yield backend
    backend.stop()


def node_state(local: BackendProcess, name: str) -> dict:
    return local.get(f"/api/nodes/{name}").json()


def test_remote_node_over_ssh_config_alias_cut_and_restored(local, person, remote_node):
    alias = remote_node.ssh_config(person / ".ssh" / "config", alias="gpu-box")
    body = {"name": "gpu-box", "transport": "ssh", "ssh": {"host": alias},
            "remote_home": str(remote_node.remote_home), "remote_port": remote_node.remote_port}
    r = local.post("/api/nodes", json=body)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"]["fingerprint"] == remote_node.host_key_fingerprint
    r = local.post("/api/nodes/gpu-box/trust", json={"fingerprint": remote_node.host_key_fingerprint})
    assert r.status_code == 200, r.text
    node = r.json()
    assert node["state"] == "connected" and node["address"] == "gpu-box"
    # Its own engine (the node's dockerd), its own deployments, its own GPUs as its NVML sees them.
    assert node["engine"]["reachable"] is True and remote_node.name in node["engine"]["endpoint"]
    remote_deployments = httpx.get(node["base_url"] + "/api/deployments", timeout=10,
                                   headers={"Authorization": f"Bearer {remote_node.token}"}).json()
    assert node["deployments"] == len(remote_deployments)
    assert isinstance(node["gpus"], list)
    assert remote_node.token not in local.get("/api/nodes").text
    old_port = node["base_url"].rsplit(":", 1)[1]

    try:
        remote_node.cut_link()
        t0 = time.monotonic()
        gone = wait_until(lambda: (n := node_state(local, "gpu-box"))["state"] == "unreachable" and n, 15,
                          what="the node to show unreachable after the cut")
        print(f"unreachable {time.monotonic() - t0:.2f} s after the cut: {gone['error']}")
        assert gone["error_code"] == "node_unreachable" and gone["hint"]
        # The rest of the backend does not slow down meanwhile.
        t1 = time.monotonic()
        assert local.get("/api/nodes").status_code == 200 and local.get("/api/deployments").status_code == 200
        assert time.monotonic() - t1 < 2
        remote_node.restore_link()
        t0 = time.monotonic()
        back = wait_until(lambda: (n := node_state(local, "gpu-box"))["state"] == "connected" and n, 40,
                          what="the node to reconnect after the link came back")
        print(f"connected again {time.monotonic() - t0:.2f} s after the restore")
        assert back["base_url"].rsplit(":", 1)[1] != old_port or back["last_seen"] != node["last_seen"]
        assert httpx.get(back["base_url"] + "/api/health", timeout=5).status_code == 200
    finally:
        remote_node.reset()


def test_remote_node_changed_host_key(local, person, remote_node, tmp_path):
    body = {"name": "n1", "ssh": {"host": remote_node.ip, "user": remote_node.user,
                                  "identity_file": str(remote_node.client_key)},
            "remote_home": str(remote_node.remote_home)}
    fp = local.post("/api/nodes", json=body).json()["error"]["details"]["fingerprint"]
    assert local.post("/api/nodes/n1/trust", json={"fingerprint": fp}).json()["state"] == "connected"
    new = remote_node.rotate_host_key()
    r = local.post("/api/nodes/n1/test")
    assert r.status_code == 409 and r.json()["error"]["code"] == "host_key_changed", r.text
    assert new in r.json()["error"]["message"] and "ssh-keygen -R" in r.json()["error"]["hint"]
    assert node_state(local, "n1")["state"] == "error"
    assert local.post("/api/nodes/n1/trust", json={"fingerprint": new}).status_code == 409  # still a changed key


def test_bare_ssh_host_is_node_not_modeldeck(local, bare_ssh_host):
    body = {"name": "bare", "ssh": {"host": bare_ssh_host.ip, "user": bare_ssh_host.user,
                                    "identity_file": str(bare_ssh_host.client_key)}}
    fp = local.post("/api/nodes", json=body).json()["error"]["details"]["fingerprint"]
    assert fp == bare_ssh_host.host_key_fingerprint
    r = local.post("/api/nodes/bare/trust", json={"fingerprint": fp})
    assert r.status_code == 502 and r.json()["error"]["code"] == "node_not_modeldeck", r.text
    # No token file there, or (the namespace shares this machine's files, so root's home may hold a
    # token from another run) nothing on its port 8765: either way no ModelDeck, and what to start.
    assert "modeldeck-backend" in r.json()["error"]["hint"]
    assert node_state(local, "bare")["error_code"] == "node_not_modeldeck"

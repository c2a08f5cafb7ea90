"""Nodes over SSH against a real sshd on loopback and real backends (backend/nodes.py, backend/ssh_tunnel.py).

The "node" here is a second ``modeldeck-backend`` (its own home and token) behind a real OpenSSH
``sshd`` on a free loopback port with its own host key and authorized_keys; the local backend
runs with HOME set to a temporary folder, so ``~/.ssh`` is the test's. The network-namespace
node (cut links, a node's own engine) is tests/backend/test_nodes_remote.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.backend_process import BackendProcess
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(shutil.which("sshd") is None and not os.environ.get("CI"),
                                reason="OpenSSH's sshd is not installed (scripts/lib.sh ensure_node_tools)")


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True)
    return path


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[1]


class LoopbackSshd:
    """A real sshd on 127.0.0.1:<free port>: its own host key, authorized_keys and pid file."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host_key = keygen(folder / "host_ed25519")
        self.client_key = keygen(folder / "client_ed25519")
        self.authorized = folder / "authorized_keys"
        self.authorized.write_text((folder / "client_ed25519.pub").read_text())
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\nPidFile {folder}/sshd.pid\n"
            f"AuthorizedKeysFile {self.authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowTcpForwarding yes\n"
            "ClientAliveInterval 5\n")
        self.proc: subprocess.Popen | None = None

    @property
    def host_fingerprint(self) -> str:
        return fingerprint(self.host_key.with_suffix(".pub"))

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "sshd.log", "ab"),
                                     start_new_session=True)

        def listens() -> bool:
            assert self.proc.poll() is None, (self.folder / "sshd.log").read_text()
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        wait_until(listens, 10, what="sshd to listen")

    def stop(self) -> None:
        """Kill sshd and every session it started (its process group): the link is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        family, todo = [], [self.proc.pid]
        while todo:  # sshd's per-connection children re-title themselves: find them by parentage
            pid = todo.pop()
            family.append(pid)
            todo += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                     text=True).stdout.split()]
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def rotate_host_key(self) -> str:
        for suffix in ("", ".pub"):
            Path(str(self.host_key) + suffix).unlink()
        keygen(self.host_key)
        os.kill(self.proc.pid, signal.SIGHUP)  # sshd re-executes itself and reads the new key
        wait_until(lambda: self._offers(self.host_fingerprint), 10, what="sshd to offer its new host key")
        return self.host_fingerprint

    def _offers(self, fp: str) -> bool:
        out = subprocess.run(["ssh-keyscan", "-p", str(self.port), "127.0.0.1"], capture_output=True, text=True).stdout
        got = subprocess.run(["ssh-keygen", "-lf", "-"], input=out, capture_output=True, text=True).stdout
        return fp in got


@pytest.fixture
def sshd(tmp_path):
    server = LoopbackSshd(tmp_path / "sshd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def remote(tmp_path):
    """The node's own backend: its own home, its own token file (as a real install has)."""
    backend = BackendProcess(tmp_path / "node-home", token=None)
    backend.start()
    yield backend
    backend.stop()


@pytest.fixture
def local(tmp_path):
    """The local backend, with HOME a temporary folder (its ~/.ssh is the test's)."""
    home = tmp_path / "person"
    (home / ".ssh").mkdir(parents=True)
    backend = BackendProcess(tmp_path / "local-home", env={"HOME": str(home)})
    backend.start()
    yield backend
    backend.stop()


def body(sshd: LoopbackSshd, remote: BackendProcess, name: str = "gpu1", **ssh) -> dict:
    return {"name": name, "transport": "ssh",
            "ssh": {"host": "127.0.0.1", "user": "root", "port": sshd.port, "identity_file": str(sshd.client_key),
                    **ssh},
            "remote_port": remote.port, "remote_home": str(remote.home)}


def add_trusted(local: BackendProcess, sshd: LoopbackSshd, remote: BackendProcess, name: str = "gpu1", **ssh) -> dict:
    r = local.post("/api/nodes", json=body(sshd, remote, name, **ssh))
    assert r.status_code == 409, r.text
    r = local.post(f"/api/nodes/{name}/trust", json={"fingerprint": r.json()["error"]["details"]["fingerprint"]})
    assert r.status_code == 200, r.text
    return r.json()


def tunnel_pids(port: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", "--", f"-L 127.0.0.1:{port}:"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_unknown_host_key_then_trust_connects_and_keeps_the_token_private(local, sshd, remote):
    r = local.post("/api/nodes", json=body(sshd, remote))
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "host_key_unknown"
    assert err["details"]["fingerprint"] == sshd.host_fingerprint
    assert err["details"]["key_type"] == "ED25519"
    assert "trust" in err["hint"].lower()
    # Kept, waiting for the person's answer; never connected meanwhile.
    node = local.get("/api/nodes/gpu1").json()
    assert node["state"] == "error" and node["error_code"] == "host_key_unknown"

    # A fingerprint that is not the one offered trusts nothing.
    wrong = local.post("/api/nodes/gpu1/trust", json={"fingerprint": "SHA256:" + "A" * 43})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "host_key_changed"
    assert not (local.home / "known_hosts").exists() or sshd.host_fingerprint not in (local.home / "known_hosts").read_text()

    t0 = time.monotonic()
    r = local.post("/api/nodes/gpu1/trust", json={"fingerprint": err["details"]["fingerprint"]})
    assert r.status_code == 200, r.text
    node = r.json()
    assert node["state"] == "connected" and node["error"] is None, node
    assert node["address"] == f"root@127.0.0.1:{sshd.port}"
    assert 0 < node["rtt_ms"] < 2000
    assert node["engine"]["reachable"] is True
    assert isinstance(node["gpus"], list)  # this machine has no GPU: the node's own NVML says so
    # The node's deployments are what its own backend lists (it shares this machine's engine here).
    wait_until(lambda: local.get("/api/nodes/gpu1").json()["deployments"] == len(remote.get("/api/deployments").json()),
               10, what="the node's deployment count")
    assert node["last_seen"] is not None
    print(f"trust → connected in {time.monotonic() - t0:.2f} s, rtt {node['rtt_ms']} ms")

    # The tunnel is the node's own backend: its health through the local end.
    assert httpx.get(node["base_url"] + "/api/health", timeout=5).json()["status"] == "ok"
    remote_token = (remote.home / "token").read_text().strip()
    assert httpx.get(node["base_url"] + "/api/deployments", timeout=5,
                     headers={"Authorization": f"Bearer {remote_token}"}).status_code == 200

    # The token: stored owner-only, never in nodes.json, never in any answer.
    token_file = local.home / "nodes" / "gpu1" / "token"
    assert token_file.read_text().strip() == remote_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((local.home / "nodes.json").stat().st_mode) == 0o600
    assert remote_token not in (local.home / "nodes.json").read_text()
    for path in ("/api/nodes", "/api/nodes/gpu1"):
        assert remote_token not in local.get(path).text
    listed = local.get("/api/nodes").json()["nodes"]
    assert [n["name"] for n in listed] == ["local", "gpu1"]
    assert listed[0]["state"] == "connected"

    # Re-adding the same name is refused.
    again = local.post("/api/nodes", json=body(sshd, remote))
    assert again.status_code == 409 and again.json()["error"]["code"] == "node_exists"

    # The health loop keeps it connected and refreshes last_seen.
    seen = node["last_seen"]
    wait_until(lambda: local.get("/api/nodes/gpu1").json()["last_seen"] != seen, 10, what="a health probe")
    assert remote_token not in local.log()


def test_wrong_client_key_is_node_auth_failed_and_not_kept(local, sshd, remote, tmp_path):
    add_trusted(local, sshd, remote)  # trusts the host key (ModelDeck's known_hosts)
    stranger = keygen(tmp_path / "stranger")
    r = local.post("/api/nodes", json=body(sshd, remote, "other", identity_file=str(stranger)))
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["code"] == "node_auth_failed" and "Permission denied" in err["message"]
    assert "authorized_keys" in err["hint"]
    assert local.get("/api/nodes/other").status_code == 404
    assert not (local.home / "nodes" / "other").exists()


def test_unreachable_address_fails_quickly(local):
    closed = free_port()
    t0 = time.monotonic()
    r = local.post("/api/nodes", json={"name": "gone", "ssh": {"host": "127.0.0.1", "port": closed}})
    took = time.monotonic() - t0
    assert r.status_code == 502 and r.json()["error"]["code"] == "node_unreachable", r.text
    assert "Connection refused" in r.json()["error"]["message"] and took < 5
    # An address nothing answers on (TEST-NET-1): bounded by ssh's ConnectTimeout (5 s).
    t0 = time.monotonic()
    r = local.post("/api/nodes", json={"name": "gone", "ssh": {"host": "192.0.2.1", "port": 22}}, timeout=60)
    took = time.monotonic() - t0
    assert r.status_code == 502 and r.json()["error"]["code"] == "node_unreachable", r.text
    assert took < 12, took
    print(f"unreachable answered in {took:.2f} s")
    assert local.get("/api/nodes").json()["nodes"][1:] == []


def test_changed_host_key_is_refused_and_never_accepted(local, sshd, remote):
    add_trusted(local, sshd, remote)
    new_fp = sshd.rotate_host_key()
    r = local.post("/api/nodes/gpu1/test")
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "host_key_changed" and "CHANGED" in err["message"]
    assert "ssh-keygen -R" in err["hint"]
    node = local.get("/api/nodes/gpu1").json()
    assert node["state"] == "error" and node["error_code"] == "host_key_changed" and node["base_url"] is None
    assert new_fp not in subprocess.run(["ssh-keygen", "-lf", str(local.home / "known_hosts")],
                                        capture_output=True, text=True).stdout
    # Testing again does not accept it either, nor does trusting the new key beside the old one.
    assert local.post("/api/nodes/gpu1/test").json()["error"]["code"] == "host_key_changed"
    r = local.post("/api/nodes/gpu1/trust", json={"fingerprint": new_fp})
    assert r.status_code == 409 and r.json()["error"]["details"]["old_fingerprint"] != new_fp, r.text
    # Once the person removed the old key (as the hint says), the new one can be trusted.
    subprocess.run(["ssh-keygen", "-R", f"[127.0.0.1]:{sshd.port}", "-f", str(local.home / "known_hosts")],
                   check=True, capture_output=True)
    r = local.post("/api/nodes/gpu1/trust", json={"fingerprint": new_fp})
    assert r.status_code == 200 and r.json()["state"] == "connected", r.text


def test_node_without_modeldeck(local, sshd, remote, tmp_path):
    add_trusted(local, sshd, remote)
    empty = tmp_path / "no-modeldeck"
    empty.mkdir()
    r = local.post("/api/nodes", json={**body(sshd, remote, "bare"), "remote_home": str(empty)})
    assert r.status_code == 502 and r.json()["error"]["code"] == "node_not_modeldeck", r.text
    assert "modeldeck-backend" in r.json()["error"]["hint"]
    # A token file, but nothing on the port.
    r = local.post("/api/nodes", json={**body(sshd, remote, "bare"), "remote_port": free_port()})
    assert r.status_code == 502 and r.json()["error"]["code"] == "node_not_modeldeck", r.text
    assert "Nothing answers" in r.json()["error"]["message"]
    assert [n["name"] for n in local.get("/api/nodes").json()["nodes"]] == ["local", "gpu1"]

    # The node's backend stops (sshd stays): the node says so, and is back when the backend is.
    remote.stop()
    down = wait_until(lambda: (n := local.get("/api/nodes/gpu1").json())["state"] != "connected" and n, 10,
                      what="the node to notice its backend stopped")
    assert down["error_code"] == "node_not_modeldeck" and "modeldeck-backend" in down["hint"], down
    remote.start()
    wait_until(lambda: local.get("/api/nodes/gpu1").json()["state"] == "connected", 30,
               what="the node back with its backend")


def test_link_lost_then_back_remove_stops_tunnel_and_nodes_survive_restart(local, sshd, remote):
    node = add_trusted(local, sshd, remote)
    port = int(node["base_url"].rsplit(":", 1)[1])
    assert tunnel_pids(port)

    sshd.stop()  # sshd and its sessions killed: the tunnel's ssh exits
    t0 = time.monotonic()
    wait_until(lambda: local.get("/api/nodes/gpu1").json()["state"] == "unreachable", 10, what="unreachable")
    print(f"unreachable after {time.monotonic() - t0:.2f} s")
    gone = local.get("/api/nodes/gpu1").json()
    assert gone["error_code"] == "node_unreachable" and gone["hint"] and gone["rtt_ms"] is None
    sshd.start()
    t0 = time.monotonic()
    back = wait_until(lambda: (n := local.get("/api/nodes/gpu1").json())["state"] == "connected" and n, 20,
                      what="reconnected")
    print(f"reconnected after {time.monotonic() - t0:.2f} s")
    new_port = int(back["base_url"].rsplit(":", 1)[1])
    assert httpx.get(back["base_url"] + "/api/health", timeout=5).status_code == 200

    local.stop()
    assert not tunnel_pids(new_port), "the backend's shutdown ends its tunnels"
    local.start()
    again = wait_until(lambda: (n := local.get("/api/nodes/gpu1").json())["state"] == "connected" and n, 20,
                       what="the node reconnected after a backend restart")
    last_port = int(again["base_url"].rsplit(":", 1)[1])
    assert tunnel_pids(last_port)
    assert local.delete("/api/nodes/gpu1").status_code == 204
    assert not tunnel_pids(last_port)
    assert local.get("/api/nodes/gpu1").status_code == 404
    assert not (local.home / "nodes" / "gpu1").exists()
    assert json.loads((local.home / "nodes.json").read_text()) == {"nodes": []}


def test_stored_passphrase_is_given_through_askpass(local, sshd, remote, tmp_path):
    locked = keygen(tmp_path / "locked", passphrase="open sesame")
    sshd.authorized.write_text(sshd.authorized.read_text() + (tmp_path / "locked.pub").read_text())
    add_trusted(local, sshd, remote)
    no_pass = local.post("/api/nodes", json=body(sshd, remote, "locked", identity_file=str(locked)))
    assert no_pass.status_code == 502 and no_pass.json()["error"]["code"] == "node_auth_failed"
    r = local.post("/api/nodes", json=body(sshd, remote, "locked", identity_file=str(locked),
                                           passphrase="open sesame"))
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "connected"
    assert "open sesame" not in r.text and "open sesame" not in local.get("/api/nodes").text
    stored = local.home / "nodes" / "locked" / "passphrase"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and stored.read_text().strip() == "open sesame"
    assert "open sesame" not in (local.home / "nodes.json").read_text()


BAD = [
    ({"name": "local", "ssh": {"host": "h"}}, "name"),
    ({"name": "auto", "ssh": {"host": "h"}}, "name"),
    ({"name": "Upper", "ssh": {"host": "h"}}, "name"),
    ({"name": "x" * 33, "ssh": {"host": "h"}}, "name"),
    ({"name": "a", "ssh": {"host": "-oProxyCommand=touch /tmp/pwned"}}, "ssh.host"),
    ({"name": "a", "ssh": {"host": "h", "user": "-x"}}, "ssh.user"),
    ({"name": "a", "ssh": {"host": "h", "identity_file": "/nonexistent/key"}}, "ssh.identity_file"),
    ({"name": "a", "transport": "ssh"}, "transport"),
    ({"name": "a", "transport": "tls", "tls": {"url": "http://10.0.0.2:8443", "ca_cert": "-----BEGIN X",
                                              "client_cert": "-----BEGIN X", "client_key": "-----BEGIN X"}}, "tls.url"),
]


def test_bad_requests_are_422_naming_the_field(local):
    for bad, where in BAD:
        r = local.post("/api/nodes", json=bad)
        assert r.status_code == 422, r.text
        assert where.split(".")[0] in r.json()["error"]["message"], (where, r.text)
    assert not Path("/tmp/pwned").exists()
    assert local.get("/api/nodes").json()["nodes"][1:] == []


def test_unknown_node_is_404(local):
    for call in (lambda: local.get("/api/nodes/nope"), lambda: local.post("/api/nodes/nope/test"),
                 lambda: local.delete("/api/nodes/nope")):
        r = call()
        assert r.status_code == 404 and r.json()["error"]["code"] == "node_not_found"


def test_ssh_command_lines_are_non_interactive_and_strict(tmp_path, monkeypatch):
    from backend.ssh_tunnel import SshTarget, remote_path

    monkeypatch.setenv("HOME", str(tmp_path))
    target = SshTarget("gpu-box", user="me", port=2222, identity_file="/k", known_hosts=tmp_path / "kh")
    cmd = target.tunnel_command(40000, 8765)
    text = " ".join(cmd)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ExitOnForwardFailure=yes", "ServerAliveInterval=5",
                   "ServerAliveCountMax=2", f"UserKnownHostsFile={tmp_path / 'kh'} {tmp_path / '.ssh/known_hosts'}",
                   "-L 127.0.0.1:40000:127.0.0.1:8765", "-p 2222", "-l me", "-i /k", "-N"):
        assert option in text, option
    assert cmd[-2:] == ["--", "gpu-box"], "the destination can never be read as an option"
    assert "-F" not in cmd  # no ~/.ssh/config in this HOME: ssh's own defaults
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host x\n")
    assert ["-F", str(tmp_path / ".ssh" / "config")] == target.options()[:2]

    locked = SshTarget("h", known_hosts=tmp_path / "kh", askpass=tmp_path / "askpass")
    assert "BatchMode=no" in locked.options() and "PasswordAuthentication=no" in locked.options()
    assert locked.env()["SSH_ASKPASS"] == str(tmp_path / "askpass") and locked.env()["SSH_ASKPASS_REQUIRE"] == "force"
    assert "SSH_ASKPASS" not in target.env() or target.env()["SSH_ASKPASS"] == os.environ.get("SSH_ASKPASS")

    assert remote_path("~/.config/modeldeck/token") == "~/.config/modeldeck/token"
    assert remote_path("/srv/model deck/token") == "'/srv/model deck/token'"
    assert remote_path("~/a;rm -rf x/token") == "~/'a;rm -rf x/token'"


def test_local_is_listed_first_with_its_engine(local):
    nodes = local.get("/api/nodes").json()["nodes"]
    assert nodes[0]["name"] == "local" and nodes[0]["state"] == "connected" and nodes[0]["transport"] == "local"
    engine = local.get("/api/engine").json()
    assert nodes[0]["engine"]["endpoint"] == engine["endpoint"] and nodes[0]["engine"]["reachable"] is True
    assert local.get("/api/nodes/local").json()["name"] == "local"
    r = local.delete("/api/nodes/local")
    assert r.status_code == 404 and "this machine" in r.json()["error"]["message"]

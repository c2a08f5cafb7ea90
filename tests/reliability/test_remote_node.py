"""The simulated second machine (tests/support/remote_node.py) is what the multi-node tests take it for:
reached only over its link, by SSH with a verified host key, with an engine and a backend of its own."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import skip_or_fail
from tests.support.live_server import free_port
from tests.support.remote_node import RemoteNode, _netns_pids, missing_tools, reap_stale
from tests.support.waiting import wait_until

HOST_CONTAINERD = "/var/run/docker/containerd/containerd.sock"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _can_make_nodes():
    """Root and the node's tools (scripts/test installs them); without: a failure in CI, a skip elsewhere."""
    if os.geteuid() != 0:
        skip_or_fail("the simulated node needs root (network namespaces, sshd, dockerd)")
    if missing := missing_tools():
        skip_or_fail(f"the simulated node needs {', '.join(missing)} (scripts/test: ensure_node_tools)")


@pytest.fixture()
def known_hosts(tmp_path, remote_node) -> Path:
    """A known_hosts holding the node's current host key (as after checking its fingerprint)."""
    path = tmp_path / "known_hosts"
    path.write_text(remote_node.known_hosts_line())
    return path


@pytest.fixture()
def node(remote_node):
    """The session's node, put back (link up, backend running) whatever the test did to it."""
    yield remote_node
    remote_node.reset()


def ssh(node: RemoteNode, known_hosts: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(node.ssh_argv(known_hosts, *args), capture_output=True, text=True, timeout=timeout)


class Tunnel:
    """``ssh -N -L`` to the node backend's loopback port, as the nodes code opens it."""

    def __init__(self, node: RemoteNode, known_hosts: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = node.ssh_argv(known_hosts, "-N", "-L", f"127.0.0.1:{self.port}:127.0.0.1:{node.remote_port}")
        argv[1:1] = ["-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def get(self, path: str, token: str | None = None, timeout: float = 3) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers=headers, timeout=timeout)

    def wait_open(self) -> None:
        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"ssh -L exited with {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            return self.get("/api/health").status_code == 200
        wait_until(answers, 20, what="the node's backend to answer through the SSH tunnel")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc.stderr.close()


def test_ssh_verifies_the_host_key_and_authenticates_with_the_client_key(remote_node, known_hosts, tmp_path):
    assert remote_node.scan_fingerprint() == remote_node.host_key_fingerprint
    assert remote_node.host_key_fingerprint.startswith("SHA256:")
    assert (remote_node.ssh_port, remote_node.user, remote_node.remote_port) == (22, "root", 8765)

    ok = ssh(remote_node, known_hosts, "cat", f"{remote_node.remote_home}/token")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == remote_node.token and len(remote_node.token) >= 32

    # The node's key is in no known_hosts of this machine: strict checking refuses it until it is added.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    unknown = ssh(remote_node, empty, "true")
    assert unknown.returncode == 255 and "Host key verification failed" in unknown.stderr

    # Only the client key is authorised: another key, or a password, gets nowhere.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    argv = remote_node.ssh_argv(known_hosts, "true")
    argv[argv.index(str(remote_node.client_key))] = str(other)
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr


def test_a_session_on_the_node_runs_in_its_own_network(remote_node, known_hosts):
    """What runs over SSH is on the node: its addresses are the node's, not this machine's."""
    def addresses(out: str) -> dict[str, str]:
        return {line.split()[1]: line.split()[3] for line in out.splitlines()}

    here = addresses(subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout)
    there = ssh(remote_node, known_hosts, "ip", "-4", "-o", "addr")
    assert there.returncode == 0, there.stderr
    there = addresses(there.stdout)
    assert there[remote_node.node_veth] == f"{remote_node.ip}/30"
    assert there["docker0"].rsplit(".", 1)[0] == remote_node.bridge_subnet.rsplit(".", 1)[0]
    assert here[remote_node.host_veth] == f"{remote_node.host_ip}/30"
    assert set(there.values()) & set(here.values()) == {"127.0.0.1/8"}   # the node's loopback is its own
    assert "eth0" not in there and there["docker0"] != here.get("docker0")


def test_the_node_has_its_own_engine_and_containerd(remote_node, engine):
    host_id = subprocess.run(["docker", "info", "--format", "{{.ID}}"], capture_output=True, text=True,
                             check=True).stdout.strip()
    node_info = remote_node.docker(["info", "--format", "{{.ID}}|{{.DockerRootDir}}"]).stdout.strip()
    node_id, node_root = node_info.split("|")
    assert node_id and node_id != host_id
    assert node_root.startswith(str(remote_node.base)) and node_root != engine.client.info()["DockerRootDir"]

    # Images were copied in, not pulled: the same content, so the same image ID.
    for tag in remote_node.images:
        assert remote_node.docker(["image", "inspect", "--format", "{{.Id}}", tag]).stdout.strip() == \
            engine.client.images.get(tag).id

    # Its dockerd talks to the node's containerd, a different process from the host's.
    dockerd_pid = int(Path(f"/run/{remote_node.name}/dockerd.pid").read_text())
    cmdline = Path(f"/proc/{dockerd_pid}/cmdline").read_bytes().split(b"\0")
    assert str(remote_node.containerd_socket).encode() in cmdline
    containerd_pids = {pid for pid in _netns_pids(remote_node.name)
                       if Path(f"/proc/{pid}/comm").read_text().strip() == "containerd"}
    assert len(containerd_pids) == 1
    assert dockerd_pid in _netns_pids(remote_node.name)

    # A container started on the node is in the node's containerd only, and unknown to the host's engine.
    name = f"mdn-probe-{remote_node.id}"
    remote_node.docker(["run", "-d", "--name", name, "--entrypoint", "sleep", remote_node.images[0], "300"])
    try:
        cid = remote_node.docker(["inspect", "--format", "{{.Id}}", name]).stdout.strip()
        in_node = subprocess.run(["ctr", "--address", str(remote_node.containerd_socket), "-n", "moby", "containers",
                                  "list", "-q"], capture_output=True, text=True, check=True).stdout.split()
        assert cid in in_node
        if Path(HOST_CONTAINERD).exists():
            in_host = subprocess.run(["ctr", "--address", HOST_CONTAINERD, "-n", "moby", "containers", "list", "-q"],
                                     capture_output=True, text=True, check=True).stdout.split()
            assert cid not in in_host
        assert name not in [c.name for c in engine.client.containers.list(all=True)]
        # On the node's own bridge, in the subnet chosen for it.
        ip = remote_node.docker(["inspect", "--format", "{{.NetworkSettings.IPAddress}}", name]).stdout.strip()
        assert ip.rsplit(".", 1)[0] == remote_node.bridge_subnet.rsplit(".", 1)[0]
    finally:
        remote_node.docker(["rm", "-f", name], check=False)


def test_the_backend_answers_through_an_ssh_tunnel_and_a_cut_link_breaks_it(node, known_hosts):
    # Loopback only: nothing answers on the node's link address.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{node.ip}:{node.remote_port}/api/health", timeout=3)

    token = ssh(node, known_hosts, "cat", f"{node.remote_home}/token").stdout.strip()
    tunnel = Tunnel(node, known_hosts)
    try:
        tunnel.wait_open()
        assert tunnel.get("/api/engine").status_code == 401
        engine = tunnel.get("/api/engine", token)
        assert engine.status_code == 200, engine.text
        assert engine.json()["reachable"] and str(node.docker_socket) in engine.json()["endpoint"]

        node.cut_link()
        with pytest.raises(httpx.HTTPError):
            tunnel.get("/api/health", timeout=2)
        # ssh notices (ServerAliveInterval) and exits, as the nodes code's tunnel does.
        wait_until(lambda: tunnel.proc.poll() is not None, 15, what="ssh -L to give up on the cut link")
    finally:
        tunnel.close()

    node.restore_link()
    again = Tunnel(node, known_hosts)
    try:
        again.wait_open()
        assert again.get("/api/engine", token).status_code == 200
    finally:
        again.close()


def test_stop_and_start_backend(node, known_hosts):
    token = node.token
    node.stop_backend()
    assert not node.backend_answers()
    assert ssh(node, known_hosts, "cat", f"{node.remote_home}/token").stdout.strip() == token   # the install stays
    node.start_backend()
    assert node.backend_answers() and node.token == token


def test_rotate_host_key_changes_the_fingerprint_and_strict_checking_refuses_the_old(node, known_hosts, tmp_path):
    old = node.host_key_fingerprint
    assert ssh(node, known_hosts, "true").returncode == 0
    new = node.rotate_host_key()
    assert new != old and node.scan_fingerprint() == new == node.host_key_fingerprint
    changed = ssh(node, known_hosts, "true")
    assert changed.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr
    fresh = tmp_path / "fresh_known_hosts"
    fresh.write_text(node.known_hosts_line())
    assert ssh(node, fresh, "true").returncode == 0


def test_ssh_config_alias(node, tmp_path):
    config = tmp_path / "ssh_config"
    alias = node.ssh_config(config, alias="gpu-box")
    known = tmp_path / "kh"
    known.write_text(node.known_hosts_line())
    run = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", f"UserKnownHostsFile={known}", alias, "hostname", "-I"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert node.ip in run.stdout.split()


def test_bare_ssh_host_has_no_modeldeck(bare_ssh_host, tmp_path):
    known = tmp_path / "kh"
    known.write_text(bare_ssh_host.known_hosts_line())
    assert bare_ssh_host.docker_host is None
    assert ssh(bare_ssh_host, known, "true").returncode == 0
    no_token = ssh(bare_ssh_host, known, "cat", f"{bare_ssh_host.remote_home}/token")
    assert no_token.returncode != 0 and "No such file" in no_token.stderr
    assert not bare_ssh_host.backend_answers()


def test_nodes_made_at_once_do_not_collide(tmp_path):
    """Several test runs on one machine: each node its own name, link and subnets, all reachable."""
    nodes = [RemoteNode(with_modeldeck=False) for _ in range(3)]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(RemoteNode.start, nodes))
        nets = [ipaddress.ip_network(f"{n.ip}/30", strict=False) for n in nodes]
        nets += [ipaddress.ip_network(n.bridge_subnet) for n in nodes]
        assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
        assert len({n.name for n in nodes}) == len(nodes)
        for n in nodes:
            known = tmp_path / f"kh-{n.name}"
            known.write_text(n.known_hosts_line())
            assert ssh(n, known, "true").returncode == 0
    finally:
        for n in nodes:
            n.teardown()
    assert [n.leftovers() for n in nodes] == [[], [], []]


def test_teardown_leaves_nothing(demo_image):
    node = RemoteNode(images=(demo_image,))
    try:
        node.start()
        node.docker(["run", "-d", "--entrypoint", "sleep", demo_image, "300"])
        assert node.backend_answers()
        assert node.name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        node.teardown()
    assert node.leftovers() == []
    assert node.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert node.host_veth not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    dockerds = subprocess.run(["pgrep", "-a", "dockerd"], capture_output=True, text=True).stdout
    assert str(node.base) not in dockerds and node.name not in dockerds


REPO = Path(__file__).resolve().parents[2]
# A test run that makes a node and then ends: normally (at exit), stopped (SIGTERM, as a CI timeout does), or
# killed (SIGKILL: nothing of it runs). A second argument: a full node with that image and a container running.
ORPHAN = """
import sys, time
from tests.support.remote_node import RemoteNode
node = RemoteNode(images=tuple(sys.argv[2:]), with_modeldeck=len(sys.argv) > 2).start()
if len(sys.argv) > 2:
    node.docker(["run", "-d", "--entrypoint", "sleep", sys.argv[2], "300"])
print(node.name, node.base, flush=True)
if sys.argv[1] == "hang":
    time.sleep(600)
"""


def test_a_node_left_up_is_removed_at_interpreter_exit():
    run = subprocess.run([sys.executable, "-c", ORPHAN, "exit"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    name, base = run.stdout.split()
    assert RemoteNode.named(name, Path(base)).leftovers() == []


def test_a_node_of_a_run_stopped_with_sigterm_is_removed_before_it_dies():
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, "hang"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        name, base = line.split()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM   # it still dies of the signal, after the teardown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert RemoteNode.named(name, Path(base)).leftovers() == []


def test_a_node_of_a_killed_run_is_reaped_by_the_next(demo_image):
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN, "hang", demo_image], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()   # printed once the node and its container are up
        assert line, proc.stderr.read()
        name, base = line.split()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    orphan = RemoteNode.named(name, Path(base))
    assert f"netns {name}" in orphan.leftovers()   # SIGKILL: no teardown ran
    reaped = reap_stale()
    # (A test run starting a node at this very moment may have reaped it first.)
    assert name in reaped or not orphan.leftovers()
    wait_until(lambda: orphan.leftovers() == [], 60, what=f"{name} to be reaped")


def test_backend_env_and_files_on_the_node(node, gguf_models):
    """A model on the node's own disk, its backend told where (backend_env): its library lists it."""
    models = node.base / "models"
    shutil.copytree(gguf_models / "tiny", models / "tiny")
    try:
        node.backend_env["MODELDECK_MODEL_DIRS"] = str(models)
        node.stop_backend()
        node.start_backend()
        status, body = node.api_get("/api/library")
        assert status == 200 and "tiny-llama.gguf" in body and str(models) in body
        assert node.api_get("/api/no-such-route")[0] == 404
    finally:
        node.backend_env.clear()
        node.stop_backend()
        shutil.rmtree(models)
    node.start_backend()
    assert "tiny-llama.gguf" not in node.api_get("/api/library")[1]


def test_llamacpp_image_is_copied_in_on_request(remote_node, remote_llamacpp_image, engine):
    node_id = remote_node.docker(["image", "inspect", "--format", "{{.Id}}", remote_llamacpp_image]).stdout.strip()
    assert node_id == engine.client.images.get(remote_llamacpp_image).id
    remote_node.load_image(remote_llamacpp_image)   # already there: nothing copied again


def test_a_node_whose_id_is_taken_fails_without_touching_the_other(bare_ssh_host, tmp_path):
    clash = RemoteNode(with_modeldeck=False)
    clash._init_names(bare_ssh_host.id, clash.base)   # as if the random id had come up twice
    with pytest.raises(FileExistsError):
        clash.start()
    assert not clash.base.exists()
    known = tmp_path / "kh"
    known.write_text(bare_ssh_host.known_hosts_line())
    assert ssh(bare_ssh_host, known, "true").returncode == 0
    assert f"netns {bare_ssh_host.name}" in bare_ssh_host.leftovers()   # the other node is untouched

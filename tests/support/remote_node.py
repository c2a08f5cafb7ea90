"""A second machine for the tests, simulated honestly: a network namespace with its own link, sshd,
containerd, dockerd and ``modeldeck-backend``.

What is real: the network (a namespace of its own, reached only through a veth pair whose host end
can be set down — a real cut, not a refused port), Debian's OpenSSH server with its own generated
ed25519 host key (in no known_hosts: a client must be told the fingerprint, as on a real first
connection) and key-only authentication for root, a Docker engine of its own (its own ``containerd``
with its own root, state and socket; its own ``dockerd`` with its own data root, exec root, pid file,
socket, and default bridge on a subnet no other interface here uses), images copied into it with
``docker save | docker load`` (no registry), and the repository's own ``modeldeck-backend`` serving
on the node's loopback (127.0.0.1:8765, as a headless install does) with that engine and its own
home (its token file at ``<remote_home>/token``).

What is not: the "machine" shares this kernel, this disk and this process table (its processes
show in ``pgrep`` here; its files lie under a temporary folder here, its sockets under
``/run/mdn-<id>/``). Its daemons share one mount namespace of their own (a holder process's, with
the node's own /sys as ``ip netns exec`` makes it), so what dockerd mounts never shows on the host
and goes with the node.

Several test runs may run at once on one machine: names carry a random id, the veth /30 and the
bridge subnet are chosen free (under a lock) each run, and everything is removed by ``teardown()``,
which also runs at interpreter exit; a node left by a killed run is reaped by the next one
(:func:`reap_stale`).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.waiting import wait_until

NAME_PREFIX = "mdn-"
REMOTE_PORT = 8765
LOCK_PATH = Path("/run/lock/modeldeck-remote-node.lock")
# The node's veth /30 and its docker bridge /24 are drawn from here, avoiding every route and address in use.
POOL = ipaddress.ip_network("10.128.0.0/9")

REQUIRED_TOOLS = ("ip", "nsenter", "sshd", "ssh", "ssh-keygen", "ssh-keyscan", "containerd", "dockerd",
                  "docker", "iptables")


_LIVE: list["RemoteNode"] = []   # started, not yet torn down: what a SIGTERM must clean up


def _on_sigterm(signum, frame) -> None:
    """A run stopped with SIGTERM (a CI timeout) runs no atexit code: tear the nodes down, then die of it."""
    for node in list(_LIVE):
        node.teardown()
    signal.signal(signal.SIGTERM, _PREVIOUS_SIGTERM.pop() if _PREVIOUS_SIGTERM else signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


_PREVIOUS_SIGTERM: list = []


def _watch_sigterm() -> None:
    if _PREVIOUS_SIGTERM or signal.getsignal(signal.SIGTERM) is _on_sigterm:
        return
    with contextlib.suppress(ValueError):   # not the main thread: atexit and reap_stale still apply
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        _PREVIOUS_SIGTERM.append(previous if previous is not None else signal.SIG_DFL)


class NodeUnavailable(RuntimeError):
    """The second machine cannot be made here (missing tool, not root, no namespaces); says what to do."""


def missing_tools() -> list[str]:
    """The programs the node needs that are not on PATH (sshd lives in /usr/sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [t for t in REQUIRED_TOOLS if shutil.which(t, path=path) is None]


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if not found:
        raise NodeUnavailable(f"{name} is not installed: run scripts/test (ensure_node_tools) or "
                              "'apt-get install openssh-server openssh-client iproute2 docker.io'")
    return found


def _run(argv: list[str], *, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _fingerprint(pub_key: Path) -> str:
    """``SHA256:…`` of a public key file, as ``ssh-keygen -lf`` prints it."""
    return _run(["ssh-keygen", "-lf", str(pub_key)]).stdout.split()[1]


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 route and address here (host namespace), so a new subnet overlaps none of them."""
    used = []
    for route in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default" and not dst.startswith(("fe80", "ff")):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    for link in json.loads(_run(["ip", "-j", "-4", "addr"]).stdout or "[]"):
        for a in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    return used


def _pick_subnet(prefix: int, taken: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    rng = random.SystemRandom()
    for _ in range(1000):
        start = int(POOL.network_address) + rng.randrange(0, POOL.num_addresses >> (32 - prefix)) * (1 << (32 - prefix))
        net = ipaddress.ip_network(f"{ipaddress.ip_address(start)}/{prefix}")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise NodeUnavailable(f"no free /{prefix} in {POOL} for a test node")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(name: str) -> list[int]:
    proc = _run(["ip", "netns", "pids", name], check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL once ``timeout`` passes; returns when the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and not _is_zombie(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _stop_popen(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _mounts_under(path: Path) -> list[str]:
    """Mount points here (this mount namespace) at or below ``path``, deepest first."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(path) or point.startswith(f"{path}/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def reap_stale() -> list[str]:
    """Remove nodes whose test run died without tearing them down (killed with SIGKILL); their names.

    A node's ``/run/mdn-<id>/owner`` holds the pid of the process that made it; a node whose owner is
    gone is torn down as :meth:`RemoteNode.teardown` would. A namespace ``mdn-*`` without that folder
    (made after it, removed before it) is a leftover too.
    """
    reaped = []
    for state in Path("/run").glob(f"{NAME_PREFIX}*"):
        try:
            owner = int((state / "owner").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if _pid_alive(owner):
            continue
        try:
            base = Path(json.loads((state / "node.json").read_text())["base"])
        except (OSError, ValueError, KeyError):
            base = None
        RemoteNode.named(state.name, base)._stale_teardown()
        reaped.append(state.name)
    for name in _run(["ip", "netns", "list"], check=False).stdout.split():
        if name.startswith(NAME_PREFIX) and not (Path("/run") / name).exists():
            RemoteNode.named(name, None)._stale_teardown()
            reaped.append(name)
    return reaped


class RemoteNode:
    """A second machine reached over SSH; see the module's docstring for what is real.

    Attributes (valid after :meth:`start`):
        name: the namespace's name, ``mdn-<id>``; also the Host alias :meth:`ssh_config` writes.
        ip: the node's address on its link (host side is ``host_ip``).
        ssh_port: 22 (or the port given).
        user: "root".
        client_key: the private key (ed25519, no passphrase) authorised on the node.
        host_key_fingerprint: the node's sshd host key, ``SHA256:…`` (changes on :meth:`rotate_host_key`).
        remote_home: the node's ModelDeck home (its token at ``<remote_home>/token``).
        remote_port: 8765, the node backend's port on the node's loopback.
        docker_host: ``unix:///run/mdn-<id>/docker.sock``, the node's own engine (None on a bare host).
        docker_socket: that socket's path.
        containerd_socket: the node's containerd socket.
        with_modeldeck: False for a bare SSH host (sshd only: no engine, no backend, no token).

    Args:
        with_modeldeck: start containerd, dockerd and modeldeck-backend too.
        images: image tags copied from the host's engine at start (more later with :meth:`load_image`).
        demo_base_image: MODELDECK_DEMO_BASE_IMAGE for the node's backend (so its demo tag is the host's).
        ssh_port: sshd's port on the node.
    """

    def __init__(self, *, with_modeldeck: bool = True, images: tuple[str, ...] = (),
                 demo_base_image: str | None = None, ssh_port: int = 22):
        self._init_names(secrets.token_hex(3), Path(tempfile.mkdtemp(prefix=f"{NAME_PREFIX}")))
        self.with_modeldeck = with_modeldeck
        self.images = tuple(images)
        self.demo_base_image = demo_base_image
        self.ssh_port = ssh_port
        self.user = "root"
        self.remote_port = REMOTE_PORT
        self.ip = self.host_ip = ""
        self.bridge_subnet = ""
        self.host_key_fingerprint = ""
        self._procs: dict[str, subprocess.Popen] = {}
        self._holder: subprocess.Popen | None = None
        self._torn_down = self._owned = False
        self.timings: dict[str, float] = {}   # seconds each part of start() took (network, sshd, engine, ...)
        # More MODELDECK_* settings for the node's backend (e.g. MODELDECK_MODEL_DIRS): set, then
        # stop_backend() and start_backend() (a test that does puts them back, as with reset()).
        self.backend_env: dict[str, str] = {}

    @classmethod
    def named(cls, name: str, base: Path | None) -> "RemoteNode":
        """The node called ``name`` (``mdn-<id>``) made by another process, for :meth:`leftovers` and reaping."""
        node = cls.__new__(cls)
        node._init_names(name[len(NAME_PREFIX):], base or Path("/nonexistent-modeldeck-node"))
        node.with_modeldeck, node._procs, node._holder, node._torn_down, node._owned = True, {}, None, False, True
        node.timings, node.backend_env = {}, {}
        return node

    def _init_names(self, short: str, base: Path) -> None:
        self.id = short
        self.name = f"{NAME_PREFIX}{short}"
        self.host_veth = f"mdh-{short}"   # interface names: 15 characters at most
        self.node_veth = f"mdn-{short}"
        self.base = base                        # files: keys, data root, home, logs
        self.state = Path("/run") / self.name   # sockets, pid files, exec roots
        self.ssh_dir = self.state / "sshd"      # under /run (root, 0755) so sshd's StrictModes holds
        self.host_key = self.ssh_dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.ssh_dir / "authorized_keys"
        self.client_key = base / "client_key"
        self.remote_home = base / "node-home"
        self.docker_socket = self.state / "docker.sock"
        self.containerd_socket = self.state / "containerd" / "containerd.sock"
        self.logs = base / "logs"

    @property
    def docker_host(self) -> str | None:
        return f"unix://{self.docker_socket}" if self.with_modeldeck else None

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> "RemoteNode":
        """Make the namespace and link, start sshd (and the engine and backend); returns self.

        Raises:
            NodeUnavailable: a tool is missing, or namespaces cannot be made here (not root).
            RuntimeError / AssertionError: a daemon did not come up; the message has its log's tail.
        """
        problem = None
        if os.geteuid() != 0:
            problem = "the simulated node needs root (network namespaces, sshd, dockerd): run the tests as root, as CI does"
        elif missing := missing_tools():
            problem = (f"missing {', '.join(missing)}: run scripts/test (ensure_node_tools) or "
                       "'apt-get install openssh-server openssh-client iproute2 docker.io'")
        if problem:
            shutil.rmtree(self.base, ignore_errors=True)
            raise NodeUnavailable(problem)
        atexit.register(self.teardown)
        _LIVE.append(self)
        _watch_sigterm()
        try:
            self.state.mkdir(mode=0o755)   # the claim on the id: another run's node of the same id fails here
            self._owned = True
            (self.state / "owner").write_text(f"{os.getpid()}\n")
            (self.state / "node.json").write_text(json.dumps({"base": str(self.base)}))
            self.logs.mkdir(parents=True)
            steps = [("network", self._make_network), ("sshd", self._start_sshd)]
            if self.with_modeldeck:
                steps += [("engine", self._start_engine), ("images", lambda: [self.load_image(t) for t in self.images]),
                          ("backend", self.start_backend)]
            for step, do in steps:
                t0 = time.monotonic()
                do()
                self.timings[step] = round(time.monotonic() - t0, 2)
        except BaseException:
            self.teardown()
            raise
        return self

    def _make_network(self) -> None:
        LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
        with open(LOCK_PATH, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # runs at once: pick and claim a subnet one at a time
            used = _used_networks()
            for state in Path("/run").glob(f"{NAME_PREFIX}*/node.json"):   # bridges live in other namespaces
                with contextlib.suppress(OSError, ValueError, KeyError):
                    used += [ipaddress.ip_network(n) for n in json.loads(state.read_text()).get("subnets", [])]
            link = _pick_subnet(30, used)
            bridge = _pick_subnet(24, [*used, link])
            self.host_ip, self.ip = str(link.network_address + 1), str(link.network_address + 2)
            self.bridge_subnet = str(bridge)
            (self.state / "node.json").write_text(json.dumps({"base": str(self.base),
                                                              "subnets": [str(link), str(bridge)]}))
            _run(["ip", "netns", "add", self.name])
            _run(["ip", "link", "add", self.host_veth, "type", "veth", "peer", "name", self.node_veth])
            _run(["ip", "link", "set", self.node_veth, "netns", self.name])
            _run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_veth])
            _run(["ip", "link", "set", self.host_veth, "up"])
        # The holder owns the node's mount namespace, where every daemon joins it: dockerd's mounts stay
        # inside and go with the node. Its /sys is the node's own (sysfs shows the namespace's links, as
        # ip netns exec makes it), with this machine's cgroup tree moved under it (dockerd needs cgroups).
        keep = self.state / "cgroup"
        holder = (f"set -e; mkdir -p {keep}; mount --rbind /sys/fs/cgroup {keep}; "
                  f"mount -t sysfs {self.name} /sys; mount --move {keep} /sys/fs/cgroup; exec sleep infinity")
        with open(self.logs / "holder.log", "ab") as log:
            self._holder = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.name}", "unshare", "--mount", "--propagation", "slave",
                 "sh", "-c", holder], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                start_new_session=True)
        wait_until(self._holder_ready, 10, what=f"{self.name}'s namespace holder")
        self.run_in(["ip", "link", "set", "lo", "up"])
        self.run_in(["ip", "addr", "add", f"{self.ip}/30", "dev", self.node_veth])
        self.run_in(["ip", "link", "set", self.node_veth, "up"])
        self.run_in(["ip", "route", "add", "default", "via", self.host_ip])
        wait_until(self._link_up, 10, what=f"{self.name}'s link to come up")

    def _holder_ready(self) -> bool:
        """The holder has made the node's mounts and sleeps (until then it is nsenter, unshare or sh)."""
        if self._holder.poll() is not None:
            raise RuntimeError(f"{self.name}'s namespace holder exited with {self._holder.returncode}: "
                               f"{self.log('holder')[-2000:]}")
        return Path(f"/proc/{self._holder.pid}/comm").read_text().strip() == "sleep"

    def _link_up(self) -> bool:
        state = Path(f"/sys/class/net/{self.host_veth}/operstate")
        return state.exists() and state.read_text().strip() == "up"

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the node (its network and mount namespaces)."""
        return ["nsenter", f"--target={self._holder.pid}", "--net", "--mount", *argv]

    def run_in(self, argv: list[str], *, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
        """Run a command on the node (not over SSH: directly in its namespaces); its completed process."""
        return _run(self.enter(argv), check=check, timeout=timeout, **kw)

    def _daemon(self, key: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{key}.log", "ab")
        try:
            proc = subprocess.Popen(self.enter(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        finally:
            log.close()
        self._procs[key] = proc
        return proc

    def log(self, key: str) -> str:
        """A daemon's output so far: ``sshd``, ``containerd``, ``dockerd`` or ``backend``."""
        path = self.logs / f"{key}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _alive(self, key: str) -> None:
        proc = self._procs[key]
        if proc.poll() is not None:
            raise AssertionError(f"{self.name}'s {key} exited with {proc.returncode}:\n{self.log(key)[-3000:]}")

    # -- sshd --------------------------------------------------------------------------

    def _start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation folder
        self.ssh_dir.mkdir(mode=0o700)
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-host", "-f", str(self.host_key)])
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-client", "-f", str(self.client_key)])
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.host_key_fingerprint = _fingerprint(Path(f"{self.host_key}.pub"))
        config = self.ssh_dir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.ssh_port}",
            f"ListenAddress {self.ip}",
            f"HostKey {self.host_key}",
            f"PidFile {self.state / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes yes",
            "AllowTcpForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]))
        sshd = _tool("sshd")
        _run([sshd, "-t", "-f", str(config)])
        # -D: stays in the foreground (our child); SIGHUP makes it re-read its config and keys.
        self._daemon("sshd", [sshd, "-D", "-e", "-f", str(config)])
        wait_until(lambda: self._alive("sshd") or self.scan_fingerprint() == self.host_key_fingerprint, 15,
                   what=f"{self.name}'s sshd to offer its host key")

    def scan_fingerprint(self) -> str | None:
        """The host key fingerprint sshd offers now (ssh-keyscan from here), None if it does not answer."""
        scan = _run(["ssh-keyscan", "-T", "2", "-t", "ed25519", "-p", str(self.ssh_port), self.ip], check=False, timeout=10)
        lines = [ln for ln in scan.stdout.splitlines() if ln and not ln.startswith("#")]
        if not lines:
            return None
        keyfile = self.base / "scanned.pub"
        keyfile.write_text(lines[0].split(" ", 1)[1] + "\n")
        return _fingerprint(keyfile)

    def known_hosts_line(self) -> str:
        """The node's host key as a known_hosts line (what a person adds after checking the fingerprint)."""
        key = " ".join(Path(f"{self.host_key}.pub").read_text().split()[:2])
        host = self.ip if self.ssh_port == 22 else f"[{self.ip}]:{self.ssh_port}"
        return f"{host} {key}\n"

    def ssh_config(self, path: Path, alias: str | None = None) -> str:
        """Append a ``~/.ssh/config``-style Host block for the node to ``path``; returns the alias (default: name)."""
        alias = alias or self.name
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(f"\nHost {alias}\n    HostName {self.ip}\n    Port {self.ssh_port}\n    User {self.user}\n"
                    f"    IdentityFile {self.client_key}\n    IdentitiesOnly yes\n")
        path.chmod(0o600)
        return alias

    def ssh_argv(self, known_hosts: Path, *args: str) -> list[str]:
        """``ssh`` to the node with its client key, verifying its host key against ``known_hosts``."""
        return ["ssh", "-F", "none", "-i", str(self.client_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
                "-p", str(self.ssh_port), f"{self.user}@{self.ip}", *args]

    def rotate_host_key(self) -> str:
        """Give sshd a new host key (as a reinstalled machine has) and reload it; the new fingerprint."""
        old = self.host_key_fingerprint
        for path in (self.host_key, Path(f"{self.host_key}.pub")):
            path.unlink()
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.name}-host", "-f", str(self.host_key)])
        self.host_key_fingerprint = new = _fingerprint(Path(f"{self.host_key}.pub"))
        assert new != old
        self._procs["sshd"].send_signal(signal.SIGHUP)
        wait_until(lambda: self._alive("sshd") or self.scan_fingerprint() == new, 15,
                   what=f"{self.name}'s sshd to offer its new host key")
        return new

    # -- the link ----------------------------------------------------------------------

    def cut_link(self) -> None:
        """Set the host's end of the link down: packets to and from the node are lost (a pulled cable)."""
        _run(["ip", "link", "set", self.host_veth, "down"])
        wait_until(lambda: not self._link_up(), 10, what=f"{self.name}'s link to go down")

    def restore_link(self) -> None:
        """Set the link up again and wait until the node's sshd answers across it."""
        _run(["ip", "link", "set", self.host_veth, "up"])
        wait_until(self._link_up, 10, what=f"{self.name}'s link to come up")
        wait_until(self._ssh_port_answers, 15, what=f"{self.name}'s sshd to answer across the restored link")

    def _ssh_port_answers(self) -> bool:
        with socket.create_connection((self.ip, self.ssh_port), timeout=1) as s:
            return s.recv(4).startswith(b"SSH-")

    # -- the engine ----------------------------------------------------------------------

    def _start_engine(self) -> None:
        croot, cstate = self.base / "containerd-root", self.state / "containerd"
        croot.mkdir()
        cstate.mkdir()
        config = self.state / "containerd.toml"
        config.write_text("\n".join([
            "version = 2",
            f'root = "{croot}"',
            f'state = "{cstate / "state"}"',
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            f'  address = "{self.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{self.containerd_socket}.ttrpc"',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{self.base / "containerd-opt"}"',
            "",
        ]))
        self._daemon("containerd", [_tool("containerd"), "--config", str(config), "--log-level", "info"])
        wait_until(lambda: self._alive("containerd") or self.containerd_socket.is_socket(), 30,
                   what=f"{self.name}'s containerd socket")
        daemon_json = self.state / "daemon.json"
        # Its own config, not /etc/docker/daemon.json; the engine's ID comes from its key file,
        # /etc/docker/key.json unless told: the node's is its own, so its engine ID differs from the host's.
        daemon_json.write_text(json.dumps({"deprecated-key-path": str(self.state / "docker-key.json")}) + "\n")
        data_root = self.base / "docker"
        data_root.mkdir()
        self._daemon("dockerd", [
            _tool("dockerd"), "--config-file", str(daemon_json),
            "--containerd", str(self.containerd_socket), "--containerd-namespace", "moby",
            "--data-root", str(data_root), "--exec-root", str(self.state / "docker-exec"),
            "--pidfile", str(self.state / "dockerd.pid"), "-H", f"unix://{self.docker_socket}",
            "--bip", str(ipaddress.ip_network(self.bridge_subnet).network_address + 1) + "/24",
            "--cgroup-parent", self.name,
        ])
        wait_until(lambda: self._alive("dockerd") or self.docker(["info", "--format", "{{.ID}}"], check=False).returncode == 0,
                   60, what=f"{self.name}'s dockerd to answer")

    def docker(self, args: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """The docker CLI against the node's engine (from the host, through its socket)."""
        return _run(["docker", "-H", f"unix://{self.docker_socket}", *args], check=check, timeout=timeout)

    def load_image(self, tag: str, timeout: float = 600) -> None:
        """Copy an image from the host's engine into the node's: ``docker save | docker load``, no registry."""
        if self.docker(["image", "inspect", tag], check=False).returncode == 0:
            return
        save = subprocess.Popen(["docker", "save", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", f"unix://{self.docker_socket}", "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=timeout)
        save.stdout.close()
        save_err = save.stderr.read().decode(errors="replace")
        save.stderr.close()
        save.wait(timeout=60)
        if save.returncode or load.returncode:
            raise RuntimeError(f"copying {tag} into {self.name} failed: docker save: {save_err.strip()} "
                               f"docker load: {load.stderr.strip()}")

    # -- the backend -------------------------------------------------------------------

    def start_backend(self, timeout: float = 60) -> None:
        """Start the node's modeldeck-backend (loopback only, port 8765) and wait for ``/api/health``."""
        if "backend" in self._procs and self._procs["backend"].poll() is None:
            return
        script = Path(sys.executable).parent / "modeldeck-backend"
        argv = [str(script)] if script.exists() else [sys.executable, "-m", "backend.server"]
        self.remote_home.mkdir(parents=True, exist_ok=True)
        user_home = self.base / "root-home"   # the node's own ~ (its caches), not this machine's
        user_home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELDECK_", "DOCKER_"))}
        env.update(MODELDECK_HOME=str(self.remote_home), DOCKER_HOST=self.docker_host,
                   MODELDECK_DOCKER_HOST=self.docker_host, HOME=str(user_home), PYTHONUNBUFFERED="1",
                   XDG_CONFIG_HOME=str(user_home / ".config"), XDG_CACHE_HOME=str(user_home / ".cache"))
        if self.demo_base_image:
            env["MODELDECK_DEMO_BASE_IMAGE"] = self.demo_base_image
        env.update(self.backend_env)
        self._daemon("backend", [*argv, "--host", "127.0.0.1", "--port", str(self.remote_port)], env=env)
        wait_until(lambda: self._alive("backend") or self.backend_answers(), timeout,
                   what=f"{self.name}'s modeldeck-backend to answer /api/health")

    def backend_answers(self) -> bool:
        """``/api/health`` answers 200 on the node's loopback (asked from inside the node)."""
        probe = ("import sys, urllib.request\n"
                 f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{self.remote_port}/api/health', timeout=2).status != 200)")
        return self.run_in([sys.executable, "-c", probe], check=False, timeout=10).returncode == 0

    def api_get(self, path: str) -> tuple[int, str]:
        """GET ``path`` from the node's backend, asked on the node's loopback with its token: (status, body)."""
        probe = ("import sys, urllib.request, urllib.error\n"
                 f"req = urllib.request.Request('http://127.0.0.1:{self.remote_port}' + sys.argv[1], "
                 "headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
                 "try:\n    r = urllib.request.urlopen(req, timeout=10)\n"
                 "except urllib.error.HTTPError as e:\n    r = e\n"
                 "print(r.status)\nsys.stdout.write(r.read().decode())")
        out = self.run_in([sys.executable, "-c", probe, path, self.token], timeout=30).stdout
        status, _, body = out.partition("\n")
        return int(status), body

    def stop_backend(self) -> None:
        """Stop the node's backend (SIGTERM; SIGKILL after 15 s); its containers keep running."""
        _stop_popen(self._procs.pop("backend", None))

    def reset(self) -> None:
        """Put the node back as a test found it: link up and backend running (the host key stays as it is)."""
        if not self._link_up():
            self.restore_link()
        if self.with_modeldeck:
            self.start_backend()

    @property
    def token(self) -> str:
        """The node backend's token (read directly; a client reads it over SSH)."""
        return (self.remote_home / "token").read_text().strip()

    # -- teardown -----------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop everything and remove the namespace, link, sockets and files; safe to call twice."""
        if self._torn_down:
            return
        self._torn_down = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.teardown)
        with contextlib.suppress(ValueError):
            _LIVE.remove(self)
        if not self._owned:   # nothing was made under these names by us: they may be another run's
            shutil.rmtree(self.base, ignore_errors=True)
            return
        self.stop_backend()
        if "dockerd" in self._procs and self._procs["dockerd"].poll() is None:
            ids = self.docker(["ps", "-aq"], check=False, timeout=30).stdout.split()
            if ids:
                self.docker(["rm", "-f", *ids], check=False, timeout=120)
        for key in ("dockerd", "containerd", "sshd"):
            _stop_popen(self._procs.pop(key, None), timeout=20)
        self._remove_namespace()
        self._remove_files()

    def _stale_teardown(self) -> None:
        """Teardown of a node from a dead run: only its names and paths are known."""
        self._kill_containers()   # first, or dockerd's SIGTERM waits 10 s on each for them to stop
        with contextlib.suppress(OSError, ValueError):   # then dockerd cleans up after them and exits
            _stop_pid(int((self.state / "dockerd.pid").read_text()), timeout=60)
        self._remove_namespace()
        self._remove_files()

    def _remove_namespace(self) -> None:
        # Whatever still runs in the namespace (containerd shims, sessions, the holder) goes with it.
        for pid in _netns_pids(self.name):
            _stop_pid(pid, timeout=10)
        _stop_popen(self._holder, timeout=5)
        _run(["ip", "link", "del", self.host_veth], check=False)
        _run(["ip", "netns", "del", self.name], check=False)
        self._remove_cgroups()

    def _cgroups(self) -> list[Path]:
        """dockerd's ``--cgroup-parent`` in every hierarchy, where the node's containers ran."""
        root = Path("/sys/fs/cgroup")   # v1: one folder per hierarchy; v2 (unified): at the top
        return [cg for cg in [root / self.name, *root.glob(f"*/{self.name}")] if cg.is_dir()]

    def _cgroup_members(self) -> set[int]:
        pids = set()
        for cg in self._cgroups():
            for procs in cg.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids |= {int(p) for p in procs.read_text().split()}
        return pids

    def _kill_containers(self) -> None:
        """SIGKILL every process in the node's cgroup (its containers') and wait until they are gone."""
        for pid in self._cgroup_members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):   # what is still there shows in leftovers()
            wait_until(lambda: not self._cgroup_members(), 20, what=f"{self.name}'s containers' processes to exit")

    def _remove_cgroups(self) -> None:
        # A container that outlived its engine (its run was killed) is still in the node's cgroup: kill it first.
        self._kill_containers()
        for cg in self._cgroups():
            for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()

    def _remove_files(self) -> None:
        for root in (self.state, self.base):
            for point in _mounts_under(root):
                _run(["umount", "-l", point], check=False)
            shutil.rmtree(root, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this node still exists here (empty after teardown): namespace, link, processes, files."""
        left = []
        if self.name in _run(["ip", "netns", "list"]).stdout.split():
            left.append(f"netns {self.name}")
        if Path(f"/sys/class/net/{self.host_veth}").exists():
            left.append(f"link {self.host_veth}")
        for key, proc in self._procs.items():
            if proc.poll() is None:
                left.append(f"process {key} {proc.pid}")
        for proc_dir in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                cmd = (proc_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if self.name in cmd or str(self.base) in cmd:
                    left.append(f"process {proc_dir.name}: {cmd[:120]}")
        left += [f"mount {m}" for root in (self.state, self.base) for m in _mounts_under(root)]
        left += [f"path {p}" for p in (self.state, self.base) if p.exists()]
        left += [f"cgroup {cg}" for cg in self._cgroups()]
        return left

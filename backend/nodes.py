"""Nodes: other machines' ModelDeck backends, reached over an SSH tunnel or TLS with client certificates.

``NodeStore`` keeps the non-secret configuration in ``<home>/nodes.json`` and each node's secrets
(the remote token, a key passphrase, a TLS client key) in owner-only files under
``<home>/nodes/<name>/``. ``NodeManager`` (``app.state.nodes``) keeps one live connection per
node: for SSH a tunnel process (backend/ssh_tunnel.py) whose local end is an ``httpx.AsyncClient``
with the remote token; a health loop every 2 s measures the round trip, reads the node's engine,
GPUs and deployments, marks a node that stops answering ``unreachable`` and reconnects it with
backoff. Federation (backend/federation.py) uses :meth:`NodeManager.client` and friends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets as _random
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, field_validator, model_validator

from backend import ssh_tunnel
from backend.errors import (HostKeyUnknown, ModelDeckError, NodeAuthFailed, NodeExists,
                            NodeNotFound, NodeNotModelDeck, NodeUnreachable)
from backend.ssh_tunnel import DEFAULT_REMOTE_HOME, HOST_RE, USER_RE, SshTarget, Tunnel

log = logging.getLogger("modeldeck.nodes")

LOCAL = "local"
#: Names a node cannot take: this machine, and a launch's automatic placement.
RESERVED_NAMES = frozenset({LOCAL, "auto"})
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,31})$")
HEALTH_INTERVAL_S = 2.0
#: Seconds one probe through the tunnel may take before the node counts as unreachable.
PROBE_TIMEOUT_S = 3.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)


# --------------------------------------------------------------------------- configuration


class SshSettings(BaseModel):
    """How to reach a node's sshd; None leaves the choice to ssh (the person's ~/.ssh/config, then defaults)."""

    host: str = Field(description="a host name, an IP address, or an alias of ~/.ssh/config")
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = Field(default=None, description="a private key file on this machine")
    passphrase: str | None = Field(default=None, description="the key's passphrase: stored owner-only, never returned")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not HOST_RE.match(value):
            raise ValueError("must be a host name, an IP address or a ~/.ssh/config alias (letters, digits, "
                             ". - _ :; not starting with '-')")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not USER_RE.match(value):
            raise ValueError("must be a user name (letters, digits, . _ - @; not starting with '-')")
        return value

    @field_validator("identity_file")
    @classmethod
    def _identity(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value or "\n" in value or "\0" in value or value.startswith("-"):
            raise ValueError("must be the path of a private key file")
        path = Path(value).expanduser()
        if not path.is_file():
            raise ValueError(f"{value} is not a file on this machine: give the path of the private key")
        return str(path)

    @field_validator("passphrase")
    @classmethod
    def _passphrase(cls, value: str | None) -> str | None:
        if value is not None and ("\n" in value or "\0" in value):
            raise ValueError("cannot contain a line break")
        return value or None


class TlsSettings(BaseModel):
    """A node's backend served over TLS with required client certificates (``modeldeck-backend --tls-…``)."""

    url: str = Field(description="https://host:port of the node's backend")
    ca_cert: str = Field(description="PEM: the CA that signed the node's server certificate")
    client_cert: str = Field(description="PEM: this machine's client certificate")
    client_key: str = Field(description="PEM: its private key (stored owner-only, never returned)")
    token: str | None = Field(default=None, description="the node's API token (its <home>/token); stored owner-only")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the same bad input
            raise ValueError(f"is not a URL: {exc}") from None
        if url.scheme != "https" or not url.host:
            raise ValueError("must be https://host:port: a node is never reached over plain HTTP")
        return str(url).rstrip("/")

    @field_validator("ca_cert", "client_cert", "client_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        if "-----BEGIN " not in value or "\0" in value or len(value) > 64 * 1024:
            raise ValueError("must be PEM text (-----BEGIN …)")
        return value


class NodeRequest(BaseModel):
    """``POST /api/nodes``: a node to add."""

    name: str = Field(description="a-z, 0-9 and -, at most 32, not 'local'")
    transport: Literal["ssh", "tls"] = "ssh"
    ssh: SshSettings | None = None
    remote_port: int = Field(default=8765, ge=1, le=65535, description="the node backend's loopback port")
    remote_home: str | None = Field(default=None, description="ModelDeck's folder on the node (default "
                                                              "~/.config/modeldeck)")
    tls: TlsSettings | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value) or value in RESERVED_NAMES:
            raise ValueError("must be 1-32 of a-z, 0-9 and '-', starting with a letter or digit, and not 'local' "
                             "or 'auto' (a launch's node 'auto' means: place it by free memory)")
        return value

    @field_validator("remote_home")
    @classmethod
    def _home(cls, value: str | None) -> str | None:
        if value is not None and (not value or value.startswith("-") or any(c in value for c in "\n\0")
                                  or len(value) > 1024):
            raise ValueError("must be a folder path on the node")
        return value

    @model_validator(mode="after")
    def _transport(self) -> "NodeRequest":
        if self.transport == "ssh" and self.ssh is None:
            raise ValueError("transport 'ssh' needs the 'ssh' object (at least its host)")
        if self.transport == "tls" and self.tls is None:
            raise ValueError("transport 'tls' needs the 'tls' object (url, ca_cert, client_cert, client_key)")
        return self


class NodeConfig(BaseModel):
    """What nodes.json keeps of a node: no secrets."""

    name: str
    transport: Literal["ssh", "tls"]
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    remote_port: int = 8765
    remote_home: str | None = None
    url: str | None = None


class GpuOut(BaseModel):
    index: int
    name: str | None
    memory_total: int | None
    memory_free: int | None


class Node(BaseModel):
    """A node as the API shows it (never a secret)."""

    name: str
    transport: Literal["local", "ssh", "tls"]
    address: str
    state: Literal["connected", "connecting", "unreachable", "error"]
    error: str | None = None
    error_code: str | None = None
    hint: str | None = None
    rtt_ms: float | None = None
    engine: dict[str, Any] | None = None
    gpus: list[GpuOut] = Field(default_factory=list)
    deployments: int = 0
    last_seen: str | None = None
    base_url: str | None = None


# --------------------------------------------------------------------------- store


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created 0600 (atomically, never world-readable for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.parent / f".{path.name}.{_random.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class NodeStore:
    """``<home>/nodes.json`` (configuration) and ``<home>/nodes/<name>/`` (0700; secrets 0600)."""

    SECRETS = ("token", "passphrase", "client.key", "client.pem", "ca.pem")

    def __init__(self, home: Path):
        self.home = home
        self.path = home / "nodes.json"
        self.known_hosts = home / "known_hosts"

    def load(self) -> list[NodeConfig]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("nodes.json is unreadable (%s); starting without nodes", exc)
            return []
        out = []
        for item in raw.get("nodes", []) if isinstance(raw, dict) else []:
            try:
                out.append(NodeConfig.model_validate(item))
            except ValueError as exc:
                log.warning("a node in nodes.json was skipped: %s", exc)
        return out

    def save(self, configs: list[NodeConfig]) -> None:
        body = json.dumps({"nodes": [c.model_dump() for c in configs]}, indent=2).encode()
        _write_private(self.path, body)

    def folder(self, name: str) -> Path:
        return self.home / "nodes" / name

    def write_secret(self, name: str, key: str, value: str) -> Path:
        assert key in self.SECRETS
        path = self.folder(name) / key
        _write_private(path, value.encode("utf-8") if value.endswith("\n") else (value + "\n").encode("utf-8"))
        return path

    def read_secret(self, name: str, key: str) -> str | None:
        try:
            return (self.folder(name) / key).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            return None

    def secret_path(self, name: str, key: str) -> Path:
        return self.folder(name) / key

    def forget(self, name: str) -> None:
        """Remove the node's folder and everything in it."""
        folder = self.folder(name)
        if folder.is_dir():
            for child in folder.iterdir():
                child.unlink(missing_ok=True)
            folder.rmdir()


# --------------------------------------------------------------------------- live state


@dataclass
class NodeState:
    """One node as the manager knows it now; federation reads ``deployments_list``, ``client`` and ``token``."""

    config: NodeConfig
    state: str = "connecting"
    error: str | None = None
    error_code: str | None = None
    error_details: dict = field(default_factory=dict)
    hint: str | None = None
    rtt_ms: float | None = None
    engine: dict | None = None
    gpus: list[dict] = field(default_factory=list)
    deployments_list: list[dict] = field(default_factory=list)
    stats: dict | None = None
    last_seen: float | None = None
    base_url: str | None = None
    token: str | None = None
    client: httpx.AsyncClient | None = None
    tunnel: Tunnel | None = None
    task: asyncio.Task | None = None
    failures: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def connected(self) -> bool:
        return self.state == "connected" and self.client is not None

    def address(self) -> str:
        c = self.config
        if c.transport == "tls":
            return c.url or ""
        text = f"{c.user}@{c.host}" if c.user else (c.host or "")
        return f"{text}:{c.port}" if c.port else text

    def view(self) -> Node:
        return Node(name=self.name, transport=self.config.transport, address=self.address(), state=self.state,
                    error=self.error, error_code=self.error_code, hint=self.hint, rtt_ms=self.rtt_ms,
                    engine=self.engine, gpus=[GpuOut(**g) for g in self.gpus], deployments=len(self.deployments_list),
                    last_seen=(datetime.fromtimestamp(self.last_seen, timezone.utc).isoformat()
                               if self.last_seen else None),
                    base_url=self.base_url)


def _gpus(stats: dict | None) -> list[dict]:
    out = []
    for g in (stats or {}).get("gpus") or []:
        total, used = g.get("memory_total_bytes"), g.get("memory_used_bytes")
        out.append({"index": g.get("index", len(out)), "name": g.get("name"), "memory_total": total,
                    "memory_free": total - used if total is not None and used is not None else None})
    return out


class NodeManager:
    """Every node's connection and health (``app.state.nodes``).

    Args:
        home: the backend's home (nodes.json, known_hosts, nodes/<name>/).
        health_interval_s: seconds between health probes of a connected node.
    """

    def __init__(self, home: Path, *, health_interval_s: float = HEALTH_INTERVAL_S):
        self.store = NodeStore(home)
        self.health_interval_s = health_interval_s
        self._nodes: dict[str, NodeState] = {}
        self._closed = False

    # -- the Python API federation uses ----------------------------------------------

    def nodes(self) -> list[NodeState]:
        """Every configured node (not ``local``), in name order."""
        return [self._nodes[n] for n in sorted(self._nodes)]

    def get(self, name: str) -> NodeState:
        """The node ``name``. Raises NodeNotFound."""
        try:
            return self._nodes[name]
        except KeyError:
            raise NodeNotFound(f"There is no node named {name!r}.",
                               hint="GET /api/nodes lists the nodes; add one with POST /api/nodes.") from None

    def client(self, name: str) -> httpx.AsyncClient | None:
        """An HTTP client for the node's API (base URL = the tunnel or TLS URL, the remote token set),
        or None while the node is not connected."""
        node = self._nodes.get(name)
        return node.client if node is not None and node.connected else None

    def base_url(self, name: str) -> str | None:
        node = self._nodes.get(name)
        return node.base_url if node is not None and node.connected else None

    def token(self, name: str) -> str | None:
        node = self._nodes.get(name)
        return node.token if node is not None else None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Load nodes.json and start connecting every node in the background."""
        for config in self.store.load():
            node = NodeState(config)
            self._nodes[config.name] = node
            node.task = asyncio.create_task(self._watch(node), name=f"node-{config.name}")

    async def close(self) -> None:
        """Stop every health loop and tunnel."""
        self._closed = True
        for node in list(self._nodes.values()):
            await self._stop(node)

    async def _stop(self, node: NodeState) -> None:
        if node.task is not None:
            node.task.cancel()
            try:
                await node.task
            except BaseException:  # noqa: BLE001 - cancelled or failed, it is over either way
                pass
            node.task = None
        await self._disconnect(node)

    async def _disconnect(self, node: NodeState) -> None:
        client, node.client = node.client, None
        if client is not None:
            await client.aclose()
        tunnel, node.tunnel = node.tunnel, None
        if tunnel is not None:
            await tunnel.stop()
        node.base_url = None

    # -- add, trust, test, remove ------------------------------------------------------

    async def add(self, req: NodeRequest) -> NodeState:
        """Store and connect a node. A node whose host key is unknown stays (waiting for trust) and
        HostKeyUnknown is raised; other failures forget it again and raise their error."""
        if req.name in self._nodes:
            raise NodeExists(f"A node named {req.name!r} exists already.",
                             hint="Pick another name, or remove that node first (DELETE /api/nodes/<name>).")
        if req.transport == "ssh":
            s = req.ssh
            config = NodeConfig(name=req.name, transport="ssh", host=s.host, user=s.user, port=s.port,
                                identity_file=s.identity_file, remote_port=req.remote_port,
                                remote_home=req.remote_home)
        else:
            config = NodeConfig(name=req.name, transport="tls", url=req.tls.url, remote_port=req.remote_port,
                                remote_home=req.remote_home)
        node = NodeState(config)
        self._nodes[req.name] = node
        try:
            if req.transport == "ssh" and req.ssh.passphrase:
                pf = self.store.write_secret(req.name, "passphrase", req.ssh.passphrase)
                ssh_tunnel.write_askpass(self.store.folder(req.name), pf)
            if req.transport == "tls":
                t = req.tls
                self.store.write_secret(req.name, "ca.pem", t.ca_cert)
                self.store.write_secret(req.name, "client.pem", t.client_cert)
                self.store.write_secret(req.name, "client.key", t.client_key)
                if t.token:
                    self.store.write_secret(req.name, "token", t.token)
            self._save()
            await self._connect_now(node)
        except HostKeyUnknown:
            node.task = asyncio.create_task(self._watch(node), name=f"node-{req.name}")
            raise
        except BaseException:
            self._nodes.pop(req.name, None)
            await self._disconnect(node)
            self.store.forget(req.name)
            self._save()
            raise
        node.task = asyncio.create_task(self._watch(node, connect_first=False), name=f"node-{req.name}")
        return node

    async def trust(self, name: str, fingerprint: str) -> NodeState:
        """Trust the node's SSH host key if it still has ``fingerprint``, then connect."""
        node = self.get(name)
        if node.config.transport != "ssh":
            raise NodeUnreachable(f"The node {name!r} is reached over TLS; it has no SSH host key to trust.",
                                  hint="Its server certificate is checked against the CA given when it was added.")
        await ssh_tunnel.trust_host_key(self._target(node), fingerprint)
        return await self.test(name)

    async def test(self, name: str) -> NodeState:
        """Check the node now, from the login up (a new tunnel); raises the node error when it fails."""
        node = self.get(name)
        await self._connect_now(node)
        return node

    async def remove(self, name: str) -> None:
        """Forget the node: stop its tunnel and loop, delete its secrets (its deployments keep running there)."""
        node = self.get(name)
        self._nodes.pop(name, None)
        await self._stop(node)
        self.store.forget(name)
        self._save()

    def _save(self) -> None:
        self.store.save([n.config for n in self.nodes()])

    # -- connecting ------------------------------------------------------------------

    def _target(self, node: NodeState) -> SshTarget:
        c = node.config
        askpass = self.store.folder(c.name) / "askpass"
        return SshTarget(host=c.host or "", user=c.user, port=c.port, identity_file=c.identity_file,
                         known_hosts=self.store.known_hosts, askpass=askpass if askpass.is_file() else None)

    async def _connect_now(self, node: NodeState) -> None:
        async with node.lock:
            await self._disconnect(node)
            if node.state not in ("unreachable", "error"):  # a node that went away stays so until it is back
                node.state = "connecting"
            try:
                await self._connect(node)
                await self._probe(node, full=True)
            except ModelDeckError as exc:
                await self._disconnect(node)
                self._fail(node, exc)
                raise
            node.failures = 0

    def _fail(self, node: NodeState, exc: ModelDeckError) -> None:
        node.state = "unreachable" if isinstance(exc, NodeUnreachable) else "error"
        node.error, node.error_code, node.hint, node.error_details = exc.message, exc.code, exc.hint, exc.details
        node.rtt_ms = None

    async def _connect(self, node: NodeState) -> None:
        c = node.config
        if c.transport == "ssh":
            target = self._target(node)
            token = await ssh_tunnel.read_remote_token(target, c.remote_home or DEFAULT_REMOTE_HOME)
            self.store.write_secret(c.name, "token", token)
            tunnel = Tunnel(target, c.remote_port)
            node.tunnel = tunnel
            port = await tunnel.start()
            node.base_url = f"http://127.0.0.1:{port}"
            node.token = token
            node.client = httpx.AsyncClient(base_url=node.base_url, headers={"Authorization": f"Bearer {token}"},
                                            timeout=httpx.Timeout(30, connect=PROBE_TIMEOUT_S))
        else:
            folder = self.store.folder(c.name)
            try:
                ctx = ssl.create_default_context(cafile=str(folder / "ca.pem"))
                ctx.load_cert_chain(str(folder / "client.pem"), str(folder / "client.key"))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise NodeAuthFailed(f"The TLS certificates of node {c.name!r} cannot be used: {exc}",
                                     hint="Give a PEM CA certificate, and a client certificate with its matching "
                                          "unencrypted private key.") from None
            token = self.store.read_secret(c.name, "token")
            node.token = token
            node.base_url = c.url
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            node.client = httpx.AsyncClient(base_url=c.url or "", verify=ctx, headers=headers,
                                            timeout=httpx.Timeout(30, connect=PROBE_TIMEOUT_S))

    async def _probe(self, node: NodeState, *, full: bool = False) -> None:
        """One health check through the connection; updates the node or raises a node error."""
        client = node.client
        if client is None:
            raise NodeUnreachable(f"Node {node.name!r} is not connected.", hint="Test it again.")
        if node.tunnel is not None and not node.tunnel.alive:
            raise NodeUnreachable(f"The SSH tunnel to {node.address()} has ended (the link or the node went away).",
                                  hint="ModelDeck reconnects by itself when the node answers again.")
        t0 = time.perf_counter()
        try:
            health = await client.get("/api/health", timeout=PROBE_TIMEOUT_S)
            rtt = (time.perf_counter() - t0) * 1000
            if health.status_code != 200 or health.json().get("status") is None:
                raise NodeNotModelDeck(
                    f"{node.address()} answers on port {node.config.remote_port}, but not as a ModelDeck backend "
                    f"(GET /api/health: HTTP {health.status_code}).",
                    hint="Check the node's remote_port: it must be the port modeldeck-backend listens on there.")
            deps = await client.get("/api/deployments", timeout=PROBE_TIMEOUT_S)
            if deps.status_code == 401:
                raise NodeAuthFailed(f"The ModelDeck backend on {node.address()} refused the token ModelDeck has for it.",
                                     hint="Test the node again (the token is read anew over SSH); for TLS nodes, "
                                          "give the node's current token (its <home>/token) when adding it.")
            deps.raise_for_status()
            stats = await client.get("/api/stats", timeout=PROBE_TIMEOUT_S)
            if full or node.engine is None:
                engine = await client.get("/api/engine", timeout=max(PROBE_TIMEOUT_S, 10))
                if engine.status_code == 200:
                    node.engine = engine.json()
        except ssl.SSLError as exc:
            raise NodeAuthFailed(f"The TLS handshake with {node.address()} failed: {exc}",
                                 hint="Check that the CA signed the node's certificate, and that the node accepts "
                                      "this client certificate (modeldeck-backend --tls-client-ca).") from None
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            if node.tunnel is not None and node.tunnel.alive:
                # ssh is up but nothing answers on the node's port: no backend there.
                raise NodeNotModelDeck(
                    f"Nothing answers on {node.address()}'s port {node.config.remote_port}: ModelDeck's backend is "
                    "not running there.",
                    hint="Start `modeldeck-backend` on the node (or check the node's remote_port), then test again.") from None
            if node.config.transport == "tls" and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
                # The TLS handshake completed, then the node hung up before answering: with TLS 1.3
                # that is how a server refuses the client's certificate.
                raise NodeAuthFailed(f"{node.address()} closed the connection before answering ({exc}): it does "
                                     "not accept this client certificate.",
                                     hint="Give a client certificate signed by the CA the node was started with "
                                          "(modeldeck-backend --tls-client-ca there), with its key.") from None
            if isinstance(exc.__context__, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc).lower():
                raise NodeAuthFailed(f"The TLS handshake with {node.address()} failed: {exc}",
                                     hint="Check the CA and the client certificate and key given for this node.") from None
            raise NodeUnreachable(f"{node.address()} does not answer: {exc or type(exc).__name__}",
                                  hint="Check that the node is on and its backend runs; ModelDeck keeps trying.") from None
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise NodeUnreachable(f"{node.address()} did not answer within {PROBE_TIMEOUT_S:.0f} s "
                                  f"({type(exc).__name__}).",
                                  hint="Check the link to the node; ModelDeck reconnects by itself when it answers.") from None
        except httpx.HTTPStatusError as exc:
            raise NodeNotModelDeck(f"{node.address()} answered {exc.response.status_code} to GET /api/deployments.",
                                   hint="Check that the node runs a ModelDeck backend of this version.") from None
        except ValueError as exc:
            raise NodeNotModelDeck(f"{node.address()} did not answer as a ModelDeck backend: {exc}",
                                   hint="Check the node's remote_port.") from None
        node.deployments_list = deps.json() if isinstance(deps.json(), list) else []
        if stats.status_code == 200:
            node.stats = stats.json()
            node.gpus = _gpus(node.stats)
        node.rtt_ms = round(rtt, 2)
        node.last_seen = time.time()
        node.state, node.error, node.error_code, node.hint, node.error_details = "connected", None, None, None, {}

    async def _watch(self, node: NodeState, *, connect_first: bool = True) -> None:
        """The node's health loop: probe every interval; reconnect with backoff when it fails."""
        need_connect = connect_first
        while not self._closed:
            if need_connect and node.connected:  # connected meanwhile by a test or a trust
                need_connect = False
            if need_connect:
                if node.error_code in ("host_key_unknown", "host_key_changed"):
                    # Waiting for the person: a key is never accepted by retrying.
                    await asyncio.sleep(self.health_interval_s)
                    continue
                try:
                    await self._connect_now(node)
                    need_connect = False
                except ModelDeckError as exc:
                    node.failures += 1
                    log.info("node %s: %s", node.name, exc)
                    await asyncio.sleep(BACKOFF_S[min(node.failures - 1, len(BACKOFF_S) - 1)])
                    continue
                except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                    log.exception("connecting node %s failed", node.name)
                    node.failures += 1
                    await asyncio.sleep(BACKOFF_S[-1])
                    continue
            await asyncio.sleep(self.health_interval_s)
            if node.lock.locked():
                continue
            try:
                await self._probe(node)
            except ModelDeckError as exc:
                log.info("node %s: %s", node.name, exc)
                self._fail(node, exc)
                if node.error_code not in ("host_key_unknown", "host_key_changed"):
                    await self._disconnect(node)
                    need_connect = True
            except Exception:  # noqa: BLE001
                log.exception("probing node %s failed", node.name)
                await self._disconnect(node)
                need_connect = True
            if node.state == "connected" and node.client is None:
                need_connect = True

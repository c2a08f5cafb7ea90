"""Other machines (nodes) as the desktop shows them: table rows, the Add form's checks, host-key questions.

Plain Python (no Qt) so that what a person reads and what the form refuses is testable without
a window; desktop/pages/nodes.py puts it on screen. The API is ``/api/nodes`` (issue 17).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from desktop.formatting import format_bytes

LOCAL = "local"
#: A node's name: the backend's rule (a-z, 0-9 and '-', at most 32, not "local").
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,31})$")
#: What the backend (backend/ssh_tunnel.py) takes as an SSH host and user: a name, an IP address (v6 bare)
#: or a ~/.ssh/config alias; a user name (domain users may hold '@').
HOST_RE = re.compile(r"^(?!-)[A-Za-z0-9._:-]{1,253}$")
USER_RE = re.compile(r"^(?!-)[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}$")
STATE_TEXT = {"connected": "Connected", "connecting": "Connecting…", "unreachable": "Unreachable", "error": "Error"}
#: Theme colour role of each state.
STATE_ROLE = {"connected": "success", "connecting": "info", "unreachable": "danger", "error": "danger"}
COLUMNS = ["Name", "Address", "State", "RTT", "Engine", "GPUs free", "Deployments"]
DEFAULT_REMOTE_PORT = 8765
#: Node filter / selector entries that are not a node's name.
ALL_NODES = ""
AUTOMATIC = "auto"


def rtt_text(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def engine_text(engine: dict | None) -> str:
    """The node's Docker engine in a few words (its own GET /api/engine answer)."""
    if not engine:
        return "—"
    if not engine.get("reachable", True):
        return "Docker not reachable"
    version = engine.get("version")
    return f"Docker {version}" if version else "Docker"


def gpus_text(gpus: list[dict] | None) -> str:
    """``GPU 0: 70.1 GiB free of 80.0 GiB`` for each GPU; ``no GPU`` when the node has none."""
    if not gpus:
        return "no GPU"
    parts = []
    for g in gpus:
        free, total = g.get("memory_free"), g.get("memory_total")
        what = f"GPU {g.get('index', '?')}"
        if free is not None and total:
            parts.append(f"{what}: {format_bytes(free)} free of {format_bytes(total)}")
        elif free is not None:
            parts.append(f"{what}: {format_bytes(free)} free")
        else:
            parts.append(what)
    return "; ".join(parts)


def gpu_names_text(gpus: list[dict] | None) -> str:
    return ", ".join(f"{g.get('index', '?')}: {g.get('name') or 'GPU'}" for g in gpus or [])


@dataclass(frozen=True)
class NodeRow:
    """One node as the Nodes table shows it; ``data`` is the API's Node object."""

    data: dict

    @property
    def name(self) -> str:
        return self.data.get("name", "")

    @property
    def state(self) -> str:
        return self.data.get("state") or "error"

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    def cells(self) -> list[str]:
        d = self.data
        address = "this machine" if self.is_local else (d.get("address") or "—")
        deployments = d.get("deployments")
        rtt = "—" if self.is_local else rtt_text(d.get("rtt_ms"))  # no round trip to itself
        return [self.name, address, STATE_TEXT.get(self.state, self.state.capitalize()), rtt,
                engine_text(d.get("engine")), gpus_text(d.get("gpus")),
                "—" if deployments is None else str(deployments)]

    def tooltip(self) -> str:
        d = self.data
        lines = [f"{self.name} — {STATE_TEXT.get(self.state, self.state)}"]
        if d.get("transport"):
            lines.append(f"Reached over {d['transport'].upper()}: {d.get('address') or ''}".rstrip())
        if d.get("error"):
            lines.append(d["error"])
        if d.get("hint"):
            lines.append(d["hint"])
        if d.get("gpus"):
            lines.append("GPUs: " + gpu_names_text(d["gpus"]))
        if d.get("last_seen"):
            lines.append(f"Last answer: {d['last_seen']}")
        return "\n".join(lines)


def node_rows(nodes: list[dict]) -> list[NodeRow]:
    """Rows in the API's order (``local`` first, then by name)."""
    return [NodeRow(n) for n in nodes]


@dataclass
class AddNodeForm:
    """What the Add node dialog holds; ``errors()`` says what is wrong, ``body()`` is the POST /api/nodes body."""

    name: str = ""
    transport: str = "ssh"
    host: str = ""
    user: str = ""
    port: str = ""
    identity_file: str = ""
    passphrase: str = ""
    remote_port: str = str(DEFAULT_REMOTE_PORT)
    remote_home: str = ""
    url: str = ""
    ca_cert: str = ""
    client_cert: str = ""
    client_key: str = ""
    token: str = ""  # TLS: the node's API token (its <home>/token), when the node does not hand it out

    def errors(self) -> dict[str, str]:
        """Field → what is wrong and what to do; empty when the form can be sent."""
        e: dict[str, str] = {}
        name = self.name.strip()
        if not name:
            e["name"] = "Give the node a name (e.g. gpu-box)."
        elif name == LOCAL:
            e["name"] = "'local' is this machine's name; choose another."
        elif name == "auto":
            e["name"] = "'auto' means automatic placement when launching; choose another."
        elif not NAME_RE.match(name):
            e["name"] = "Use at most 32 lower-case letters, digits and '-', starting with a letter or digit."
        bad_port = _port_error(self.remote_port, "The ModelDeck port on the node", required=True)
        if bad_port:
            e["remote_port"] = bad_port
        if self.transport == "ssh":
            host = self.host.strip()
            if not host:
                e["host"] = "Enter the host: a name, an IP address or a ~/.ssh/config alias."
            elif "@" in host:
                e["host"] = "Enter only the host; put the user in the User field."
            elif not HOST_RE.match(host):
                e["host"] = ("A host is letters, digits and . - _ : (no spaces, an IPv6 address without brackets) "
                             "and does not start with '-'.")
            user = self.user.strip()
            if user and not USER_RE.match(user):
                e["user"] = "A user name is letters, digits and . _ @ - (no spaces) and does not start with '-'."
            bad = _port_error(self.port, "The SSH port", required=False)
            if bad:
                e["port"] = bad
            if self.identity_file.strip():
                problem = _file_error(self.identity_file, "key file")
                if problem:
                    e["identity_file"] = problem
        elif self.transport == "tls":
            url = self.url.strip()
            if not url.startswith("https://") or len(url) <= len("https://"):
                e["url"] = "Enter the node's https:// URL (plain http to another machine is refused)."
            for key, label in (("ca_cert", "CA certificate"), ("client_cert", "client certificate"),
                               ("client_key", "client key")):
                problem = _file_error(getattr(self, key), label, pem=True)
                if problem:
                    e[key] = problem
        else:
            e["transport"] = "Choose SSH or TLS."
        return e

    def body(self) -> dict:
        """The POST /api/nodes body (TLS files read here: the backend may run as another user)."""
        body: dict = {"name": self.name.strip(), "transport": self.transport,
                      "remote_port": int(self.remote_port.strip() or DEFAULT_REMOTE_PORT)}
        if self.remote_home.strip():
            body["remote_home"] = self.remote_home.strip()
        if self.transport == "ssh":
            body["ssh"] = {"host": self.host.strip(), "user": self.user.strip() or None,
                           "port": int(self.port) if self.port.strip() else None,
                           "identity_file": str(Path(self.identity_file.strip()).expanduser())
                           if self.identity_file.strip() else None,
                           "passphrase": self.passphrase or None}
        else:
            body["tls"] = {"url": self.url.strip().rstrip("/"),
                           **{k: Path(getattr(self, k).strip()).expanduser().read_text(encoding="utf-8")
                              for k in ("ca_cert", "client_cert", "client_key")},
                           "token": self.token.strip() or None}
        return body


def _port_error(text: str, what: str, required: bool) -> str | None:
    text = text.strip()
    if not text:
        return f"{what} is needed." if required else None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        return f"{what} is a number from 1 to 65535."
    return None


def _file_error(text: str, label: str, pem: bool = False) -> str | None:
    text = text.strip()
    if not text:
        return f"Choose the {label} file."
    path = Path(text).expanduser()
    if not path.is_file():
        return f"The {label} {path} does not exist; choose the file again."
    if pem:
        try:
            head = path.read_text(encoding="utf-8")[:4096]
        except (OSError, UnicodeDecodeError):
            return f"The {label} {path} cannot be read as text; choose a PEM file."
        if "-----BEGIN " not in head:
            return f"The {label} {path} is not a PEM file (no '-----BEGIN'); choose the .pem/.crt/.key file."
    return None


def trust_question(node: str, details: dict | None) -> str:
    """The text of the 'Trust this key?' question for a host key seen for the first time."""
    d = details or {}
    key_type = d.get("key_type") or "unknown type"
    fingerprint = d.get("fingerprint") or "(no fingerprint given)"
    host = d.get("host")
    where = f" ({host})" if host else ""
    return (f"The host key of '{node}'{where} is not known yet.\n\n"
            f"Key type: {key_type}\nFingerprint: {fingerprint}\n\n"
            "Compare it with the key on that machine (there: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub). "
            "Trust this key?")


def host_key_changed_text(node: str, message: str, hint: str | None, details: dict | None) -> str:
    """The error shown when a node's host key differs from the trusted one (never accepted here)."""
    d = details or {}
    lines = [message or f"The host key of '{node}' changed."]
    if d.get("fingerprint"):
        lines.append(f"Key offered now: {d.get('key_type') or ''} {d['fingerprint']}".replace("  ", " "))
    if hint:
        lines.append(hint)
    lines.append("ModelDeck does not accept a changed key; the node stays disconnected.")
    return "\n\n".join(lines)


def node_of(deployment: dict) -> str:
    """The node a deployment runs on (``local`` for this machine; older backends give none)."""
    return deployment.get("node") or LOCAL


def node_label(node: str) -> str:
    return "This machine" if node == LOCAL else node


def node_choices(nodes: list[dict], with_all: bool = False, with_auto: bool = False) -> list[tuple[str, str]]:
    """(label, value) entries for a node filter or selector: This machine first, then each node by name."""
    names = sorted({n.get("name", "") for n in nodes} - {LOCAL, ""})
    out = [("All nodes", ALL_NODES)] if with_all else []
    out.append(("This machine", LOCAL))
    out += [(n, n) for n in names]
    if with_auto:
        out.append(("Automatic (most free memory)", AUTOMATIC))
    return out


def filter_deployments(deployments: list[dict], node: str) -> list[dict]:
    """The deployments on ``node`` (ALL_NODES: every one)."""
    return list(deployments) if node == ALL_NODES else [d for d in deployments if node_of(d) == node]


def candidate_text(c: dict) -> str:
    """One placement candidate: ``gpu-box · GPU 0 · 70.1 GiB free, needs 5.2 GiB — fits``."""
    where = node_label(c.get("node") or LOCAL)
    if c.get("gpu") not in (None, ""):
        where += f" · GPU {c['gpu']}"
    free, need = c.get("free_bytes"), c.get("need_bytes")
    figures = f"{format_bytes(free)} free" if free is not None else "free memory unknown"
    if need:
        figures += f", needs {format_bytes(need)}"
    level = c.get("level")
    tail = f" — {c['message']}" if c.get("message") else (f" — {level}" if level else "")
    return f"{where} · {figures}{tail}"

"""OpenSSH as the transport to a node: command lines, host keys, the remote token, and the tunnel process.

ModelDeck runs the person's own ``ssh`` binary rather than an SSH library, so that their
``~/.ssh/config`` (aliases, ProxyJump, ports), their agent and their keys work exactly as they do
in a terminal. Every call is non-interactive: ``BatchMode=yes`` (or, for a key whose passphrase was
stored, ``SSH_ASKPASS`` reading it from an owner-only file), ``StrictHostKeyChecking=yes`` (an
unknown key is a question for the person, never accepted here), and ModelDeck's own known_hosts
file beside the person's. What ssh writes on failure is turned into one of the node errors of
``backend.errors`` with what to do.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import HostKeyChanged, HostKeyUnknown, NodeAuthFailed, NodeNotModelDeck, NodeUnreachable

#: Seconds ssh waits for the TCP connection (a cut link or a dead host fails this fast).
CONNECT_TIMEOUT_S = 5
#: Seconds any one ssh command (token read, keyscan) may take in all.
COMMAND_TIMEOUT_S = 15
#: Seconds a tunnel may take from start to listening.
TUNNEL_START_S = 15
#: What may be a host (a name, an address, a ~/.ssh/config alias) or a user: no option injection
#: (a leading '-'), no spaces or shell characters.
HOST_RE = re.compile(r"^(?!-)[A-Za-z0-9._:-]{1,253}$")
USER_RE = re.compile(r"^(?!-)[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}$")
DEFAULT_REMOTE_HOME = "~/.config/modeldeck"


def ssh_home() -> Path:
    """The person's home for ~/.ssh: ``$HOME`` (ssh itself looks up the passwd entry; ModelDeck
    passes the files explicitly, so a backend started with another HOME uses that one's)."""
    return Path(os.environ.get("HOME") or Path.home())


@dataclass(frozen=True)
class SshTarget:
    """Where and how to reach one node's sshd.

    Attributes:
        host: a host name, an address or an alias of the person's ~/.ssh/config.
        user, port, identity_file: None leaves ssh's own choice (the config, then its defaults).
        known_hosts: ModelDeck's own known_hosts file (keys the person trusted in ModelDeck).
        askpass: an executable that prints the stored passphrase, or None (then BatchMode).
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: Path = field(default_factory=lambda: Path("known_hosts"))
    askpass: Path | None = None

    @property
    def address(self) -> str:
        """``user@host:port`` as shown to the person (parts ssh chooses are left out)."""
        text = f"{self.user}@{self.host}" if self.user else self.host
        return f"{text}:{self.port}" if self.port else text

    def options(self) -> list[str]:
        """The ssh options every call uses (before the destination)."""
        user_known = ssh_home() / ".ssh" / "known_hosts"
        opts: list[str] = []
        config = ssh_home() / ".ssh" / "config"
        if config.is_file():
            opts += ["-F", str(config)]
        opts += ["-o", f"BatchMode={'no' if self.askpass else 'yes'}",
                 "-o", "StrictHostKeyChecking=yes",
                 "-o", f"UserKnownHostsFile={_quote_opt(self.known_hosts)} {_quote_opt(user_known)}",
                 "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                 "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2",
                 "-o", "ExitOnForwardFailure=yes",
                 "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        if self.askpass:
            # Only the stored passphrase may be asked for: never a password or a question.
            opts += ["-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
                     "-o", "NumberOfPasswordPrompts=1"]
        if self.port:
            opts += ["-p", str(self.port)]
        if self.user:
            opts += ["-l", self.user]
        if self.identity_file:
            opts += ["-i", self.identity_file, "-o", "IdentitiesOnly=yes"]
        return opts

    def env(self) -> dict[str, str]:
        """The environment for ssh: the backend's, plus SSH_ASKPASS when a passphrase is stored."""
        env = dict(os.environ)
        if self.askpass:
            env.update({"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force",
                        "DISPLAY": env.get("DISPLAY") or ":0"})
        return env

    def command(self, remote: str) -> list[str]:
        """``ssh … -- host <remote command>`` (the command runs in the node's login shell)."""
        return ["ssh", *self.options(), "-T", "-n", "--", self.host, remote]

    def tunnel_command(self, local_port: int, remote_port: int) -> list[str]:
        """``ssh -N -L 127.0.0.1:<local>:127.0.0.1:<remote>``: the node's loopback port on ours."""
        return ["ssh", *self.options(), "-N", "-n", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}",
                "--", self.host]


def _quote_opt(path: Path) -> str:
    text = str(path)
    return f'"{text}"' if " " in text else text


def remote_path(path: str) -> str:
    """``path`` for the node's shell: a leading ``~/`` stays unquoted (the node expands it), the rest quoted."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def write_askpass(folder: Path, passphrase_file: Path) -> Path:
    """An owner-only script that prints the stored passphrase (for SSH_ASKPASS); its path."""
    script = folder / "askpass"
    text = f"#!/bin/sh\nexec cat {shlex.quote(str(passphrase_file))}\n"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(script, 0o700)
    return script


# --------------------------------------------------------------------------- resolving and host keys


@dataclass(frozen=True)
class Resolved:
    """What ssh will really connect to after the person's config (``ssh -G``)."""

    hostname: str
    port: int
    user: str
    host_key_alias: str | None


async def _run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S,
               stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run ``cmd``; (exit code, stdout, stderr). A command past ``timeout`` is killed (exit 255)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    except FileNotFoundError:
        raise NodeUnreachable(f"{cmd[0]} is not installed on this machine, so no node can be reached over SSH.",
                              hint="Install OpenSSH's client (apt install openssh-client), or add the node over TLS.") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.CancelledError:
        proc.kill()
        raise
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return 255, "", f"ssh did not finish within {timeout:.0f} s (connection timed out)"
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def resolve(target: SshTarget) -> Resolved:
    """Ask ssh where ``target`` really goes (aliases, ports and users from the config applied)."""
    code, out, err = await _run(["ssh", *target.options(), "-G", "--", target.host], env=target.env())
    if code != 0:
        raise NodeUnreachable(f"ssh cannot use the destination {target.address}: {err.strip() or 'ssh -G failed'}",
                              hint="Check the host (or ~/.ssh/config alias), user and port; "
                                   f"`ssh -G {target.host}` shows what ssh makes of them.")
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), value.strip())
    alias = values.get("hostkeyalias")
    return Resolved(values.get("hostname", target.host), int(values.get("port") or 22), values.get("user", ""),
                    None if alias in (None, "", "none") else alias)


@dataclass(frozen=True)
class HostKey:
    """A host key as ssh-keyscan found it: the known_hosts line and its fingerprint."""

    line: str
    fingerprint: str
    key_type: str


async def scan_host_keys(resolved: Resolved) -> list[HostKey]:
    """The host keys ``resolved``'s sshd offers now (ssh-keyscan), with SHA256 fingerprints (ssh-keygen -lf)."""
    code, out, err = await _run(["ssh-keyscan", "-T", str(CONNECT_TIMEOUT_S), "-p", str(resolved.port),
                                 "--", resolved.hostname])
    keys = []
    for line in out.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(" ")
        if resolved.host_key_alias:  # ssh checks the alias, not the address
            line = f"{resolved.host_key_alias} {rest}"
        fcode, fout, _ = await _run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], stdin=(line + "\n").encode())
        parts = fout.split()
        if fcode == 0 and len(parts) >= 2:
            key_type = parts[-1].strip("()") if parts[-1].startswith("(") else rest.split()[0]
            keys.append(HostKey(line, parts[1], key_type))
    return keys


def _key_type_asked(stderr: str) -> str | None:
    """The key type ssh said it has no known key for ("No ED25519 host key is known for …")."""
    m = re.search(r"No (\S+) host key is known for", stderr)
    return m.group(1) if m else None


async def host_key_error(target: SshTarget, stderr: str) -> HostKeyUnknown | HostKeyChanged:
    """The host key error for ssh's ``stderr`` (it said "Host key verification failed")."""
    resolved = await resolve(target)
    where = resolved.host_key_alias or (resolved.hostname if resolved.port == 22
                                        else f"[{resolved.hostname}]:{resolved.port}")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "has changed" in stderr:
        m = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", stderr)
        return HostKeyChanged(
            f"The host key of {target.address} has CHANGED since it was trusted"
            + (f" (it now offers {m.group(1)})" if m else "") +
            ": someone may be intercepting the connection, or the machine was reinstalled.",
            hint="Check the new fingerprint on the machine itself (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`); "
                 f"only if it matches, remove the old key with `ssh-keygen -R '{where}' -f {target.known_hosts}` "
                 f"(and from ~/.ssh/known_hosts), then test the node again and trust the new key.",
            details={"fingerprint": m.group(1) if m else None, "host": where})
    wanted = _key_type_asked(stderr)
    keys = await scan_host_keys(resolved)
    chosen = next((k for k in keys if wanted and k.key_type.upper() == wanted.upper()), keys[0] if keys else None)
    if chosen is None:
        return HostKeyUnknown(f"The host key of {target.address} is not known, and ssh-keyscan could not read it.",
                              hint="Connect once with `ssh` in a terminal to check and accept the key, then test "
                                   "the node again.", details={"fingerprint": None, "key_type": wanted, "host": where})
    return HostKeyUnknown(
        f"The host key of {target.address} is not known yet: {chosen.key_type} {chosen.fingerprint}.",
        hint="Compare this fingerprint with the one on the machine itself (`ssh-keygen -lf "
             "/etc/ssh/ssh_host_ed25519_key.pub` there); if it matches, trust it "
             "(POST /api/nodes/<name>/trust with the fingerprint, or Trust in Settings → Nodes).",
        details={"fingerprint": chosen.fingerprint, "key_type": chosen.key_type, "host": where})


async def trust_host_key(target: SshTarget, fingerprint: str) -> HostKey:
    """Add the key ``target`` offers now to ModelDeck's known_hosts, if its fingerprint is ``fingerprint``.

    Raises:
        HostKeyChanged: the key offered now has another fingerprint (it changed since it was shown).
        NodeUnreachable: no key could be read.
    """
    resolved = await resolve(target)
    keys = await scan_host_keys(resolved)
    if not keys:
        raise NodeUnreachable(f"No host key could be read from {target.address}.",
                              hint="Check that the machine is up and its sshd listens on that port, then try again.")
    match = next((k for k in keys if k.fingerprint == fingerprint), None)
    if match is None:
        raise HostKeyChanged(
            f"{target.address} does not offer the key {fingerprint} now (it offers "
            f"{', '.join(k.fingerprint for k in keys)}); nothing was trusted.",
            hint="Test the node again to see the key it offers now, and check it on the machine itself before trusting it.",
            details={"fingerprint": keys[0].fingerprint, "offered": [k.fingerprint for k in keys]})
    where = resolved.host_key_alias or (resolved.hostname if resolved.port == 22
                                        else f"[{resolved.hostname}]:{resolved.port}")
    for known in (target.known_hosts, ssh_home() / ".ssh" / "known_hosts"):
        for old in await _known_keys(known, where):
            if old.key_type == match.key_type and old.fingerprint != match.fingerprint:
                # A second key beside the old one would make ssh accept either: the old one goes first.
                raise HostKeyChanged(
                    f"{known} already holds another {old.key_type} key for {where} ({old.fingerprint}): the "
                    f"node's key changed to {match.fingerprint}; nothing was trusted.",
                    hint="Check the new fingerprint on the machine itself; only if it matches, remove the old key "
                         f"with `ssh-keygen -R '{where}' -f {known}` and trust again.",
                    details={"fingerprint": match.fingerprint, "old_fingerprint": old.fingerprint, "host": where})
            if old.fingerprint == match.fingerprint and known == target.known_hosts:
                return match  # trusted already
    target.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(match.line + "\n")
    return match


async def _known_keys(known_hosts: Path, where: str) -> list[HostKey]:
    """The keys ``known_hosts`` holds for ``where`` (``ssh-keygen -F``, hashed entries too)."""
    if not known_hosts.is_file():
        return []
    code, out, _ = await _run(["ssh-keygen", "-F", where, "-f", str(known_hosts)])
    keys = []
    for line in out.splitlines() if code == 0 else []:
        if not line.strip() or line.startswith("#"):
            continue
        fcode, fout, _ = await _run(["ssh-keygen", "-l", "-E", "sha256", "-f", "-"], stdin=(line + "\n").encode())
        parts = fout.split()
        if fcode == 0 and len(parts) >= 2:
            keys.append(HostKey(line, parts[1], parts[-1].strip("()")))
    return keys


# --------------------------------------------------------------------------- errors from ssh's words

_UNREACHABLE = ("Connection timed out", "No route to host", "Connection refused", "Could not resolve hostname",
                "Network is unreachable", "Operation timed out", "did not finish within", "Connection closed by",
                "Connection reset", "kex_exchange_identification", "Name or service not known")


async def classify(target: SshTarget, code: int, stderr: str):
    """The node error for an ssh that failed with ``code`` and ``stderr``."""
    text = stderr.strip()
    last = text.splitlines()[-1] if text else f"ssh exited with {code}"
    if "Host key verification failed" in text or "HOST IDENTIFICATION HAS CHANGED" in text:
        return await host_key_error(target, text)
    if "Permission denied" in text or "Too many authentication failures" in text:
        return NodeAuthFailed(
            f"{target.address} refused ModelDeck's login: {last}",
            hint="Check the user and the key: `ssh " + " ".join(
                shlex.quote(a) for a in ([f"-i{target.identity_file}"] if target.identity_file else [])
                + ([f"-p{target.port}"] if target.port else [])) + f" {shlex.quote(target.address.rsplit(':', 1)[0])}` "
                 "must log in without a password prompt (a key in ssh-agent, or a key file with its passphrase "
                 "given to ModelDeck), and the public key must be in the node's authorized_keys.")
    if any(word in text for word in _UNREACHABLE) or code == 255:
        return NodeUnreachable(
            f"{target.address} cannot be reached over SSH: {last}",
            hint="Check that the machine is on and on the network, the address and port are right, and its sshd "
                 "runs; then test the node again.")
    return NodeUnreachable(f"ssh to {target.address} failed: {last}",
                           hint="Run the same `ssh` in a terminal to see why, then test the node again.")


async def read_remote_token(target: SshTarget, remote_home: str) -> str:
    """The node backend's API token, read over SSH (``cat <remote_home>/token``).

    Raises:
        HostKeyUnknown, HostKeyChanged, NodeAuthFailed, NodeUnreachable: ssh could not log in.
        NodeNotModelDeck: logged in, but there is no token file (no ModelDeck there, or another home).
    """
    path = remote_home.rstrip("/") + "/token"
    code, out, err = await _run(target.command(f"cat {remote_path(path)}"), env=target.env())
    if code == 0 and out.strip():
        return out.strip()
    if code != 255 and ("No such file" in err or "Not a directory" in err or code == 0 or code == 1):
        raise NodeNotModelDeck(
            f"{target.address} has no ModelDeck token at {path}: ModelDeck's backend is not installed or has "
            "never run there (or it uses another folder).",
            hint="Install ModelDeck on the node and start `modeldeck-backend` there once (it writes the token); "
                 "if it runs with MODELDECK_HOME set, give that folder as the node's remote_home.")
    raise await classify(target, code, err)


def free_local_port() -> int:
    """A free TCP port on 127.0.0.1 for a tunnel's local end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tunnel:
    """One ``ssh -N -L`` process: the node backend's loopback port on a local loopback port."""

    def __init__(self, target: SshTarget, remote_port: int):
        self.target = target
        self.remote_port = remote_port
        self.local_port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task | None = None
        #: ssh's last lines while the tunnel runs (for the log when it ends).
        self.last_lines: list[str] = []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> int:
        """Start ssh and wait until the local end accepts connections; the local port.

        Raises:
            the node errors of :func:`classify` when ssh exits first.
        """
        for _attempt in range(3):  # another program may take the free port before ssh binds it
            self.local_port = free_local_port()
            self.proc = await asyncio.create_subprocess_exec(
                *self.target.tunnel_command(self.local_port, self.remote_port), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.target.env(), start_new_session=True)
            deadline = asyncio.get_running_loop().time() + TUNNEL_START_S
            while asyncio.get_running_loop().time() < deadline:
                if self.proc.returncode is not None:
                    break
                if await _accepts(self.local_port):
                    # ssh keeps writing (a refused channel per request while the node's backend is down):
                    # read it, or a full pipe would stop the tunnel.
                    self._drain = asyncio.create_task(self._read_stderr(self.proc), name="ssh-tunnel-stderr")
                    return self.local_port
                try:
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), 0.05)
                except asyncio.TimeoutError:
                    pass
            if self.proc.returncode is None:
                await self.stop()
                raise NodeUnreachable(f"The SSH tunnel to {self.target.address} did not open within {TUNNEL_START_S} s.",
                                      hint="Check the link to the node, then test it again.")
            err = (await self.proc.stderr.read()).decode(errors="replace")
            if "Address already in use" in err or "cannot listen" in err:
                continue
            raise await classify(self.target, self.proc.returncode, err)
        raise NodeUnreachable("No free local port could be bound for the SSH tunnel.",
                              hint="Try again; if it keeps failing, something is taking loopback ports.")

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        while line := await proc.stderr.readline():
            self.last_lines = [*self.last_lines[-19:], line.decode(errors="replace").rstrip()]

    async def stop(self) -> None:
        """End the ssh process (SIGTERM, then SIGKILL after 3 s)."""
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def _accepts(port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True

"""Export a ContainerSpec as a docker-compose.yml that recreates the same container without ModelDeck."""

from __future__ import annotations

import re
from typing import Any

import yaml

from backend.spec import SECURITY_OPT, ContainerSpec, Mount

# Compose's own rule for project names (lower case, digits, '-' and '_', first a letter or digit).
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SERVICE_BAD = re.compile(r"[^a-zA-Z0-9._-]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Quoted(str):
    """A string written double-quoted: every value, and every key that comes from the spec.

    Quoted, no string is read back as a number, a boolean or null (by YAML 1.1 or compose's 1.2),
    and PyYAML escapes whatever is outside printable ASCII in that style (``allow_unicode`` off),
    so no character can end the scalar, start a comment or be folded as a line break (YAML treats
    U+0085, U+2028 and U+2029 as line breaks). Compose's own field names stay plain.
    """


def _literal(text: str) -> _Quoted:
    # Compose interpolates ``$`` in every key and value, so ``$`` is doubled: compose turns ``$$``
    # back into ``$`` and the container sees the original string.
    return _Quoted(text.replace("$", "$$"))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Quoted, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"'))

#: The same quoting for the Kubernetes export (backend/kubernetes_export.py), which has no ``$`` to escape.
Quoted = _Quoted


def dump_yaml(doc: Any) -> str:
    """``doc`` as block YAML in the order given, ``Quoted`` strings double-quoted.

    No line width: a long command stays on one line rather than folded inside its quotes.
    """
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=2**31 - 1)


def _port(spec: ContainerSpec) -> Any:
    if ":" in spec.host_ip:  # IPv6: the short "ip:host:container" form would be ambiguous
        return {"target": spec.internal_port, "published": _Quoted(str(spec.host_port)),
                "host_ip": _literal(spec.host_ip), "protocol": _Quoted("tcp")}
    # Host port 0: Docker assigns one at each start, written "ip::port" as `docker run` does.
    return _literal(f"{spec.host_ip}:{spec.host_port or ''}:{spec.internal_port}")


def _volume(mount: Mount) -> Any:
    if ":" in mount.source or ":" in mount.target:
        # A ':' in a path (a Windows drive, an odd folder name) breaks the short form.
        long = {"type": _literal(mount.kind), "source": _literal(mount.source), "target": _literal(mount.target)}
        if mount.read_only:
            long["read_only"] = True
        return long
    return _literal(f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else ""))


def _service(spec: ContainerSpec) -> dict[str, Any]:
    svc: dict[str, Any] = {"container_name": _literal(spec.name), "image": _literal(spec.image)}
    if spec.entrypoint is not None:
        svc["entrypoint"] = [_literal(a) for a in spec.entrypoint]
    if spec.command:
        svc["command"] = [_literal(a) for a in spec.command]
    svc["ports"] = [_port(spec)]
    env: dict[str, _Quoted] = {_literal(k): _literal(v) for k, v in spec.environment.items()
                           if k not in spec.secret_env}
    # Secret names were checked to be variable names, so the reference needs no escaping.
    env.update({_Quoted(name): _Quoted("${%s}" % name) for name in spec.secret_env})
    if env:
        svc["environment"] = env
    if spec.labels:
        svc["labels"] = {_literal(k): _literal(v) for k, v in spec.labels.items()}
    if spec.mounts:
        svc["volumes"] = [_volume(m) for m in spec.mounts]
    if spec.shm_size:
        svc["shm_size"] = _literal(spec.shm_size)
    if spec.ipc_mode:
        svc["ipc"] = _literal(spec.ipc_mode)
    if spec.ulimits:
        svc["ulimits"] = {_literal(name): value for name, value in spec.ulimits}
    if spec.mem_limit:
        svc["mem_limit"] = spec.mem_limit  # bytes
    # init: launches run the server under Docker's init too (engine.create), so it reaps and forwards signals.
    svc["init"] = True
    svc["restart"] = _Quoted(f"on-failure:{spec.restart_max}" if spec.restart_max > 0 else "no")
    svc["security_opt"] = [_literal(o) for o in SECURITY_OPT]
    if spec.gpu_ids:
        device: dict[str, Any] = {"driver": _Quoted("nvidia")}
        if spec.gpu_ids == ("all",):
            device["count"] = _Quoted("all")
        else:
            device["device_ids"] = [_literal(g) for g in spec.gpu_ids]
        device["capabilities"] = [_Quoted("gpu")]
        svc["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    return svc


def render_compose(spec: ContainerSpec, *, project: str = "modeldeck") -> str:
    """Render ``spec`` as the text of a docker-compose.yml.

    The file reproduces the container ModelDeck would create: image, entrypoint and command,
    the loopback port binding, environment, labels, cache volumes and read-only model
    folders, shared memory, IPC mode, resource limits, Docker's init process, restart
    policy, no-new-privileges and GPU reservations. Secrets appear only as ``${NAME}`` references that compose fills from
    the shell or a ``.env`` file at ``docker compose up``; their values are never written.

    Args:
        spec: the container to export.
        project: the compose project name (``name:`` at the top of the file).

    Returns:
        YAML text, every string double-quoted, readable by ``docker compose`` and by any
        YAML parser.

    Raises:
        ValueError: when ``project`` is not a valid compose project name, or a secret's
            name is not an environment variable name.
    """
    if not _PROJECT.fullmatch(project):
        raise ValueError(f"'{project}' is not a valid compose project name "
                         "(lower-case letters, digits, '-' and '_'; first a letter or digit)")
    for name in spec.secret_env:
        if not _ENV_NAME.fullmatch(name):
            raise ValueError(f"secret name {name!r} is not an environment variable name")
    header = [
        "# Exported by ModelDeck: the same container, run with `docker compose up -d`.",
        "# Stop or remove the ModelDeck deployment first (same container name and port).",
    ]
    if spec.secret_env:
        header.append("# Secrets are read from your shell or a .env file beside this one: "
                      + ", ".join(spec.secret_env) + ".")
    doc: dict[str, Any] = {"name": _Quoted(project),
                           "services": {_literal(_SERVICE_BAD.sub("-", spec.name) or "model"): _service(spec)}}
    volumes = sorted({m.source for m in spec.mounts if m.kind == "volume"})
    if volumes:
        # `name:` keeps the volume's own name (compose would prefix the project), so the
        # export reuses the cache ModelDeck already filled instead of downloading again.
        doc["volumes"] = {_literal(v): {"name": _literal(v)} for v in volumes}
    body = dump_yaml(doc)
    return "\n".join(header) + "\n" + body

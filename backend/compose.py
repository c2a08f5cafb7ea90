"""Export a ContainerSpec as a docker-compose.yml that recreates the same container without ModelDeck."""

from __future__ import annotations

import re

from backend.envnames import require_env_name
from backend.spec import SECURITY_OPT, ContainerSpec, Mount

# Compose's own rule for project names (lower case, digits, '-' and '_', first a letter or digit).
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*")
_SERVICE_BAD = re.compile(r"[^a-zA-Z0-9._-]")


def _entry(indent: str, key: str, value: str) -> str:
    """One ``key: value`` mapping line; ``value`` is already rendered.

    YAML limits implicit keys to 1024 characters, so a longer (escaped) key is written
    with the explicit ``? key`` form, which has no limit.
    """
    quoted = _quote(key)
    if len(quoted) < 1000:
        return f"{indent}{quoted}: {value}"
    return f"{indent}? {quoted}\n{indent}: {value}"


def _quote(text: str) -> str:
    """One YAML double-quoted scalar that reads back as exactly ``text`` (compose escapes included).

    Compose interpolates ``$`` in every value, so ``$`` is doubled: compose turns ``$$`` back
    into ``$`` and the container sees the original string. Everything outside printable ASCII
    is escaped, so no character can end the scalar, start a comment, or be folded as a line
    break (YAML treats U+0085, U+2028 and U+2029 as line breaks).
    """
    out = ['"']
    for ch in text.replace("$", "$$"):
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0x20 <= code <= 0x7E:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _flow(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


def _port(spec: ContainerSpec) -> list[str]:
    if ":" in spec.host_ip:  # IPv6: the short "ip:host:container" form would be ambiguous
        return ["      - target: %d" % spec.internal_port,
                "        published: %s" % _quote(str(spec.host_port)),
                "        host_ip: %s" % _quote(spec.host_ip),
                '        protocol: "tcp"']
    return ["      - " + _quote(f"{spec.host_ip}:{spec.host_port}:{spec.internal_port}")]


def _volume(mount: Mount) -> list[str]:
    if ":" in mount.source or ":" in mount.target:
        # A ':' in a path (a Windows drive, an odd folder name) breaks the short form.
        lines = ["      - type: " + _quote(mount.kind),
                 "        source: " + _quote(mount.source),
                 "        target: " + _quote(mount.target)]
        if mount.read_only:
            lines.append("        read_only: true")
        return lines
    short = f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else "")
    return ["      - " + _quote(short)]


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
        require_env_name(name, "secret name")
    service = _SERVICE_BAD.sub("-", spec.name) or "model"
    lines = [
        "# Exported by ModelDeck: the same container, run with `docker compose up -d`.",
        "# Stop or remove the ModelDeck deployment first (same container name and port).",
    ]
    if spec.secret_env:
        lines.append("# Secrets are read from your shell or a .env file beside this one: "
                     + ", ".join(spec.secret_env) + ".")
    lines += [f"name: {_quote(project)}", "services:", f"  {_quote(service)}:",
              f"    container_name: {_quote(spec.name)}",
              f"    image: {_quote(spec.image)}"]
    if spec.entrypoint is not None:
        lines.append(f"    entrypoint: {_flow(spec.entrypoint)}")
    if spec.command:
        lines.append(f"    command: {_flow(spec.command)}")
    lines.append("    ports:")
    lines += _port(spec)

    env = {k: _quote(v) for k, v in spec.environment.items() if k not in spec.secret_env}
    # Secret names were checked above, so the reference needs no escaping.
    env.update({name: '"${%s}"' % name for name in spec.secret_env})
    if env:
        lines.append("    environment:")
        lines += [_entry("      ", k, v) for k, v in env.items()]
    if spec.labels:
        lines.append("    labels:")
        lines += [_entry("      ", k, _quote(v)) for k, v in spec.labels.items()]
    if spec.mounts:
        lines.append("    volumes:")
        for mount in spec.mounts:
            lines += _volume(mount)
    if spec.shm_size:
        lines.append(f"    shm_size: {_quote(spec.shm_size)}")
    if spec.ipc_mode:
        lines.append(f"    ipc: {_quote(spec.ipc_mode)}")
    if spec.ulimits:
        lines.append("    ulimits:")
        lines += [f"      {name}: {value}" for name, value in spec.ulimits]
    restart = f"on-failure:{spec.restart_max}" if spec.restart_max > 0 else "no"
    # init: launches run the server under Docker's init too (engine.create), so it reaps and forwards signals.
    lines += ["    init: true",
              f"    restart: {_quote(restart)}",
              "    security_opt:",
              *(f"      - {_quote(o)}" for o in SECURITY_OPT)]
    if spec.gpu_ids:
        lines += ["    deploy:", "      resources:", "        reservations:", "          devices:",
                  '            - driver: "nvidia"']
        if spec.gpu_ids == ("all",):
            lines.append('              count: "all"')
        else:
            lines.append(f"              device_ids: {_flow(spec.gpu_ids)}")
        lines.append('              capabilities: ["gpu"]')

    volumes = sorted({m.source for m in spec.mounts if m.kind == "volume"})
    if volumes:
        # `name:` keeps the volume's own name (compose would prefix the project), so the
        # export reuses the cache ModelDeck already filled instead of downloading again.
        lines.append("volumes:")
        for name in volumes:
            lines += [f"  {_quote(name)}:", f"    name: {_quote(name)}"]
    return "\n".join(lines) + "\n"

"""Render a ContainerSpec as the equivalent `docker run` command line (beside compose.py's export)."""

from __future__ import annotations

import shlex

from backend.envnames import require_env_name
from backend.spec import SECURITY_OPT, ContainerSpec, Mount


def _csv_field(text: str) -> str:
    # --mount takes comma-separated key=value fields; a field holding ',' or '"' is CSV-quoted.
    return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text


def _mount(mount: Mount) -> list[str]:
    if ":" in mount.source or ":" in mount.target or "," in mount.source or "," in mount.target:
        # The short -v form splits on ':'; --mount names each part.
        fields = [f"type={mount.kind}", _csv_field(f"source={mount.source}"),
                  _csv_field(f"target={mount.target}")] + (["readonly"] if mount.read_only else [])
        return ["--mount", ",".join(fields)]
    return ["-v", f"{mount.source}:{mount.target}" + (":ro" if mount.read_only else "")]


def _parts(spec: ContainerSpec) -> tuple[list[list[str]], list[str]]:
    """The options of ``docker run -d``, one group per option, and what follows them (image,
    entrypoint rest, command)."""
    for name in spec.secret_env:
        require_env_name(name, "secret name")
    restart = f"on-failure:{spec.restart_max}" if spec.restart_max > 0 else "no"
    host = f"[{spec.host_ip}]" if ":" in spec.host_ip else spec.host_ip
    opts = [["--name", spec.name], ["--init"], ["--restart", restart],
            *(["--security-opt", o] for o in SECURITY_OPT),
            # "ip::port" is Docker's own syntax for "assign a free host port" (host port 0 in the spec).
            ["-p", f"{host}:{spec.host_port or ''}:{spec.internal_port}"]]
    if spec.gpu_ids == ("all",):
        opts.append(["--gpus", "all"])
    elif spec.gpu_ids:
        opts.append(["--gpus", '"device=' + ",".join(spec.gpu_ids) + '"'])
    if spec.shm_size:
        opts.append(["--shm-size", spec.shm_size])
    if spec.ipc_mode:
        opts.append(["--ipc", spec.ipc_mode])
    if spec.mem_limit:
        opts.append(["--memory", f"{spec.mem_limit}b"])
    opts += [["--ulimit", f"{name}={value}:{value}"] for name, value in spec.ulimits]
    opts += [["-e", f"{key}={value}"] for key, value in spec.environment.items() if key not in spec.secret_env]
    opts += [["-e", name] for name in spec.secret_env]
    opts += [_mount(mount) for mount in spec.mounts]
    opts += [["--label", f"{key}={value}"] for key, value in spec.labels.items()]
    rest: list[str] = []
    if spec.entrypoint is not None:
        opts.append(["--entrypoint", spec.entrypoint[0] if spec.entrypoint else ""])
        rest = list(spec.entrypoint[1:])
    return opts, [spec.image, *rest, *spec.command]


def docker_run_args(spec: ContainerSpec) -> list[str]:
    """The argument vector of ``docker run`` that creates and starts the container ``spec`` describes.

    It matches what a launch creates (``Engine.create``): Docker's init, the loopback port,
    no-new-privileges, shared memory, IPC mode, limits, GPUs, caches and model folders,
    labels, and the restart policy a launch turns on once the server is ready. Secrets are
    passed as ``-e NAME`` without a value, so that ``docker run`` takes them from the shell;
    their values are never part of the result.

    Docker's ``--entrypoint`` takes one executable: the rest of a recipe's entrypoint comes
    after the image, before the command, which gives the server the same argument vector.

    Raises:
        ValueError: a secret's name is not an environment variable name.
    """
    opts, tail = _parts(spec)
    return ["docker", "run", "-d", *(a for group in opts for a in group), *tail]


def render_docker_run(spec: ContainerSpec) -> str:
    """``docker_run_args(spec)`` as one shell command, each argument quoted, one option per line.

    Raises:
        ValueError: see ``docker_run_args``.
    """
    opts, tail = _parts(spec)
    lines = ["docker run -d", *(" ".join(shlex.quote(a) for a in group) for group in opts),
             " ".join(shlex.quote(a) for a in tail)]
    return " \\\n  ".join(lines) + "\n"

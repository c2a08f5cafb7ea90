"""ContainerSpec: the exact container a launch creates, as plain data (rendered by the engine and the compose export)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from backend.labels import LABEL_PREFIX, MANAGED_LABEL  # noqa: F401 - where older code imports them from


@dataclass(frozen=True)
class Mount:
    """A model cache or model folder: a named volume or a host folder."""

    source: str  # volume name, or absolute host path for kind == "bind"
    target: str  # absolute path inside the container
    kind: Literal["volume", "bind"] = "volume"
    read_only: bool = False


#: Every container ModelDeck creates runs with these (launches, the compose export, the docker run line).
SECURITY_OPT = ("no-new-privileges:true",)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the engine needs to create one model container, and nothing it may not do.

    Secrets are carried by name only (``secret_env``); their values are read from the
    backend's environment at create time and never stored in labels, specs or exports.
    """

    name: str  # container name: "modeldeck-<deployment id>"
    image: str
    command: tuple[str, ...]
    internal_port: int
    host_port: int  # 0: Docker assigns a free port at each start
    labels: dict[str, str]
    entrypoint: tuple[str, ...] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    secret_env: tuple[str, ...] = ()
    # Values for secrets given in the launch request itself: in memory only, handed to the
    # engine at create time, never rendered (repr=False keeps them out of logs too).
    secret_values: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    host_ip: str = "127.0.0.1"
    gpu_ids: tuple[str, ...] = ()  # () = no GPU; ("all",) = every GPU
    mounts: tuple[Mount, ...] = ()
    shm_size: str | None = None
    ipc_mode: str | None = None
    ulimits: tuple[tuple[str, int], ...] = ()  # (name, soft = hard limit); -1 = unlimited
    restart_max: int = 3
    mem_limit: int | None = None  # bytes (Docker's --memory); None: no limit

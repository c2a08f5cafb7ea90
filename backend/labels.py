"""The container label schema: what a launch writes on its container, and how every reader reads it back.

Docker's labels are the only record of a deployment (docs/architecture.md, "Docker holds
everything that must survive"), so they are a file format: one encoder, one decoder, and a
schema version. ``modeldeck.version`` has been written on every container since the first
release and says which schema the other labels follow; a container without it is read as
schema 1. A later schema reads older containers by branching on ``schema`` in ``decode``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

LABEL_PREFIX = "modeldeck."
#: On every container ModelDeck creates; the engine lists and touches nothing without it.
MANAGED_LABEL = f"{LABEL_PREFIX}managed"
#: The schema version label (written as "1" since the first release).
SCHEMA_LABEL = f"{LABEL_PREFIX}version"
SCHEMA_VERSION = 1
ID_LABEL = f"{LABEL_PREFIX}id"
SERVED_NAME_LABEL = f"{LABEL_PREFIX}served_name"
CONFIG_HASH_LABEL = f"{LABEL_PREFIX}config_hash"
#: Models on demand (backend/lifecycle.py): the values given at launch; later changes live in lifecycle.json.
ON_DEMAND_LABEL = f"{LABEL_PREFIX}on_demand"
IDLE_TTL_LABEL = f"{LABEL_PREFIX}idle_ttl_s"
PINNED_LABEL = f"{LABEL_PREFIX}pinned"
MEM_LIMIT_LABEL = f"{LABEL_PREFIX}mem_limit"


def _float_or_none(raw: str) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if 0 <= value <= 30 * 86400 else None


def _split(value: str) -> tuple[str, ...]:
    return tuple(v for v in value.split(",") if v)


def _model_check(raw: str) -> dict | None:
    """A model check read back from its label; None when absent or not one a launch writes."""
    if not raw:
        return None
    try:
        check = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(check, dict) or check.get("method") not in ("GET", "POST") \
            or not str(check.get("path", "")).startswith("/"):
        return None
    return check


@dataclass(frozen=True)
class DeploymentLabels:
    """What a deployment's container says about itself (never a secret's value: only names).

    Attributes:
        id: the deployment id (the container is ``modeldeck-<id>``).
        model_check: the recipe's filled-in model check (method, path, body), so that a
            backend started later asks the server the same question; None when the recipe has none.
        env, secrets: the names of the variables given to the container (values stay in Docker).
        custom_entrypoint: the recipe replaced the image's entrypoint (the compose export needs it).
        port_requested: the host port the launch asked for; None when Docker assigned one.
        launched_from: ``home_id`` of the backend whose launch created it.
        on_demand, idle_ttl_s, pinned: the lifecycle values given at launch (a container made before
            them reads as on demand, default time-out, not pinned).
        mem_limit: the container's memory limit in bytes, None when it has none.
        schema: the schema version the container was written with.
    """

    id: str
    recipe: str = ""
    model: str = ""
    served_name: str = ""
    config_hash: str = ""
    gpus: tuple[str, ...] = ()
    internal_port: int | None = None
    openai_base: str = "/v1"
    health_path: str = "/health"
    models_path: str | None = None
    model_check: dict | None = None
    env: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    custom_entrypoint: bool = False
    port_requested: int | None = None
    launched_from: str = ""
    on_demand: bool = True
    idle_ttl_s: float | None = None
    pinned: bool = False
    mem_limit: int | None = None
    schema: int = SCHEMA_VERSION

    @property
    def readiness_paths(self) -> tuple[str, ...]:
        """The paths that must answer 200 before a server counts as up: health, then models where it has one."""
        return (self.health_path, self.models_path) if self.models_path else (self.health_path,)

    def encode(self) -> dict[str, str]:
        """The labels to write on the container, always in the current schema."""
        return {
            MANAGED_LABEL: "true",
            SCHEMA_LABEL: str(SCHEMA_VERSION),
            ID_LABEL: self.id,
            f"{LABEL_PREFIX}recipe": self.recipe,
            f"{LABEL_PREFIX}model": self.model,
            SERVED_NAME_LABEL: self.served_name,
            CONFIG_HASH_LABEL: self.config_hash,
            f"{LABEL_PREFIX}gpus": ",".join(self.gpus),
            f"{LABEL_PREFIX}internal_port": str(self.internal_port) if self.internal_port is not None else "",
            f"{LABEL_PREFIX}openai_base": self.openai_base,
            f"{LABEL_PREFIX}health_path": self.health_path,
            f"{LABEL_PREFIX}models_path": self.models_path or "",
            f"{LABEL_PREFIX}model_check": json.dumps(self.model_check, sort_keys=True) if self.model_check else "",
            f"{LABEL_PREFIX}env": ",".join(self.env),
            f"{LABEL_PREFIX}secrets": ",".join(self.secrets),
            f"{LABEL_PREFIX}entrypoint": "custom" if self.custom_entrypoint else "image",
            f"{LABEL_PREFIX}port_requested": str(self.port_requested or ""),
            f"{LABEL_PREFIX}launched_from": self.launched_from,
            ON_DEMAND_LABEL: "true" if self.on_demand else "false",
            IDLE_TTL_LABEL: "" if self.idle_ttl_s is None else f"{self.idle_ttl_s:g}",
            PINNED_LABEL: "true" if self.pinned else "false",
            MEM_LIMIT_LABEL: str(self.mem_limit or ""),
        }

    @classmethod
    def decode(cls, labels: dict[str, str], default_id: str = "") -> DeploymentLabels:
        """Read a container's labels, of any schema up to the current one.

        Missing labels take their defaults (a container made by hand with only the managed
        label still reads); the id falls back to ``default_id`` (the container's name), the
        served name to the id. Never raises.
        """
        def get(name: str, default: str = "") -> str:
            return labels.get(f"{LABEL_PREFIX}{name}", default)

        try:
            schema = int(labels.get(SCHEMA_LABEL) or SCHEMA_VERSION)
        except ValueError:
            schema = SCHEMA_VERSION
        dep_id = labels.get(ID_LABEL, default_id)
        try:
            internal_port: int | None = int(get("internal_port"))
        except ValueError:
            internal_port = None
        requested = get("port_requested")
        return cls(
            id=dep_id, recipe=get("recipe"), model=get("model"), served_name=get("served_name", dep_id),
            config_hash=get("config_hash"), gpus=_split(get("gpus")), internal_port=internal_port,
            openai_base=get("openai_base", "/v1"), health_path=get("health_path") or "/health",
            models_path=get("models_path") or None, model_check=_model_check(get("model_check")),
            env=_split(get("env")), secrets=_split(get("secrets")), custom_entrypoint=get("entrypoint") == "custom",
            port_requested=int(requested) if requested.isdigit() else None, launched_from=get("launched_from"),
            on_demand=get("on_demand", "true") != "false", idle_ttl_s=_float_or_none(get("idle_ttl_s")),
            pinned=get("pinned") == "true",
            mem_limit=int(get("mem_limit")) if get("mem_limit").isdigit() else None, schema=schema)


def id_filter(dep_id: str) -> dict[str, str]:
    """The label filter that finds the container of deployment ``dep_id`` (for ``Engine.list``)."""
    return {ID_LABEL: dep_id}

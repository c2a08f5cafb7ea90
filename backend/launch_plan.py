"""Turning a launch request and a recipe into the exact ContainerSpec to create (pure; no I/O but the file system)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.catalog import GpuNeed, Recipe
from backend.envnames import is_env_name, not_env_name
from backend.errors import InvalidLaunch
from backend.settings import Settings, parse_bytes
from backend.labels import DeploymentLabels
from backend.spec import ContainerSpec, Mount

#: Hub ids ("Qwen/Qwen2.5-0.5B-Instruct"), Ollama tags ("llama3.2:1b"), GGUF refs ("org/repo:Q4_K_M").
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,255}$")
SERVED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,127}$")
GPU_ID_RE = re.compile(r"^(all|[0-9]{1,3}|GPU-[0-9a-fA-F-]{8,64}|MIG-[0-9a-fA-F/-]{8,80})$")
#: Variables that would let a launch change how the runtime itself loads code.
FORBIDDEN_ENV = frozenset({"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONSTARTUP"})
LOCAL_MODEL_TARGET = "/models"
#: Variables given at launch whose values are treated as secrets: passed to the container, never stored.
MAX_IDLE_TTL_S = 30 * 86400
MIN_MEM_LIMIT = 6 * 1024 * 1024  # Docker refuses less
SECRET_NAME_RE = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|_KEY$|CREDENTIAL)", re.IGNORECASE)


class LaunchRequest(BaseModel):
    """What a person or a script asks to launch; everything else comes from the recipe."""

    model_config = ConfigDict(extra="forbid")

    recipe: Annotated[str, Field(min_length=1, max_length=64, examples=["demo"])]
    model: Annotated[str, Field(min_length=1, max_length=4096, examples=["demo-tiny"],
                                description="Hub id, Ollama tag, or an absolute path inside a configured model folder.")]
    served_name: Annotated[str | None, Field(max_length=128, examples=["demo"],
                                             description="Name OpenAI clients use as `model`; defaults from the model.")] = None
    gpus: Annotated[list[str] | None, Field(max_length=64, examples=[["0"]],
                                            description="GPU indices or UUIDs, or ['all']; [] for none; "
                                                        "default: all when the recipe needs a GPU.")] = None
    port: Annotated[int | None, Field(ge=1024, le=65535, description="Host port on 127.0.0.1; automatic when empty.")] = None
    env: Annotated[dict[str, str], Field(max_length=64)] = {}
    args: Annotated[list[str], Field(max_length=64, description="Extra arguments appended to the server's command.")] = []
    image_source: Annotated[Literal["auto", "published", "local"], Field(
        description="For recipes with a local build (llama.cpp): 'published' runs the registry image, 'local' the "
                    "CPU-only image built on this machine from source, 'auto' the published one when it is here "
                    "or can be pulled, else the local one.")] = "auto"
    # Models on demand (docs/on-demand.md). Not part of the configuration hash except mem_limit:
    # launching again with other values adopts the deployment and applies them like a PATCH.
    on_demand: Annotated[bool, Field(description="A /v1 request naming this model starts it when it is unloaded "
                                                 "(stopped).")] = True
    idle_ttl_s: Annotated[float | None, Field(ge=0, le=MAX_IDLE_TTL_S, description=(
        "Unload after this many seconds with no request in flight; null: the backend's default "
        "(MODELDECK_IDLE_TTL_S, unset = never); 0: never."))] = None
    pinned: Annotated[bool, Field(description="ModelDeck never unloads it (neither the idle time-out nor to make "
                                              "room for another model).")] = False
    node: Annotated[str | None, Field(max_length=32, pattern=r"^[a-z0-9][a-z0-9-]*$", examples=["local"], description=(
        "Where to launch (backend/federation.py): null or 'local' this machine; a node's name (GET /api/nodes) "
        "that machine; 'auto' the machine and GPU with the most memory free now that fits the model, by each "
        "one's own fit check (GET /api/placement shows them)."))] = None
    mem_limit: Annotated[int | str | None, Field(description=(
        "The container's memory limit (bytes, or '512m', '2g'); also what it counts as needing in host "
        "memory when it runs on the CPU."), examples=["2g"])] = None

    @field_validator("mem_limit", mode="before")
    @classmethod
    def _mem_limit(cls, v: object) -> int | None:
        if v is None:
            return None
        size = parse_bytes(v)
        if size < MIN_MEM_LIMIT:
            raise ValueError(f"{v!r} is below Docker's smallest memory limit, 6m.")
        return size

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not is_env_name(k):
                raise ValueError(not_env_name(k))
            if k in FORBIDDEN_ENV:
                raise ValueError(f"'{k}' may not be set: it changes how the runtime loads code.")
            if "\x00" in val or len(val) > 4096:
                raise ValueError(f"the value of '{k}' is too long or holds a NUL byte.")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        for a in v:
            if "\x00" in a or "\n" in a or len(a) > 1024:
                raise ValueError("each argument must be one line of at most 1024 characters.")
        return v

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        for g in v:
            if not GPU_ID_RE.match(g):
                raise ValueError(f"'{g}' is not a GPU index, GPU UUID or 'all'.")
        if "all" in v and len(v) > 1:
            raise ValueError("'all' cannot be combined with other GPU ids.")
        return v


def home_id(settings: Settings) -> str:
    """A stable id of the backend's home folder, written on the containers its launches create.

    A backend restarted on the same home finishes launches of its own that a kill interrupted;
    a launch from another home (another backend on the same engine) may still be running.
    """
    return hashlib.sha256(str(settings.home.expanduser().resolve()).encode()).hexdigest()[:16]


def deployment_id_for(served_name: str) -> str:
    """A stable, Docker-safe id for a served name: the container is called ``modeldeck-<id>``."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", served_name.lower()).strip("-._")
    return (slug or "model")[:60]


def resolve_model(model: str, settings: Settings) -> tuple[str, Mount | None]:
    """Validate ``model``; for a local path, return the in-container path and its read-only mount.

    Raises:
        InvalidLaunch: the id has characters that do not belong in a model id, tries ``..``,
            or is a host path outside the configured model folders.
    """
    if model.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", model):
        path = Path(model).expanduser()
        if ".." in path.parts:
            raise InvalidLaunch(f"Model path '{model}' contains '..'.", hint="Give the full path without '..'.")
        resolved = path.resolve()
        for folder in settings.model_dirs:
            root = folder.expanduser().resolve()
            if resolved == root or root in resolved.parents:
                if not resolved.exists():
                    raise InvalidLaunch(f"Model path '{model}' does not exist.")
                rel = resolved.relative_to(root)
                target = str(PurePosixPath(LOCAL_MODEL_TARGET, *rel.parts))
                return target, Mount(source=str(root), target=LOCAL_MODEL_TARGET, kind="bind", read_only=True)
        folders = ", ".join(str(f) for f in settings.model_dirs) or "none configured"
        raise InvalidLaunch(
            f"Model path '{model}' is outside the model folders ModelDeck may mount ({folders}).",
            hint="Move the model into a model folder, or add its folder to MODELDECK_MODEL_DIRS / Settings.")
    if not MODEL_ID_RE.match(model) or ".." in model.split("/") or "//" in model:
        raise InvalidLaunch(
            f"'{model}' is not a valid model id.",
            hint="Use a hub id like 'Qwen/Qwen2.5-0.5B-Instruct', an Ollama tag like 'llama3.2:1b', "
                 "or an absolute path inside a model folder; no spaces, '..' or shell characters.")
    return model, None


def default_served_name(recipe: Recipe, model: str) -> str:
    if recipe.server.served_name_is_model:
        return model
    if recipe.defaults.served_name and model == recipe.defaults.model:
        return recipe.defaults.served_name
    if model.startswith("/"):
        return PurePosixPath(model).stem or "model"
    return model


def choose_gpus(recipe: Recipe, requested: list[str] | None, gpu_runtime: bool) -> tuple[str, ...]:
    """The GPUs to request.

    Raises:
        InvalidLaunch: GPUs asked of a CPU-only recipe, or none given to a GPU-only one.
    """
    need = recipe.gpu.need
    if requested is None:
        if need is GpuNeed.required or (need is GpuNeed.optional and gpu_runtime):
            return ("all",)
        return ()
    if requested and need is GpuNeed.none:
        raise InvalidLaunch(f"The {recipe.title} runtime runs on the CPU only; it cannot use GPUs.",
                            hint="Launch it without GPUs.")
    if not requested and need is GpuNeed.required:
        raise InvalidLaunch(f"The {recipe.title} runtime needs a GPU.", hint="Pick at least one GPU.")
    return tuple(requested)


def context_digest(context: Path, *extra: str) -> str:
    """A short hash of a build folder's files (names and contents) and ``extra`` strings."""
    digest = hashlib.sha256("\0".join(extra).encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(context)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_tag(recipe: Recipe, context: Path, base_image: str) -> str:
    """Tag of a locally built image: changes whenever the build context or the base image does."""
    return f"modeldeck/{recipe.name}:{context_digest(context, base_image)}"


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format_map(values)


def fill_placeholders(value, values: dict[str, str]):
    """Fill ``{model}``-style placeholders in every string of a JSON-like value (keys included)."""
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, list):
        return [fill_placeholders(v, values) for v in value]
    if isinstance(value, dict):
        return {fill_placeholders(k, values): fill_placeholders(v, values) for k, v in value.items()}
    return value


def gpu_count(recipe: Recipe, gpus: tuple[str, ...], machine_gpus: int | None) -> int:
    """How many GPUs the launch uses: the ones picked, or with "all" every GPU of the machine.

    Raises:
        InvalidLaunch: "all" for a recipe that must be told the count (``{gpu_count}``) on a
            machine whose GPUs cannot be counted.
    """
    if gpus != ("all",):
        return len(gpus)
    if machine_gpus:
        return machine_gpus
    if any("{gpu_count}" in a for a in (*recipe.server.command, *recipe.gpu.args)):
        raise InvalidLaunch(
            f"{recipe.title} must be told how many GPUs it uses, and ModelDeck cannot count this machine's "
            "GPUs (NVML does not answer).", hint="Pick the GPUs explicitly (e.g. gpus: [\"0\", \"1\"]).")
    return 1


def plan(recipe: Recipe, req: LaunchRequest, settings: Settings, *, image: str, host_port: int,
         gpu_runtime: bool, machine_gpus: int | None = None) -> ContainerSpec:
    """The container to create for ``req``.

    Args:
        image: the image reference to run (pulled or locally built tag).
        host_port: the 127.0.0.1 port to publish the server on; 0: Docker assigns one when it starts.
        gpu_runtime: whether the engine can give containers GPUs (decides the default).
        machine_gpus: how many GPUs the machine has (None: unknown); fills ``{gpu_count}``
            when the launch asks for all of them.

    Raises:
        InvalidLaunch: a field the rules refuse (see ``resolve_model``, ``choose_gpus``, ``gpu_count``).
    """
    model_in_container, model_mount = resolve_model(req.model, settings)
    served = req.served_name or default_served_name(recipe, req.model)
    if recipe.server.served_name_is_model and served != req.model:
        raise InvalidLaunch(f"{recipe.title} serves a model under its own name: the served name must be "
                            f"'{req.model}'.", hint="Leave the served name empty.")
    if not SERVED_NAME_RE.match(served):
        raise InvalidLaunch(f"Served name '{served}' has characters OpenAI clients and ModelDeck cannot use.",
                            hint="Use letters, digits and . _ - / : only.")
    gpus = choose_gpus(recipe, req.gpus, gpu_runtime)
    values = {"model": model_in_container, "served_name": served, "port": str(recipe.server.port),
              "gpu_count": str(gpu_count(recipe, gpus, machine_gpus) if gpus else 0)}
    command = [_fill(a, values) for a in recipe.server.command_for(local_model=model_mount is not None)]
    if gpus:
        command += [_fill(a, values) for a in recipe.gpu.args]
    command += req.args
    entrypoint = tuple(_fill(a, values) for a in recipe.server.entrypoint) if recipe.server.entrypoint else None

    env = dict(recipe.env.values)
    secret_values = {k: v for k, v in req.env.items() if k in recipe.env.secrets or SECRET_NAME_RE.search(k)}
    env.update({k: v for k, v in req.env.items() if k not in secret_values})
    secrets = tuple(dict.fromkeys([*recipe.env.secrets, *secret_values]))

    mounts: list[Mount] = []
    for cache in recipe.caches:
        host = settings.cache_dirs.get(cache.kind)
        if host is not None:
            mounts.append(Mount(source=str(host.expanduser().resolve()), target=cache.target, kind="bind"))
        else:
            mounts.append(Mount(source=f"modeldeck-cache-{cache.kind}", target=cache.target, kind="volume"))
    if model_mount is not None:
        mounts.append(model_mount)

    dep_id = deployment_id_for(served)
    identity = {
        "recipe": recipe.name, "image": image, "model": req.model, "served_name": served,
        "command": command, "entrypoint": entrypoint, "env": env, "secrets": secrets, "gpus": gpus,
        "mounts": [m.__dict__ for m in mounts], "port": req.port,
        "shm": recipe.resources.shm_size, "ipc": recipe.resources.ipc,
        "ulimits": sorted(recipe.resources.ulimits.items()),
    }
    if req.mem_limit:  # only when set, so that the hash of every launch without one stays as it was
        identity["mem_limit"] = req.mem_limit
    config_hash = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    labels = {**settings.extra_labels, **DeploymentLabels(
        id=dep_id, recipe=recipe.name, model=req.model, served_name=served, config_hash=config_hash, gpus=gpus,
        internal_port=recipe.server.port, openai_base=recipe.server.openai_base,
        health_path=recipe.readiness.health_path, models_path=recipe.readiness.models_path or None,
        # The filled-in model check, so that a backend started later asks the same question.
        model_check=fill_placeholders(recipe.readiness.model_check.model_dump(), values)
        if recipe.readiness.model_check else None,
        env=tuple(sorted(env)), secrets=secrets, custom_entrypoint=entrypoint is not None,
        port_requested=req.port, launched_from=home_id(settings), on_demand=req.on_demand,
        idle_ttl_s=req.idle_ttl_s, pinned=req.pinned, mem_limit=req.mem_limit).encode()}
    return ContainerSpec(
        name=f"modeldeck-{dep_id}", image=image, command=tuple(command), entrypoint=entrypoint,
        internal_port=recipe.server.port, host_port=host_port, labels=labels, environment=env,
        secret_env=secrets, gpu_ids=gpus, mounts=tuple(mounts), shm_size=recipe.resources.shm_size,
        ipc_mode=recipe.resources.ipc, ulimits=tuple(sorted(recipe.resources.ulimits.items())),
        secret_values=secret_values, mem_limit=req.mem_limit)

"""The runtime catalog: one validated TOML recipe per model server in containers/."""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backend.envnames import is_env_name, not_env_name
from backend.errors import RecipeError, RecipeNotFound

#: Placeholders a recipe's command may use; launch fills them in. ``gpu_count`` is the number of
#: GPUs the launch uses (0 without GPUs; with "all", the number of GPUs on the machine).
PLACEHOLDERS = frozenset({"model", "served_name", "port", "gpu_count"})
#: Resource limits a recipe may raise (what PyTorch/NCCL servers need); nothing that grants privileges.
ULIMIT_NAMES = frozenset({"memlock", "stack", "nofile"})
#: A whole argument of a command that becomes ``model_args`` or ``local_model_args`` (see ServerSpec).
MODEL_ARGS = "{model_args}"
_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_SIZE = r"^[0-9]+[bkmg]?$"


def _check_placeholders(text: str) -> None:
    """Refuse any ``{...}`` in ``text`` that launch would not fill in (or could not format).

    Raises:
        ValueError: naming the placeholder and the allowed ones.
    """
    for _, name, spec, conv in string.Formatter().parse(text):
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conv:
            raise ValueError(
                f"unknown placeholder '{{{name}}}' in {text!r}; allowed: "
                + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))


def _check_body(value: object) -> None:
    # post_start bodies are JSON documents whose strings launch fills like the command.
    if isinstance(value, str):
        _check_placeholders(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_placeholders(key)
            _check_body(item)
    elif isinstance(value, list):
        for item in value:
            _check_body(item)


def _absolute_path(v: str) -> str:
    """An HTTP path on the model server.

    Raises:
        ValueError: it does not start with '/'.
    """
    if not v.startswith("/"):
        raise ValueError("must start with '/'")
    return v


class GpuNeed(str, Enum):
    required = "required"
    optional = "optional"
    none = "none"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSpec(_Strict):
    """Where the container image comes from: a registry reference, or a local build."""

    ref: str | None = Field(None, description="Image reference pulled from a registry.")
    gpu_ref: str | None = Field(None, description="Image used instead of `ref` when GPUs are requested.")
    build: str | None = Field(None, description="Build context folder, relative to containers/.")
    local_build: str | None = Field(
        None, description="Beside `ref`: a folder in containers/ (Dockerfile + source.toml) built on this "
                          "machine when `ref` cannot be pulled, or when a launch asks for the local image "
                          "(backend/local_images.py). Such builds are CPU-only.")

    @model_validator(mode="after")
    def _one_source(self) -> "ImageSpec":
        if bool(self.ref) == bool(self.build):
            raise ValueError("give exactly one of 'ref' (pull) or 'build' (local build context)")
        if self.local_build is not None and not self.ref:
            raise ValueError("'local_build' is a fallback for 'ref': give 'ref' too (a 'build' recipe is built anyway)")
        for ref in (self.ref, self.gpu_ref):
            if ref is not None and not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*", ref):
                raise ValueError(f"'{ref}' is not a valid image reference")
        for key in ("build", "local_build"):
            folder = getattr(self, key)
            if folder is not None and (not folder or ".." in Path(folder).parts or Path(folder).is_absolute()):
                raise ValueError(f"'{key}' must be a folder inside containers/")
        return self


class ServerSpec(_Strict):
    """How the server inside the container is started and reached."""

    port: Annotated[int, Field(ge=1, le=65535)]
    openai_base: str = "/v1"
    command: list[str] = Field(default_factory=list)
    entrypoint: list[str] | None = None
    startup_timeout: Annotated[float, Field(gt=0, le=7200)] = 600.0
    served_name_is_model: bool = Field(
        False, description="The runtime serves the model under its own id (Ollama): served name = model.")
    model_args: list[str] | None = Field(
        None, description=f"What the argument {MODEL_ARGS!r} of `command` becomes for a model id (a hub "
                          "repo, a tag), e.g. ['-hf', '{model}'].")
    local_model_args: list[str] | None = Field(
        None, description=f"What {MODEL_ARGS!r} becomes for a local path from a model folder, e.g. "
                          "['-m', '{model}']; default: `model_args`.")
    native_apis: list[Literal["anthropic_messages", "openai_responses"]] = Field(
        default_factory=list,
        description="APIs the server answers itself beside chat completions, checked against its source: "
                    "'anthropic_messages' (POST /v1/messages, /v1/messages/count_tokens) and "
                    "'openai_responses' (POST /v1/responses). /v1 passes these through; Messages is "
                    "translated to chat completions for a runtime without it.")

    @field_validator("openai_base")
    @classmethod
    def _base(cls, v: str) -> str:
        return _absolute_path(v).rstrip("/") or "/"

    @field_validator("command", "entrypoint", "model_args", "local_model_args")
    @classmethod
    def _placeholders(cls, v: list[str] | None, info) -> list[str] | None:
        for arg in v or []:
            if arg == MODEL_ARGS and info.field_name == "command":
                continue  # expanded into several arguments; see _model_args below
            if MODEL_ARGS in arg:
                raise ValueError(f"{MODEL_ARGS!r} must be a whole argument of 'command', nothing else: {arg!r}")
            _check_placeholders(arg)
        return v

    @model_validator(mode="after")
    def _model_args(self) -> "ServerSpec":
        uses = self.command.count(MODEL_ARGS)
        if uses > 1:
            raise ValueError(f"'command' may hold {MODEL_ARGS!r} once")
        if uses and not self.model_args:
            raise ValueError(f"'command' holds {MODEL_ARGS!r}: say what it becomes in 'model_args'")
        if not uses and (self.model_args is not None or self.local_model_args is not None):
            raise ValueError(f"'model_args' and 'local_model_args' need {MODEL_ARGS!r} in 'command'")
        if self.native_apis and self.openai_base != "/v1":
            # Both APIs live under /v1 on the server, found by the proxy beside the OpenAI base.
            raise ValueError("'native_apis' are served under /v1: they need openai_base = \"/v1\"")
        return self

    def command_for(self, local_model: bool) -> list[str]:
        """``command`` with ``{model_args}`` expanded for a model id or a local path (placeholders unfilled)."""
        args = (self.local_model_args if local_model and self.local_model_args is not None else self.model_args) or []
        out: list[str] = []
        for arg in self.command:
            out.extend(args if arg == MODEL_ARGS else [arg])
        return out


class _ServerCall(_Strict):
    """An HTTP call to the model server: a path and a JSON body whose strings launch fills like the command."""

    path: str
    body: dict = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        _check_placeholders(_absolute_path(v))
        return v

    @field_validator("body")
    @classmethod
    def _body(cls, v: dict) -> dict:
        _check_body(v)
        return v


class ModelCheck(_ServerCall):
    """A call that answers 200 only once the chosen model is there (Ollama: ``POST /api/show``)."""

    method: Literal["GET", "POST"] = "GET"


class ReadinessSpec(_Strict):
    """How launch decides that the server is ready to answer."""

    health_path: str = "/health"
    models_path: str | None = Field(None, description="Also wait for this path (e.g. /v1/models) to answer.")
    model_check: ModelCheck | None = Field(
        None, description="Ready only when this answers 200 (after post_start), at launch and after a restart.")
    interval: Annotated[float, Field(gt=0, le=60)] = 1.0

    @field_validator("health_path", "models_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return v if v is None else _absolute_path(v)


class PostStartCall(_ServerCall):
    """An HTTP call made once the server is healthy (Ollama pulls its model this way)."""

    method: Literal["GET", "POST", "PUT"] = "POST"
    timeout: Annotated[float, Field(gt=0, le=7200)] = 1800.0


class GpuSpec(_Strict):
    need: GpuNeed = GpuNeed.optional
    args: list[str] = Field(default_factory=list, description="Extra args added when GPUs are used.")

    @field_validator("args")
    @classmethod
    def _placeholders(cls, v: list[str]) -> list[str]:
        for arg in v:
            _check_placeholders(arg)
        return v


class CacheMount(_Strict):
    """A model cache the runtime keeps, mounted from a host folder or a named volume."""

    kind: Annotated[str, Field(pattern=_NAME)]
    target: str

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("must be an absolute path inside the container, without '..'")
        return v


class ResourceSpec(_Strict):
    shm_size: Annotated[str, Field(pattern=_SIZE)] | None = None
    ipc: Literal["private", "shareable"] | None = None
    ulimits: dict[str, Annotated[int, Field(ge=-1)]] = Field(
        default_factory=dict, description="Soft and hard limit by name (memlock, stack, nofile); -1: unlimited.")

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, v: dict[str, int]) -> dict[str, int]:
        for name in v:
            if name not in ULIMIT_NAMES:
                raise ValueError(f"'{name}' is not a limit a recipe may set; allowed: "
                                 + ", ".join(sorted(ULIMIT_NAMES)))
        return v


class EnvSpec(_Strict):
    values: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(
        default_factory=list,
        description="Names passed through from the backend's environment at launch; never stored.")

    @field_validator("values")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not is_env_name(k):
                raise ValueError(not_env_name(k))
        return v

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, v: list[str]) -> list[str]:
        for k in v:
            if not is_env_name(k):
                raise ValueError(not_env_name(k))
        return v

    @model_validator(mode="after")
    def _no_overlap(self) -> "EnvSpec":
        # A name that is both would put the secret's value in the recipe (and in exports).
        both = sorted(set(self.values) & set(self.secrets))
        if both:
            raise ValueError(f"'{both[0]}' is listed both as a value and as a secret")
        return self


class Defaults(_Strict):
    """What the launch dialog offers before a person types anything."""

    model: str | None = None
    served_name: str | None = None


class Recipe(_Strict):
    """One runtime: everything needed to start it as a container, and nothing more."""

    name: Annotated[str, Field(pattern=_NAME)]
    title: str
    description: str = ""
    homepage: str | None = None
    image: ImageSpec
    server: ServerSpec
    readiness: ReadinessSpec = ReadinessSpec()
    gpu: GpuSpec = GpuSpec()
    caches: list[CacheMount] = Field(default_factory=list)
    resources: ResourceSpec = ResourceSpec()
    env: EnvSpec = EnvSpec()
    defaults: Defaults = Defaults()
    post_start: list[PostStartCall] = Field(default_factory=list)
    source: str = Field("", exclude=True, description="File the recipe was read from.")

    def image_for(self, use_gpu: bool) -> str | None:
        """The registry reference to run, or None for a locally built image."""
        if use_gpu and self.image.gpu_ref:
            return self.image.gpu_ref
        return self.image.ref


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_recipe(path: Path) -> Recipe:
    """Read and validate one recipe file.

    Raises:
        RecipeError: naming the file and the first field that is wrong.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path.name}: not valid TOML: {exc}",
                          hint="Fix the syntax; see the other recipes in containers/ for the format.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path.name}: cannot be read: {exc}") from exc
    except RecursionError:  # tomllib recurses per nesting level: "a = [[[[...": refuse, don't crash
        raise RecipeError(f"{path.name}: not valid TOML: nested too deeply") from None
    if "source" in data:  # set by the loader, never by the file
        raise RecipeError(f"{path.name}: field 'source': Extra inputs are not permitted",
                          details={"file": path.name, "field": "source"})
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise RecipeError(f"{path.name}: field 'name': is '{data['name']}' but must match the file name "
                          f"'{path.stem}'", details={"file": path.name, "field": "name"})
    try:
        return Recipe(**data, source=str(path))
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = _field_path(first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise RecipeError(f"{path.name}: field '{field_name}': {msg}",
                          details={"file": path.name, "field": field_name,
                                   "errors": [f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()]}
                          ) from None
    except TypeError as exc:  # e.g. a top-level key that is not a string
        raise RecipeError(f"{path.name}: {exc}") from None
    except RecursionError:  # a post_start body nested thousands of levels deep
        raise RecipeError(f"{path.name}: nested too deeply to validate") from None


@dataclass
class Catalog:
    """The recipes that loaded, and the files that were refused with their reason."""

    folder: Path
    recipes: dict[str, Recipe] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> Recipe:
        """The recipe called ``name``.

        Raises:
            RecipeNotFound: with the names that do exist.
        """
        try:
            return self.recipes[name]
        except KeyError:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise RecipeNotFound(f"No recipe named '{name}'.", hint=f"Known recipes: {known}.") from None

    def native_apis(self, name: str) -> frozenset[str]:
        """The APIs recipe ``name``'s server answers natively (``ServerSpec.native_apis``); none when unknown."""
        recipe = self.recipes.get(name)
        return frozenset(recipe.server.native_apis) if recipe is not None else frozenset()


def load_catalog(folder: Path) -> Catalog:
    """Load every ``*.toml`` in ``folder``; a bad file is recorded in ``errors`` and skipped."""
    catalog = Catalog(folder=folder)
    for path in sorted(folder.glob("*.toml")):
        try:
            recipe = load_recipe(path)
        except RecipeError as exc:
            catalog.errors[path.name] = exc.message
        else:
            catalog.recipes[recipe.name] = recipe
    return catalog

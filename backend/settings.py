"""Settings read from MODELDECK_* environment variables, behind a cached get_settings()."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from platformdirs import user_config_path
from pydantic import Field, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8765
ENV_PREFIX = "MODELDECK_"
CACHE_ENV_PREFIX = "MODELDECK_CACHE_DIR_"
#: The folder's name under the platform's config folder. Lower case outside macOS and Windows:
#: Linux users have had ~/.config/modeldeck since the first version, and it must not move.
#: desktop/settings_store.py asks platformdirs the same question with the same name and flags.
APP_DIR_NAME = "ModelDeck" if sys.platform in ("darwin", "win32") else "modeldeck"


def default_home() -> Path:
    """The platform's per-user folder for ModelDeck's config, token and data.

    ``$XDG_CONFIG_HOME/modeldeck`` or ``~/.config/modeldeck`` on Linux, ``~/Library/Application
    Support/ModelDeck`` on macOS, ``%APPDATA%\\ModelDeck`` on Windows (the roaming profile).
    """
    home = user_config_path(APP_DIR_NAME, appauthor=False, roaming=True)
    if sys.platform == "darwin":
        # platformdirs honours $XDG_CONFIG_HOME on macOS too, which earlier versions of ModelDeck
        # did not: a token and history already in Application Support stay where they are.
        legacy = Path.home() / "Library" / "Application Support" / APP_DIR_NAME
        if home != legacy and legacy.is_dir() and not home.is_dir():
            return legacy
    return home


class _Environment(EnvSettingsSource):
    """``MODELDECK_<FIELD>`` from a given mapping (the process environment by default).

    Cache folders come from one variable per kind, ``MODELDECK_CACHE_DIR_<KIND>``, rather than
    from one ``MODELDECK_CACHE_DIRS`` value.
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Names match without regard to case (the Windows rule), as pydantic-settings does for os.environ.
        return {key.lower(): value for key, value in self._environ.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name == "cache_dirs":  # one variable per kind, below
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        caches = {key[len(CACHE_ENV_PREFIX):].lower(): Path(value).expanduser()
                  for key, value in self._environ.items() if key.startswith(CACHE_ENV_PREFIX) and value}
        if caches:
            values["cache_dirs"] = caches
        return values


class Settings(BaseSettings):
    """Everything the backend can be told from outside.

    Every field has an environment variable ``MODELDECK_<FIELD>``; cache folders are
    read from ``MODELDECK_CACHE_DIR_<KIND>`` (for example
    ``MODELDECK_CACHE_DIR_HUGGINGFACE=~/.cache/huggingface``). ``Settings(...)`` takes only
    what it is given; :meth:`from_env` reads the environment.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    home: Path = Field(default_factory=default_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    docker_host: str | None = None
    catalog_dir: Path = REPO_ROOT / "containers"
    # Base image of the images built here (the demo model, local builds). None: chosen at launch
    # from what the engine has (backend/base_image.py), so a backend started without the scripts
    # finds the image scripts/make-base-image made.
    demo_base_image: str | None = None
    # Host folders for the runtimes' model caches, by cache kind ("huggingface",
    # "ollama", ...). A kind without a folder gets a named Docker volume instead.
    cache_dirs: dict[str, Path] = Field(default_factory=dict)
    # Host folders whose files may be served as local models (mounted read-only);
    # from the environment as MODELDECK_MODEL_DIRS, separated like PATH.
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    readiness_timeout_s: float | None = None  # overrides the recipes' own when set
    max_body_bytes: int = 8 * 1024 * 1024
    token: str | None = None  # fixed token (tests, headless use); else the token file
    # Labels added to every container ModelDeck creates (tests mark their run with one);
    # from the environment as MODELDECK_EXTRA_LABELS="key=value,key2=value2".
    extra_labels: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # The Hugging Face Hub the model library searches and downloads from (MODELDECK_HF_ENDPOINT);
    # None: the HF_ENDPOINT variable huggingface_hub itself reads, else https://huggingface.co.
    hf_endpoint: str | None = None
    # Models on demand (docs/on-demand.md): unload a deployment after this many idle seconds when its
    # own idle_ttl_s is unset (None: never), and the most host memory ModelDeck's running CPU
    # deployments may hold together (bytes, or "8g"; None: what the host has available).
    idle_ttl_s: float | None = Field(default=None, ge=0, le=30 * 86400)
    host_memory_budget: int | None = None
    # Serving to other machines (docs/nodes.md): the server's certificate and key, and the CA whose
    # client certificates are required. A non-loopback host is refused without all three.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Constructed directly, settings are what the caller passed and nothing else (tests build
        # many backends in one process whose environment names the suite's own); from_env adds
        # the environment.
        return (init_settings,)

    @field_validator("home", "catalog_dir", mode="before")
    @classmethod
    def _expand_home(cls, value: Any) -> Any:
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_folders(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [Path(p).expanduser() for p in value.split(os.pathsep) if p]
        return value

    @field_validator("extra_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return dict(item.split("=", 1) for item in value.split(",") if "=" in item)
        return value

    @field_validator("host_memory_budget", mode="before")
    @classmethod
    def _bytes(cls, value: Any) -> Any:
        return None if value in (None, "") else parse_bytes(value)

    @field_validator("idle_ttl_s", mode="before")
    @classmethod
    def _empty_ttl(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("demo_base_image", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return value or None  # empty: chosen by what the engine has

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def history_path(self) -> Path:
        return self.home / "history.sqlite3"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from ``MODELDECK_*`` variables, then apply ``overrides``.

        Args:
            environ: the variables to read; the process environment when None.
            overrides: field values that win over the environment.
        Raises:
            pydantic.ValidationError: a variable's value does not fit its field (it names both).
        """
        values = _Environment(cls, os.environ if environ is None else environ)()
        return cls(**{**values, **overrides})


_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
          "t": 1024**4, "tb": 1024**4}


def parse_bytes(value: Any) -> int:
    """A memory size as Docker writes it (``536870912``, ``"512m"``, ``"2g"``; binary units) in bytes.

    Raises:
        ValueError: not a positive whole number of bytes, nor a number with one of b, k, m, g, t.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size")
    if isinstance(value, int):
        number, unit = (value, "") if 0 < value < 2**62 else (-1, "")
    else:
        text = str(value).strip().lower()
        digits = text.rstrip("bkmgt")
        unit = text[len(digits):]
        try:
            number = float(digits)
        except ValueError:
            number = -1
        if unit not in _UNITS or not 0 <= number < 2**50:  # also nan and inf
            number = -1
    size = int(number * _UNITS.get(unit, 1)) if number >= 0 else 0
    if size <= 0:
        raise ValueError(f"{value!r} is not a memory size: give bytes (536870912) or a number with "
                         "k, m, g or t (512m, 2g)")
    return size


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()

"""Settings read from MODELDECK_* environment variables, behind a cached get_settings()."""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8765
CACHE_ENV_PREFIX = "MODELDECK_CACHE_DIR_"


def default_home() -> Path:
    """The platform's per-user folder for ModelDeck's config, token and data."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "ModelDeck"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home())) / "ModelDeck"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "modeldeck"


class Settings(BaseModel):
    """Everything the backend can be told from outside.

    Every field has an environment variable ``MODELDECK_<FIELD>``; cache folders are
    read from ``MODELDECK_CACHE_DIR_<KIND>`` (for example
    ``MODELDECK_CACHE_DIR_HUGGINGFACE=~/.cache/huggingface``).
    """

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
    # Host folders whose files may be served as local models (mounted read-only).
    model_dirs: list[Path] = Field(default_factory=list)
    readiness_timeout_s: float | None = None  # overrides the recipes' own when set
    max_body_bytes: int = 8 * 1024 * 1024
    token: str | None = None  # fixed token (tests, headless use); else the token file
    # Labels added to every container ModelDeck creates (tests mark their run with one);
    # from the environment as MODELDECK_EXTRA_LABELS="key=value,key2=value2".
    extra_labels: dict[str, str] = Field(default_factory=dict)

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def history_path(self) -> Path:
        return self.home / "history.sqlite3"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from ``MODELDECK_*`` variables, then apply ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for name in cls.model_fields:
            raw = env.get(f"MODELDECK_{name.upper()}")
            if raw is None or name == "cache_dirs":
                continue
            if name == "extra_labels":
                values[name] = dict(item.split("=", 1) for item in raw.split(",") if "=" in item)
            elif name == "model_dirs":
                values[name] = [Path(p).expanduser() for p in raw.split(os.pathsep) if p]
            elif name in {"home", "catalog_dir"}:
                values[name] = Path(raw).expanduser()
            elif raw or name != "demo_base_image":  # empty: choose by what is here
                values[name] = raw
        caches = {
            key[len(CACHE_ENV_PREFIX):].lower(): Path(val).expanduser()
            for key, val in env.items()
            if key.startswith(CACHE_ENV_PREFIX) and val
        }
        if caches:
            values["cache_dirs"] = caches
        values.update(overrides)
        return cls(**values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()

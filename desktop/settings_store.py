"""The desktop's own settings (backend URL, home folder, theme, ...) kept in QSettings; the token apart.

QSettings writes ModelDeck.conf with the process's umask (0644 on most desktops): anyone on the
machine could read a token kept there. The token typed in Settings therefore lives in its own
owner-only file beside that file (``<settings file>.token``, 0600, written atomically), and a token
an earlier version left in ModelDeck.conf moves there on the first load. (No OS keyring: the
``keyring`` package is not a dependency, and a file like the backend's own token file is what the
backend already trusts.)
"""

from __future__ import annotations

import os
import secrets as _random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from platformdirs import user_config_path
from PySide6.QtCore import QByteArray, QSettings

from desktop.client import DEFAULT_URL, read_token

#: The backend's default port; the backend's own settings hold the same number (the desktop may not import them).
DEFAULT_PORT = 8765
CACHE_KINDS = ("huggingface", "ollama")


#: The backend's home folder's name; backend/settings.py asks platformdirs with the same name
#: and flags (the desktop may not import it), and tests/test_default_home.py checks they agree.
APP_DIR_NAME = "ModelDeck" if sys.platform in ("darwin", "win32") else "modeldeck"


def default_home() -> Path:
    """The backend's default home folder: the same answer as backend.settings.default_home()."""
    home = user_config_path(APP_DIR_NAME, appauthor=False, roaming=True)
    if sys.platform == "darwin":
        # As in the backend: a folder earlier versions made in Application Support stays in use
        # when $XDG_CONFIG_HOME (which platformdirs honours on macOS) points elsewhere.
        legacy = Path.home() / "Library" / "Application Support" / APP_DIR_NAME
        if home != legacy and legacy.is_dir() and not home.is_dir():
            return legacy
    return home


def is_local(url: str) -> bool:
    """True when ``url`` points at this machine's loopback (a backend the desktop may start itself)."""
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or DEFAULT_PORT


@dataclass
class DesktopSettings:
    """What the person chose; empty strings mean 'the default'."""

    backend_url: str = DEFAULT_URL
    token: str = ""
    home: str = ""
    theme: str = "system"
    keep_running: bool = True
    docker_host: str = ""
    cache_dirs: dict[str, str] = field(default_factory=dict)
    first_run_shown: bool = False  # the first-run check opened once on its own (Help menu reopens it)

    @property
    def home_path(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()

    def effective_token(self) -> str:
        """The token set here, else the one the backend wrote into the home folder."""
        return self.token or read_token(self.home_path)

    def backend_env(self) -> dict[str, str]:
        """Environment for a backend the desktop spawns: its home and the model-cache folders."""
        env = {"MODELDECK_HOME": str(self.home_path)}
        if self.docker_host:
            env["MODELDECK_DOCKER_HOST"] = self.docker_host
        for kind, folder in self.cache_dirs.items():
            if folder:
                env[f"MODELDECK_CACHE_DIR_{kind.upper()}"] = str(Path(folder).expanduser())
        return env


def read_token_file(path: Path) -> str:
    """The token kept in ``path``, or '' when there is none (or it cannot be read)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def write_token_file(path: Path, token: str) -> None:
    """Keep ``token`` in ``path``, readable by the owner only; an empty token removes the file.

    As the backend's secrets store does: the value goes to a temporary file created 0600 (never
    chmod-ed after writing) that then replaces the old file atomically, so no reader ever sees a
    partial or world-readable token.

    Raises:
        OSError: the folder or the file cannot be written.
    """
    token = token.strip()
    if not token:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    if read_token_file(path) == token and (os.name == "nt" or not path.stat().st_mode & 0o077):
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.parent / f".{path.name}.{_random.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(token.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


class SettingsStore:
    """Reads and writes DesktopSettings and the window state; ``path`` gives an INI file (tests).

    The token is not in the settings file but in ``token_path`` (see the module's docstring).
    """

    def __init__(self, path: str | Path | None = None):
        if path is None:
            self._qs = QSettings("ModelDeck", "ModelDeck")
        else:
            self._qs = QSettings(str(path), QSettings.Format.IniFormat)
        settings_file = Path(self._qs.fileName())
        #: The owner-only token file: ~/.config/ModelDeck/ModelDeck.token beside ModelDeck.conf.
        self.token_path = settings_file.with_name(settings_file.stem + ".token")

    def _load_token(self) -> str:
        """The token from its own file; one still in the settings file (earlier versions) moves there first."""
        qs = self._qs
        legacy = str(qs.value("backend/token", "") or "").strip()
        if qs.contains("backend/token"):
            if legacy and not read_token_file(self.token_path):
                write_token_file(self.token_path, legacy)
            qs.remove("backend/token")
            qs.sync()
        return read_token_file(self.token_path)

    def load(self) -> DesktopSettings:
        d = DesktopSettings()
        qs = self._qs
        d.backend_url = str(qs.value("backend/url", d.backend_url) or d.backend_url)
        d.token = self._load_token()
        d.home = str(qs.value("backend/home", "") or "")
        d.docker_host = str(qs.value("backend/docker_host", "") or "")
        d.theme = str(qs.value("ui/theme", d.theme) or d.theme)
        d.keep_running = str(qs.value("ui/keep_running", "true")).lower() in ("true", "1")
        d.cache_dirs = {k: str(qs.value(f"caches/{k}", "") or "") for k in CACHE_KINDS}
        d.first_run_shown = str(qs.value("ui/first_run_shown", "false")).lower() in ("true", "1")
        return d

    def save(self, d: DesktopSettings) -> None:
        qs = self._qs
        qs.setValue("backend/url", d.backend_url)
        write_token_file(self.token_path, d.token)
        qs.remove("backend/token")
        qs.setValue("backend/home", d.home)
        qs.setValue("backend/docker_host", d.docker_host)
        qs.setValue("ui/theme", d.theme)
        qs.setValue("ui/keep_running", "true" if d.keep_running else "false")
        qs.setValue("ui/first_run_shown", "true" if d.first_run_shown else "false")
        for k, v in d.cache_dirs.items():
            qs.setValue(f"caches/{k}", v)
        qs.sync()

    def window_state(self) -> tuple[QByteArray | None, int]:
        geometry = self._qs.value("window/geometry")
        try:
            page = int(self._qs.value("window/page", 0))
        except (TypeError, ValueError):
            page = 0
        return (geometry if isinstance(geometry, QByteArray) else None), page

    def save_window_state(self, geometry: QByteArray, page: int) -> None:
        self._qs.setValue("window/geometry", geometry)
        self._qs.setValue("window/page", page)
        self._qs.sync()

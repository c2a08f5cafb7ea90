"""Secrets the person entered in ModelDeck (the Hugging Face token): one owner-only file each under <home>/secrets/."""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path

from backend.envnames import require_env_name

SECRETS_FOLDER = "secrets"
HF_TOKEN = "HF_TOKEN"


def secret_path(home: Path, name: str) -> Path:
    """Where the secret ``name`` is kept: ``<home>/secrets/<name>``.

    Raises:
        ValueError: ``name`` is not an environment variable name (it becomes a file name).
    """
    return home / SECRETS_FOLDER / require_env_name(name, "secret name")


def read_secret(home: Path, name: str) -> str | None:
    """The stored value of ``name``, or None when there is none (or the file is empty or unreadable)."""
    try:
        text = secret_path(home, name).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def write_secret(home: Path, name: str, value: str) -> Path:
    """Store ``value`` as the secret ``name``, readable by the owner only; return the file.

    As ``backend.security.ensure_token`` does: the folder is made 0700, the value goes to a
    temporary file created 0600 (never chmod-ed after writing) which then replaces the old
    file atomically, so no reader ever sees a partial or world-readable value.

    Raises:
        ValueError: a bad name, or an empty value.
        OSError: the folder or the file cannot be written.
    """
    value = value.strip()
    if not value:
        raise ValueError("a secret cannot be empty")
    path = secret_path(home, name)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.name != "nt" and folder.stat().st_mode & 0o077:
        os.chmod(folder, 0o700)
    tmp = folder / f".{name}.{_random.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(value.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path


def delete_secret(home: Path, name: str) -> bool:
    """Remove the secret ``name``; True when there was one."""
    try:
        secret_path(home, name).unlink()
    except FileNotFoundError:
        return False
    return True


def stored_values(home: Path, names, given: dict[str, str]) -> dict[str, str]:
    """``given`` plus stored values for the ``names`` that neither ``given`` nor the environment has.

    The order of sources at container creation is: the launch request, the backend's
    environment, then this store; so a stored value fills a gap and never overrides.
    """
    values = dict(given)
    for name in names:
        if values.get(name) or os.environ.get(name):
            continue
        stored = read_secret(home, name)
        if stored:
            values[name] = stored
    return values

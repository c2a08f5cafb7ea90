"""The one rule for environment variable names: recipes, launch requests, stored secrets, compose and docker run."""

from __future__ import annotations

import re

# POSIX's portable names (letters, digits, '_', not starting with a digit), capped so that a
# name cannot grow a container's environment, its labels or a file name without bound.
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
RULE = "letters, digits, '_'; not a digit first; at most 128"


def is_env_name(name: str) -> bool:
    """Whether ``name`` may name an environment variable (and so a secret's file)."""
    return ENV_NAME_RE.fullmatch(name) is not None


def not_env_name(name: str) -> str:
    """The message that refuses ``name``, for validation errors a person reads."""
    return f"{name!r} is not a valid environment variable name ({RULE})."


def require_env_name(name: str, what: str = "name") -> str:
    """``name`` itself when it follows the rule.

    Args:
        name: the candidate.
        what: what the name is, for the message ("secret name").

    Raises:
        ValueError: it does not; the message says ``what`` and the rule.
    """
    if not is_env_name(name):
        raise ValueError(f"{what} {not_env_name(name)}")
    return name

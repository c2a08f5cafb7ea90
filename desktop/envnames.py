"""The backend's rule for environment variable names, so that forms can say what is wrong while typing.

The desktop shares only the HTTP contract with the backend (no imports), so this is the
desktop's one copy of ``backend/envnames.py``'s rule; the backend still decides.
"""

from __future__ import annotations

import re

ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def is_env_name(name: str) -> bool:
    """Whether the backend accepts ``name`` as an environment variable name."""
    return ENV_NAME_RE.fullmatch(name) is not None

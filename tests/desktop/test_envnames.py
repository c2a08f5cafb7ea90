"""Tests of desktop.envnames: the launch form's copy of the backend's environment-variable-name rule."""

from __future__ import annotations

import pytest

from backend import envnames as backend_rule
from desktop import envnames as desktop_rule
from desktop.pages.launch_dialog import parse_env
from tests.backend.test_envnames import BAD, GOOD


@pytest.mark.parametrize("name", GOOD)
def test_accepted_names(name):
    assert desktop_rule.is_env_name(name)
    assert parse_env(f"{name}=v") == ({name: "v"}, None)


@pytest.mark.parametrize("name", [b for b in BAD if b.strip() == b and "=" not in b])
def test_refused_names(name):
    assert not desktop_rule.is_env_name(name)
    assert parse_env(f"{name}=v")[1] == "Environment line 1 is not KEY=VALUE."


def test_the_desktop_says_what_the_backend_decides():
    # The desktop may not import the backend, so the rule is written twice; this keeps them one.
    assert desktop_rule.ENV_NAME_RE.pattern == backend_rule.ENV_NAME_RE.pattern

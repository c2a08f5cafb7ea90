"""Tests of backend.envnames: the one environment-variable-name rule, and that every user keeps it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from backend.catalog import EnvSpec
from backend.envnames import is_env_name, not_env_name, require_env_name
from backend.launch_plan import LaunchRequest
from backend.secrets_store import secret_path

GOOD = ["HF_TOKEN", "_", "_x1", "a", "CUDA_VISIBLE_DEVICES", "x" * 128]
BAD = ["", "1ABC", "A-B", "A B", "A=B", "HF_TOKEN\n", "../token", "a/b", "É", "x" * 129, "A\x00"]


@pytest.mark.parametrize("name", GOOD)
def test_accepted_names(name):
    assert is_env_name(name)
    assert require_env_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_refused_names(name):
    assert not is_env_name(name)
    with pytest.raises(ValueError, match="^secret name .* is not a valid environment variable name"):
        require_env_name(name, "secret name")


@pytest.mark.parametrize("name", BAD)
def test_every_backend_user_refuses_what_the_rule_refuses(name, tmp_path):
    with pytest.raises(ValidationError, match="is not a valid environment variable name"):
        EnvSpec(values={name: "v"})
    with pytest.raises(ValidationError, match="is not a valid environment variable name"):
        EnvSpec(secrets=[name])
    with pytest.raises(ValidationError, match="is not a valid environment variable name"):
        LaunchRequest(recipe="demo", model="m", env={name: "v"})
    with pytest.raises(ValueError, match="secret name"):
        secret_path(tmp_path, name)


def test_the_message_names_the_rule():
    assert not_env_name("A-B") == "'A-B' is not a valid environment variable name " \
                                  "(letters, digits, '_'; not a digit first; at most 128)."

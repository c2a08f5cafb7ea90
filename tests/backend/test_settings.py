"""backend.settings: MODELDECK_* variables read through pydantic-settings, with the meanings they always had."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.settings import DEFAULT_PORT, Settings


def test_every_variable_by_its_name(tmp_path):
    s = Settings.from_env({
        "MODELDECK_HOME": "~/md-home", "MODELDECK_HOST": "0.0.0.0", "MODELDECK_PORT": "9000",
        "MODELDECK_DOCKER_HOST": "unix:///x.sock", "MODELDECK_CATALOG_DIR": str(tmp_path),
        "MODELDECK_DEMO_BASE_IMAGE": "my/base:1", "MODELDECK_MODEL_DIRS": "~/models::/abs/more:",
        "MODELDECK_READINESS_TIMEOUT_S": "2.5", "MODELDECK_MAX_BODY_BYTES": "10", "MODELDECK_TOKEN": "tok",
        "MODELDECK_EXTRA_LABELS": "a=b,c=d=e,no-equals,,x=",
        "MODELDECK_CACHE_DIR_HUGGINGFACE": "~/.cache/hf", "MODELDECK_CACHE_DIR_OLLAMA": "",
    })
    assert s.home == Path("~/md-home").expanduser() and s.host == "0.0.0.0" and s.port == 9000
    assert s.docker_host == "unix:///x.sock" and s.catalog_dir == tmp_path and s.demo_base_image == "my/base:1"
    assert s.model_dirs == [Path("~/models").expanduser(), Path("/abs/more")]
    assert s.readiness_timeout_s == 2.5 and s.max_body_bytes == 10 and s.token == "tok"
    assert s.extra_labels == {"a": "b", "c": "d=e", "x": ""}
    assert s.cache_dirs == {"huggingface": Path("~/.cache/hf").expanduser()}, "an empty folder is no folder"


def test_defaults_and_empty_values():
    s = Settings.from_env({})
    assert s.port == DEFAULT_PORT and s.host == "127.0.0.1" and s.token is None and s.cache_dirs == {}
    s = Settings.from_env({"MODELDECK_DEMO_BASE_IMAGE": "", "MODELDECK_TOKEN": "", "MODELDECK_EXTRA_LABELS": "",
                           "MODELDECK_MODEL_DIRS": ""})
    assert s.demo_base_image is None and s.token == "" and s.extra_labels == {} and s.model_dirs == []


def test_cache_folders_come_one_variable_per_kind():
    # MODELDECK_CACHE_DIRS was never a variable: it is not read (not even as JSON).
    s = Settings.from_env({"MODELDECK_CACHE_DIRS": "junk", "MODELDECK_CACHE_DIR_OLLAMA": "/o"})
    assert s.cache_dirs == {"ollama": Path("/o")}


def test_overrides_win_and_direct_construction_reads_no_environment(monkeypatch):
    monkeypatch.setenv("MODELDECK_PORT", "9001")
    monkeypatch.setenv("MODELDECK_TOKEN", "from-env")
    assert Settings.from_env().port == 9001
    assert Settings.from_env(port=9002).port == 9002
    assert Settings.from_env({"MODELDECK_PORT": "1"}).token is None, "an explicit mapping replaces the environment"
    assert Settings().port == DEFAULT_PORT and Settings().token is None


@pytest.mark.parametrize(("name", "value", "field", "message"), [
    ("MODELDECK_PORT", "abc", "port", "Input should be a valid integer, unable to parse string as an integer"),
    ("MODELDECK_PORT", "", "port", "Input should be a valid integer, unable to parse string as an integer"),
    ("MODELDECK_READINESS_TIMEOUT_S", "soon", "readiness_timeout_s",
     "Input should be a valid number, unable to parse string as a number"),
])
def test_a_bad_value_names_the_field_and_the_value(name, value, field, message):
    with pytest.raises(ValidationError) as info:
        Settings.from_env({name: value})
    text = str(info.value)
    assert text.startswith(f"1 validation error for Settings\n{field}\n  {message}"), text
    assert f"input_value={value!r}" in text

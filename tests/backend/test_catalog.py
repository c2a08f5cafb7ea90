"""Tests for backend/catalog.py: the shipped recipes load, and broken ones are refused by file and field."""

from __future__ import annotations

import json
import math
import string
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.catalog import PLACEHOLDERS, GpuNeed, Recipe, load_catalog, load_recipe
from backend.errors import RecipeError, RecipeNotFound
from backend.settings import REPO_ROOT

CONTAINERS = REPO_ROOT / "containers"
RUNTIMES = ["demo", "llama-cpp", "ollama", "sglang", "tgi", "vllm"]

GOOD = """\
title = "Good"
description = "A recipe that validates."

[image]
ref = "example/good:1"

[server]
port = 8000
command = ["--model", "{model}", "--name", "{served_name}", "--port", "{port}"]

[readiness]
health_path = "/health"

[gpu]
need = "optional"
args = ["-ngl", "999"]

[[caches]]
kind = "huggingface"
target = "/root/.cache/huggingface"

[env]
secrets = ["HF_TOKEN"]

[env.values]
A_B = "1"

[[post_start]]
path = "/api/pull"
body = { model = "{model}", stream = false }
"""


# -- the shipped recipes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", RUNTIMES)
def test_shipped_recipe_loads(name):
    recipe = load_recipe(CONTAINERS / f"{name}.toml")
    assert recipe.name == name
    assert recipe.title and recipe.description
    assert recipe.defaults.model
    commands = recipe.server.command_for(local_model=False) + recipe.server.command_for(local_model=True)
    used = {field for arg in commands + (recipe.server.entrypoint or [])
            for _, field, _, _ in string.Formatter().parse(arg) if field}
    # Every runtime is told which model and port to use (Ollama pulls its model after start).
    if name != "ollama":
        assert {"model", "port"} <= used
    assert used <= PLACEHOLDERS


def test_catalog_has_all_runtimes():
    catalog = load_catalog(CONTAINERS)
    assert catalog.errors == {}
    assert sorted(catalog.recipes) == RUNTIMES


@pytest.mark.parametrize(("name", "image", "port", "gpu"), [
    ("vllm", "vllm/vllm-openai:latest", 8000, GpuNeed.required),
    ("llama-cpp", "ghcr.io/ggml-org/llama.cpp:server", 8080, GpuNeed.optional),
    ("ollama", "ollama/ollama:latest", 11434, GpuNeed.optional),
    ("tgi", "ghcr.io/huggingface/text-generation-inference:3.3.7", 80, GpuNeed.required),
    ("sglang", "lmsysorg/sglang:latest", 30000, GpuNeed.required),
])
def test_shipped_recipe_essentials(name, image, port, gpu):
    recipe = load_catalog(CONTAINERS).get(name)
    assert recipe.image_for(use_gpu=False) == image
    assert recipe.server.port == port
    assert recipe.gpu.need == gpu
    assert recipe.readiness.health_path.startswith("/")
    assert recipe.caches, "every runtime keeps its downloads in a cache"
    if name != "ollama":
        assert recipe.env.secrets == ["HF_TOKEN"]
        assert [c.kind for c in recipe.caches] == ["huggingface"]
        assert recipe.readiness.models_path == "/v1/models"


def test_runtime_specific_choices():
    c = load_catalog(CONTAINERS)
    assert c.get("llama-cpp").image_for(use_gpu=True) == "ghcr.io/ggml-org/llama.cpp:server-cuda"
    llama = c.get("llama-cpp")
    # No fixed -ngl: llama-server's own default ("auto" with --fit on) decides the layers on the GPU.
    assert llama.gpu.args == []
    assert llama.server.command_for(local_model=False)[:2] == ["-hf", "{model}"]
    assert llama.server.command_for(local_model=True)[:2] == ["-m", "{model}"]
    assert llama.image.local_build == "llama-cpp" and (CONTAINERS / "llama-cpp" / "Dockerfile").is_file()
    ollama = c.get("ollama")
    assert ollama.server.served_name_is_model
    assert [(p.method, p.path, p.body) for p in ollama.post_start] == [
        ("POST", "/api/pull", {"model": "{model}", "stream": False})]
    assert [(x.kind, x.target) for x in ollama.caches] == [("ollama", "/root/.ollama")]
    assert c.get("tgi").caches[0].target == "/data"
    assert c.get("sglang").server.entrypoint == ["python3", "-m", "sglang.launch_server"]
    for name in ("vllm", "tgi", "sglang"):
        assert c.get(name).resources.shm_size


# -- broken recipes ----------------------------------------------------------------------------


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


BROKEN = [
    ("bad TOML", "title = \n", None),
    ("missing image", replace('[image]\nref = "example/good:1"\n', ""), "image"),
    ("ref and build", replace('ref = "example/good:1"', 'ref = "example/good:1"\nbuild = "good"'), "image"),
    ("neither ref nor build", replace('ref = "example/good:1"', 'gpu_ref = "x/y:z"'), "image"),
    ("bad image ref", replace('"example/good:1"', '"Example Good; rm -rf /"'), "image"),
    ("build escapes", replace('ref = "example/good:1"', 'build = "../../etc"'), "image"),
    ("build absolute", replace('ref = "example/good:1"', 'build = "/etc"'), "image"),
    ("local_build without ref", replace('ref = "example/good:1"', 'build = "good"\nlocal_build = "good"'), "image"),
    ("local_build escapes", replace('ref = "example/good:1"', 'ref = "example/good:1"\nlocal_build = "../x"'),
     "image"),
    ("model_args unused", replace("port = 8000", 'port = 8000\nmodel_args = ["-m", "{model}"]'), "server"),
    ("model_args missing", replace('"--model", "{model}"', '"{model_args}"'), "server"),
    ("model_args twice", replace('"--model", "{model}"', '"{model_args}", "{model_args}"').replace(
        "port = 8000", 'port = 8000\nmodel_args = ["{model}"]'), "server"),
    ("model_args inside an argument", replace('"--model", "{model}"', '"--model={model_args}"'), "server.command"),
    ("evil in local_model_args", replace('"--model", "{model}"', '"{model_args}"').replace(
        "port = 8000", 'port = 8000\nmodel_args = ["{model}"]\nlocal_model_args = ["{evil}"]'),
     "server.local_model_args"),
    ("port 0", replace("port = 8000", "port = 0"), "server.port"),
    ("port 70000", replace("port = 8000", "port = 70000"), "server.port"),
    ("port abc", replace("port = 8000", 'port = "abc"'), "server.port"),
    ("evil placeholder", replace('"{served_name}"', '"{evil}"'), "server.command"),
    ("format spec", replace('"{port}"', '"{port:>10}"'), "server.command"),
    ("attribute access", replace('"{model}", "--name"', '"{model.__class__}", "--name"'), "server.command"),
    ("unbalanced brace", replace('"{port}"', '"{port"'), "server.command"),
    ("evil in gpu args", replace('args = ["-ngl", "999"]', 'args = ["{evil}"]'), "gpu.args"),
    ("evil in post_start body", replace('model = "{model}"', 'model = "{evil}"'), "post_start.0.body"),
    ("post_start path", replace('path = "/api/pull"', 'path = "api/pull"'), "post_start.0.path"),
    ("unknown top-level key", "privileged = true\n" + GOOD, "privileged"),
    ("unknown nested key", replace("port = 8000", "port = 8000\nnetwork_mode = \"host\""), "server.network_mode"),
    ("source set by file", 'source = "/etc/passwd"\n' + GOOD, "source"),
    ("bad env name", replace('A_B = "1"', '"A-B" = "1"'), "env.values"),
    ("env value not a string", replace('A_B = "1"', "A_B = 1"), "env.values.A_B"),
    ("bad secret name", replace('secrets = ["HF_TOKEN"]', 'secrets = ["HF TOKEN"]'), "env.secrets"),
    ("secret also a value", replace('A_B = "1"', 'HF_TOKEN = "hf_123"'), "env"),
    ("cache target relative", replace('target = "/root/.cache/huggingface"', 'target = "root/cache"'),
     "caches.0.target"),
    ("cache target with ..", replace('target = "/root/.cache/huggingface"', 'target = "/root/../etc"'),
     "caches.0.target"),
    ("bad cache kind", replace('kind = "huggingface"', 'kind = "../x"'), "caches.0.kind"),
    ("name not matching file", 'name = "other"\n' + GOOD, "name"),
    ("gpu.need wrong type", replace('need = "optional"', "need = 3"), "gpu.need"),
    ("gpu.need unknown", replace('need = "optional"', 'need = "maybe"'), "gpu.need"),
    ("shm_size", replace("[gpu]", '[resources]\nshm_size = "lots"\n\n[gpu]'), "resources.shm_size"),
    ("ipc host", replace("[gpu]", '[resources]\nipc = "host"\n\n[gpu]'), "resources.ipc"),
    ("ulimit not allowed", replace("[gpu]", '[resources]\nulimits = { rtprio = 99 }\n\n[gpu]'), "resources.ulimits"),
    ("ulimit below -1", replace("[gpu]", '[resources]\nulimits = { memlock = -2 }\n\n[gpu]'),
     "resources.ulimits.memlock"),
    ("model check placeholder", replace('health_path = "/health"', 'health_path = "/health"\n'
                                        'model_check = { path = "/api/show", body = { model = "{evil}" } }'),
     "readiness.model_check.body"),
    ("model check method", replace('health_path = "/health"', 'health_path = "/health"\n'
                                   'model_check = { method = "DELETE", path = "/x" }'), "readiness.model_check.method"),
    ("health path", replace('health_path = "/health"', 'health_path = "health"'), "readiness.health_path"),
    ("startup timeout", replace("port = 8000", "port = 8000\nstartup_timeout = -1"), "server.startup_timeout"),
    ("title missing", replace('title = "Good"\n', ""), "title"),
]


@pytest.mark.parametrize(("case", "text", "field"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_recipe_names_file_and_field(tmp_path, case, text, field):
    path = tmp_path / "good.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = info.value.message
    assert message.startswith("good.toml: ")
    if field is None:
        assert "not valid TOML" in message
    else:
        assert f"field '{field}'" in message, message
        assert info.value.details["file"] == "good.toml"


def test_good_template_is_good(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(GOOD, encoding="utf-8")
    recipe = load_recipe(path)
    assert recipe.name == "good" and recipe.source == str(path)
    assert recipe.post_start[0].body == {"model": "{model}", "stream": False}


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"a = " + b"[" * 5000 + b"]" * 5000,
                                     b"[post_start]\n" + b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000])
def test_unreadable_or_pathological_files(tmp_path, content):
    path = tmp_path / "weird.toml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match="^weird.toml: "):
        load_recipe(path)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="cannot be read"):
        load_recipe(tmp_path / "gone.toml")


def test_one_broken_file_does_not_break_the_others(tmp_path):
    for name in ("vllm", "ollama"):
        (tmp_path / f"{name}.toml").write_text((CONTAINERS / f"{name}.toml").read_text())
    (tmp_path / "broken.toml").write_text(replace("port = 8000", "port = 0"))
    (tmp_path / "notes.txt").write_text("not a recipe")
    catalog = load_catalog(tmp_path)
    assert sorted(catalog.recipes) == ["ollama", "vllm"]
    assert list(catalog.errors) == ["broken.toml"]
    assert "field 'server.port'" in catalog.errors["broken.toml"]


def test_get_unknown_lists_known_names():
    catalog = load_catalog(CONTAINERS)
    with pytest.raises(RecipeNotFound) as info:
        catalog.get("nope")
    assert "nope" in info.value.message
    for name in RUNTIMES:
        assert name in info.value.hint


def test_get_on_empty_catalog(tmp_path):
    with pytest.raises(RecipeNotFound, match="nope") as info:
        load_catalog(tmp_path).get("nope")
    assert "none" in info.value.hint


# -- property: anything is either a recipe or a RecipeError -----------------------------------


def toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict) -> str:
    """Top-level keys as ``key = value`` lines (inline tables for sections): valid TOML."""
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in data.items())


def test_toml_writer_round_trips():
    data = tomllib.loads(GOOD)
    assert tomllib.loads(toml_document(data)) == data


SCALARS = (st.booleans() | st.integers(min_value=-2**63, max_value=2**63 - 1) | st.floats()
           | st.text(max_size=30) | st.sampled_from(["{model}", "{evil}", "/health", "required", "8g", "{", "}"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)
KEYS = st.sampled_from(["name", "title", "description", "homepage", "image", "server", "readiness", "gpu",
                        "caches", "resources", "env", "defaults", "post_start", "source", "other"])
SUBKEYS = st.sampled_from(["ref", "gpu_ref", "build", "local_build", "model_args", "local_model_args",
                           "port", "command", "entrypoint", "health_path", "need",
                           "args", "kind", "target", "shm_size", "ipc", "values", "secrets", "model", "path",
                           "body", "method", "timeout", "openai_base", "served_name_is_model", "x"])


def check_loads_or_refuses(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "good.toml"
        path.write_bytes(content)
        try:
            assert isinstance(load_recipe(path), Recipe)
        except RecipeError as exc:
            assert exc.message.startswith("good.toml: ")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_recipes_load_or_raise_recipe_error(data):
    recipe = tomllib.loads(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(KEYS)
        action = data.draw(st.sampled_from(["set", "delete", "set-sub", "delete-sub"]))
        if action == "set":
            recipe[key] = data.draw(VALUES)
        elif action == "delete":
            recipe.pop(key, None)
        elif isinstance(recipe.get(key), dict):
            sub = data.draw(SUBKEYS)
            if action == "set-sub":
                recipe[key][sub] = data.draw(VALUES)
            else:
                recipe[key].pop(sub, None)
    check_loads_or_refuses(toml_document(recipe).encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_load_or_raise_recipe_error(blob):
    check_loads_or_refuses(blob)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('[]{}="\'.,\n #ab19-_:/\\')), max_size=120))
def test_toml_like_text_loads_or_raises_recipe_error(text):
    check_loads_or_refuses(text.encode())


def test_json_of_a_recipe_is_not_toml(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text(json.dumps(tomllib.loads(GOOD)))
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)

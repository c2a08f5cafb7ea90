"""Tests for backend/compose.py: the exported docker-compose.yml parses and says exactly what the spec says."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.compose import render_compose
from backend.spec import ContainerSpec, Mount

SECRET_VALUE = "hf_this_value_must_never_be_written"


def make_spec(**overrides) -> ContainerSpec:
    values = dict(
        name="modeldeck-abc123",
        image="vllm/vllm-openai:latest",
        command=("--model", "Qwen/Qwen2.5-0.5B-Instruct", "--served-model-name", "qwen", "--port", "8000"),
        internal_port=8000,
        host_port=18001,
        labels={"modeldeck.managed": "true", "modeldeck.recipe": "vllm", "modeldeck.model": "Qwen/Qwen2.5"},
        entrypoint=None,
        environment={"VLLM_LOGGING_LEVEL": "INFO"},
        secret_env=("HF_TOKEN",),
        gpu_ids=("all",),
        mounts=(Mount(source="modeldeck-cache-huggingface", target="/root/.cache/huggingface"),
                Mount(source="/home/me/models", target="/models", kind="bind", read_only=True)),
        shm_size="8g",
        ipc_mode="private",
    )
    values.update(overrides)
    return ContainerSpec(**values)


def service(doc: dict) -> dict:
    (svc,) = doc["services"].values()
    return svc


def test_every_field_is_exported():
    spec = make_spec()
    doc = yaml.safe_load(render_compose(spec, project="myproj"))
    assert doc["name"] == "myproj"
    svc = doc["services"]["modeldeck-abc123"]
    assert svc["container_name"] == "modeldeck-abc123"
    assert svc["image"] == "vllm/vllm-openai:latest"
    assert svc["command"] == list(spec.command)
    assert "entrypoint" not in svc
    assert svc["ports"] == ["127.0.0.1:18001:8000"]
    assert svc["environment"] == {"VLLM_LOGGING_LEVEL": "INFO", "HF_TOKEN": "${HF_TOKEN}"}
    assert svc["labels"] == spec.labels
    assert svc["volumes"] == ["modeldeck-cache-huggingface:/root/.cache/huggingface",
                              "/home/me/models:/models:ro"]
    assert doc["volumes"] == {"modeldeck-cache-huggingface": {"name": "modeldeck-cache-huggingface"}}
    assert svc["shm_size"] == "8g"
    assert svc["ipc"] == "private"
    assert svc["restart"] == "on-failure:3"
    assert svc["init"] is True, "launches run the server under Docker's init (engine.create init=True)"
    assert svc["security_opt"] == ["no-new-privileges:true"]
    assert svc["deploy"] == {"resources": {"reservations": {"devices": [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}}}


def test_limits_are_exported():
    svc = service(yaml.safe_load(render_compose(make_spec(ulimits=(("memlock", -1), ("stack", 67108864))))))
    assert svc["ulimits"] == {"memlock": -1, "stack": 67108864}


def test_default_project_name():
    assert yaml.safe_load(render_compose(make_spec()))["name"] == "modeldeck"


def test_specific_gpus_use_device_ids():
    svc = service(yaml.safe_load(render_compose(make_spec(gpu_ids=("0", "2")))))
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "device_ids": ["0", "2"], "capabilities": ["gpu"]}


def test_minimal_cpu_spec_has_no_optional_sections():
    spec = make_spec(command=(), environment={}, secret_env=(), gpu_ids=(), mounts=(), labels={},
                     shm_size=None, ipc_mode=None, restart_max=0)
    doc = yaml.safe_load(render_compose(spec))
    svc = service(doc)
    for key in ("command", "entrypoint", "environment", "labels", "volumes", "shm_size", "ipc", "ulimits", "deploy"):
        assert key not in svc
    assert "volumes" not in doc
    assert svc["restart"] == "no"
    assert svc["security_opt"] == ["no-new-privileges:true"]


def test_entrypoint_is_exported():
    spec = make_spec(entrypoint=("python3", "-m", "sglang.launch_server"))
    assert service(yaml.safe_load(render_compose(spec)))["entrypoint"] == ["python3", "-m", "sglang.launch_server"]


def test_secret_values_never_appear(monkeypatch):
    # Even with the secret set in the environment and passed as an environment value, only
    # the reference is written.
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)
    spec = make_spec(environment={"HF_TOKEN": SECRET_VALUE, "OTHER": "x"}, secret_env=("HF_TOKEN", "API_KEY"))
    text = render_compose(spec)
    assert SECRET_VALUE not in text
    env = service(yaml.safe_load(text))["environment"]
    assert env == {"OTHER": "x", "HF_TOKEN": "${HF_TOKEN}", "API_KEY": "${API_KEY}"}


def test_bad_secret_name_is_refused():
    with pytest.raises(ValueError, match="secret name"):
        render_compose(make_spec(secret_env=("BAD\nNAME",)))


@pytest.mark.parametrize("project", ["", "Upper", "-x", "a b", "a:b"])
def test_bad_project_is_refused(project):
    with pytest.raises(ValueError, match="project name"):
        render_compose(make_spec(), project=project)


def test_bind_mount_with_colon_uses_long_syntax():
    spec = make_spec(mounts=(Mount(source="C:/Users/me/models", target="/models", kind="bind", read_only=True),
                             Mount(source="/data/rw", target="/data", kind="bind")))
    vols = service(yaml.safe_load(render_compose(spec)))["volumes"]
    assert vols == [{"type": "bind", "source": "C:/Users/me/models", "target": "/models", "read_only": True},
                    "/data/rw:/data"]


def test_ipv6_host_uses_long_port_syntax():
    svc = service(yaml.safe_load(render_compose(make_spec(host_ip="::1"))))
    assert svc["ports"] == [{"target": 8000, "published": "18001", "host_ip": "::1", "protocol": "tcp"}]


def test_service_name_is_sanitized():
    doc = yaml.safe_load(render_compose(make_spec(name="modeldeck weird/name")))
    assert list(doc["services"]) == ["modeldeck-weird-name"]
    assert service(doc)["container_name"] == "modeldeck weird/name"


TRICKY = [
    "a: b", "# not a comment", "x #y", 'say "hi"', "it's", "line1\nline2", "tab\there", "back\\slash",
    "{flow: map}", "[1, 2]", "- dash", "&anchor", "*alias", "!tag", "%directive", "@at", "`tick`",
    "yes", "no", "null", "~", "1e3", "0x10", "", " lead and trail ", "---", "...", "é ü 漢字 🚀",
    "\x00\x07\x1b\x7f\x85", "\u2028\u2029\ufeff", "\r\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_strings_round_trip_exactly(text):
    spec = make_spec(command=("--x", text), environment={"V": text}, labels={"modeldeck.note": text},
                     image=text, entrypoint=(text,))
    svc = service(yaml.safe_load(render_compose(spec)))
    assert svc["command"] == ["--x", text]
    assert svc["entrypoint"] == [text]
    assert svc["environment"]["V"] == text
    assert svc["labels"]["modeldeck.note"] == text
    assert svc["image"] == text


def test_dollar_is_escaped_for_compose_interpolation():
    # Compose turns "$$" into "$"; a single "$" would be read as a variable reference.
    svc = service(yaml.safe_load(render_compose(make_spec(environment={"P": "a$b${C}"}))))
    assert svc["environment"]["P"] == "a$$b$${C}"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.dictionaries(st.text(min_size=1), st.text(), max_size=3))
def test_any_string_round_trips(text, labels):
    spec = make_spec(command=(text,), labels=labels, environment={"V": text})
    svc = service(yaml.safe_load(render_compose(spec)))
    unescape = lambda s: s.replace("$$", "$")  # what compose does to every value
    assert [unescape(c) for c in svc["command"]] == [text]
    assert unescape(svc["environment"]["V"]) == text
    assert {unescape(k): unescape(v) for k, v in svc.get("labels", {}).items()} == labels


def test_keys_longer_than_yamls_implicit_key_limit_round_trip():
    """YAML implicit keys end at 1024 characters; escaped Unicode gets there fast."""
    long_key = "ş" * 300 + "k" * 900
    spec = make_spec(labels={long_key: "v"}, environment={"V": "x", long_key: "y"})
    svc = service(yaml.safe_load(render_compose(spec)))
    assert svc["labels"][long_key] == "v"
    assert svc["environment"][long_key] == "y"

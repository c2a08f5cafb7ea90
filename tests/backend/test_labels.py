"""The container label schema: what a launch writes reads back the same, and older containers still read."""

from __future__ import annotations

from backend.labels import MANAGED_LABEL, SCHEMA_LABEL, SCHEMA_VERSION, DeploymentLabels


def full() -> DeploymentLabels:
    return DeploymentLabels(
        id="qwen", recipe="ollama", model="qwen2.5:0.5b", served_name="qwen2.5:0.5b", config_hash="0123abcd",
        gpus=("0", "2"), internal_port=11434, openai_base="/v1", health_path="/api/version", models_path="/v1/models",
        model_check={"method": "POST", "path": "/api/show", "body": {"model": "qwen2.5:0.5b"}},
        env=("A", "B"), secrets=("HF_TOKEN",), custom_entrypoint=True, port_requested=18000, launched_from="f00d")


def test_encode_then_decode_is_the_same():
    labels = full().encode()
    assert labels[MANAGED_LABEL] == "true" and labels[SCHEMA_LABEL] == str(SCHEMA_VERSION) == "1"
    assert labels["modeldeck.model_check"] == '{"body": {"model": "qwen2.5:0.5b"}, "method": "POST", "path": "/api/show"}'
    assert all(isinstance(v, str) for v in labels.values())
    assert DeploymentLabels.decode(labels) == full()
    assert full().readiness_paths == ("/api/version", "/v1/models")


def test_empty_fields_are_written_as_docker_can_filter_them():
    labels = DeploymentLabels(id="d").encode()
    assert labels["modeldeck.gpus"] == "" and labels["modeldeck.port_requested"] == ""
    assert labels["modeldeck.model_check"] == "" and labels["modeldeck.entrypoint"] == "image"
    back = DeploymentLabels.decode(labels)
    assert back.gpus == () and back.port_requested is None and back.model_check is None and back.models_path is None


def test_a_container_without_a_schema_label_is_schema_1_and_defaults_fill_the_rest():
    back = DeploymentLabels.decode({MANAGED_LABEL: "true"}, default_id="modeldeck-x")
    assert back.schema == 1 and back.id == "modeldeck-x" and back.served_name == "modeldeck-x"
    assert back.health_path == "/health" and back.openai_base == "/v1" and back.readiness_paths == ("/health",)


def test_a_model_check_that_is_not_one_a_launch_writes_is_ignored():
    for raw in ("not json", "[1]", '{"method": "DELETE", "path": "/x"}', '{"method": "GET", "path": "x"}'):
        assert DeploymentLabels.decode({"modeldeck.model_check": raw}).model_check is None, raw

"""Tests of backend.errors' renderer: the two shapes clients read, chosen by path, from every producer."""

from __future__ import annotations

import json

import pytest
from fastapi import Query
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.errors import DeploymentNotFound, Flavour, error_body, error_response, flavour_for, openai_type
from backend.settings import Settings

TOKEN = "errors-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(("path", "flavour"), [
    ("/v1", Flavour.OPENAI), ("/v1/chat/completions", Flavour.OPENAI), ("/v1/models/a/b", Flavour.OPENAI),
    ("/v10/models", Flavour.MODELDECK), ("/api/v1", Flavour.MODELDECK), ("/", Flavour.MODELDECK),
    ("/metrics", Flavour.MODELDECK),
])
def test_the_path_chooses_the_shape(path, flavour):
    assert flavour_for(path) is flavour


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "invalid_request_error"), (409, "invalid_request_error"), (413, "invalid_request_error"),
    (429, "rate_limit_error"), (500, "server_error"), (502, "server_error"), (503, "server_error"),
])
def test_openai_types_by_status(status, kind):
    assert openai_type(status) == kind


def test_modeldeck_shape_keeps_its_keys_in_order_and_details_only_when_given():
    with_details = json.loads(error_body(Flavour.MODELDECK, 404, "gone", "It is gone.", "Look elsewhere.",
                                         {"id": "x"}))
    assert list(with_details["error"]) == ["code", "message", "hint", "details"]
    assert with_details == {"error": {"code": "gone", "message": "It is gone.", "hint": "Look elsewhere.",
                                      "details": {"id": "x"}}}
    without = json.loads(error_body(Flavour.MODELDECK, 401, "unauthorized", "No token.", "Send one."))
    assert without == {"error": {"code": "unauthorized", "message": "No token.", "hint": "Send one."}}


def test_openai_shape_puts_the_hint_after_the_message():
    body = json.loads(error_body(Flavour.OPENAI, 404, "model_not_found", "No model 'x'.", "Launch it.",
                                 {"ignored": True}, param="model"))
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert body == {"error": {"message": "No model 'x'. Launch it.", "type": "invalid_request_error",
                              "param": "model", "code": "model_not_found"}}
    custom = json.loads(error_body(Flavour.OPENAI, 502, 502, "Upstream broke.", type="upstream_error"))
    assert custom == {"error": {"message": "Upstream broke.", "type": "upstream_error", "param": None,
                                "code": 502}}


def test_error_response_is_compact_utf8_json_with_its_headers():
    r = error_response("/api/x", 503, "stats_not_ready", "Not yet — soon.", "Wait.", headers={"Retry-After": "1"})
    assert r.status_code == 503 and r.media_type == "application/json"
    assert r.headers["retry-after"] == "1" and r.headers["content-type"] == "application/json"
    assert r.body == '{"error":{"code":"stats_not_ready","message":"Not yet — soon.","hint":"Wait."}}'.encode()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # The handlers need no lifespan (no Docker): the client is used without entering it.
    app = create_app(Settings(home=tmp_path_factory.mktemp("home"), token=TOKEN))

    @app.get("/api/test-missing")
    def missing_control():
        raise DeploymentNotFound("No deployment 'x'.", hint="List deployments to see their ids.")

    @app.get("/v1/test-missing")
    def missing_openai():
        raise DeploymentNotFound("No deployment 'x'.", hint="List deployments to see their ids.")

    @app.get("/api/test-validated")
    @app.get("/v1/test-validated")
    def validated(seconds: int = Query(ge=1)):
        return {"seconds": seconds}

    @app.get("/api/test-bug")
    def bug():
        raise ZeroDivisionError("boom")

    return TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False)


def test_domain_errors_in_each_shape(client):
    control = client.get("/api/test-missing", headers=AUTH)
    assert control.status_code == 404
    assert control.json() == {"error": {"code": "deployment_not_found", "message": "No deployment 'x'.",
                                        "hint": "List deployments to see their ids.", "details": {}}}
    openai = client.get("/v1/test-missing", headers=AUTH)
    assert openai.status_code == 404
    assert openai.json() == {"error": {"message": "No deployment 'x'. List deployments to see their ids.",
                                       "type": "invalid_request_error", "param": None,
                                       "code": "deployment_not_found"}}


def test_http_validation_and_unexpected_errors_in_each_shape(client):
    unknown = client.get("/api/nothing-here", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json() == {"error": {
        "code": "http_404", "message": "Not Found", "hint": "See /docs for the routes this API has.", "details": {}}}
    v1_unknown = client.get("/v1/nothing-here", headers=AUTH)
    assert v1_unknown.status_code == 404 and v1_unknown.json() == {"error": {
        "message": "There is no GET /v1/nothing-here in ModelDeck's OpenAI API.", "type": "invalid_request_error",
        "param": None, "code": 404}}
    invalid = client.get("/api/test-validated", params={"seconds": 0}, headers=AUTH)
    assert invalid.status_code == 422
    error = invalid.json()["error"]
    assert list(error) == ["code", "message", "hint", "details"] and error["code"] == "invalid_request"
    assert error["details"]["errors"][0].startswith("query.seconds: ")
    v1_invalid = client.get("/v1/test-validated", params={"seconds": 0}, headers=AUTH)
    assert v1_invalid.status_code == 400
    error = v1_invalid.json()["error"]
    assert list(error) == ["message", "type", "param", "code"] and error["param"] == "seconds"
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert error["message"].startswith("query.seconds: ")
    crashed = client.get("/api/test-bug", headers=AUTH)
    assert crashed.status_code == 500 and crashed.json()["error"]["code"] == "internal_error"
    assert "ZeroDivisionError: boom" in crashed.json()["error"]["message"]


def test_front_door_refusals_in_each_shape(client):
    control = client.get("/api/test-missing")
    assert control.status_code == 401 and control.headers["www-authenticate"] == 'Bearer realm="modeldeck"'
    assert control.headers["cache-control"] == "no-store"
    assert list(control.json()["error"]) == ["code", "message", "hint"]
    openai = client.get("/v1/models")
    assert openai.status_code == 401
    error = openai.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert error["type"] == "authentication_error" and error["code"] == "unauthorized"

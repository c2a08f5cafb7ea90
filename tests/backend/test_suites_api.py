"""Tests of backend.routes.suites through real HTTP: CRUD, validation errors, import and export."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from backend.app import _install_error_handlers, create_app
from backend.routes.suites import router
from backend.settings import Settings
from backend.suites import SuiteStore
from tests.backend.test_suites import RICH_CASES
from tests.support.live_server import serve


class FakeRuns:
    """The one question the suite routes ask the run store: which suites have a run running."""

    def __init__(self) -> None:
        self.running: set[str] = set()

    def running_suite_ids(self) -> set[str]:
        return set(self.running)


@pytest.fixture()
def api(tmp_path):
    """(client, store, runs) of a real server with the suites router and the app's error handlers."""
    app = FastAPI()
    app.include_router(router)
    _install_error_handlers(app)
    store = SuiteStore(tmp_path / "suites.db")
    app.state.suites = store
    app.state.suite_runs = runs = FakeRuns()
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        yield client, store, runs
    store.close()


SUITE = {"name": "Capitals", "description": "geography", "system_prompt": "One word.",
         "checks": [{"kind": "max_length", "value": 50}],
         "cases": [{"prompt": "Capital of {{country}}?", "variables": {"country": "France"},
                    "checks": [{"kind": "contains", "value": "Paris", "ignore_case": True}]},
                   {"id": "de", "prompt": "Capital of Germany?", "expected": "Berlin"}]}


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["hint"]
    return error


def test_create_read_list_replace_delete(api):
    client, store, _ = api
    r = client.post("/api/suites", json=SUITE)
    assert r.status_code == 201
    created = r.json()
    assert created["id"].startswith("capitals-") and created["created_at"] and created["updated_at"]
    assert [c["id"] for c in created["cases"]] == ["case-1", "de"]
    assert created["checks"] == [{"kind": "max_length", "value": 50, "ignore_case": False}]
    suite_id = created["id"]

    assert client.get(f"/api/suites/{suite_id}").json() == created
    assert client.get("/api/suites").json() == [{"id": suite_id, "name": "Capitals", "description": "geography",
                                                  "cases": 2, "updated_at": created["updated_at"]}]

    # What GET answers can be sent back with PUT (timestamps and id in the body are ignored).
    edited = {**created, "id": "ignored", "name": "Capitals v2", "cases": created["cases"][:1]}
    r = client.put(f"/api/suites/{suite_id}", json=edited)
    assert r.status_code == 200
    assert r.json()["id"] == suite_id and r.json()["name"] == "Capitals v2" and len(r.json()["cases"]) == 1
    assert r.json()["created_at"] == created["created_at"]
    assert store.get(suite_id).name == "Capitals v2"

    r = client.delete(f"/api/suites/{suite_id}")
    assert r.status_code == 204 and r.content == b""
    assert error_of(client.get(f"/api/suites/{suite_id}"), 404)["code"] == "suite_not_found"
    assert error_of(client.delete(f"/api/suites/{suite_id}"), 404)["code"] == "suite_not_found"
    assert error_of(client.put(f"/api/suites/{suite_id}", json=SUITE), 404)["code"] == "suite_not_found"
    assert error_of(client.get(f"/api/suites/{suite_id}/export"), 404)["code"] == "suite_not_found"


def test_given_id_and_conflict(api):
    client, _, _ = api
    assert client.post("/api/suites", json={**SUITE, "id": "geo"}).json()["id"] == "geo"
    error = error_of(client.post("/api/suites", json={**SUITE, "id": "geo"}), 409)
    assert error["code"] == "suite_conflict" and "geo" in error["message"]


@pytest.mark.parametrize(("case", "words"), [
    ({"id": "bad-re", "prompt": "p", "checks": [{"kind": "regex", "value": "(unclosed"}]},
     ["case 'bad-re' (number 3)", "checks.0", "invalid regular expression"]),
    ({"id": "bad-schema", "prompt": "p", "checks": [{"kind": "json_schema", "value": {"type": 5}}]},
     ["case 'bad-schema' (number 3)", "invalid JSON Schema"]),
    ({"id": "bad-var", "prompt": "Hi {{who}}"}, ["case 'bad-var' (number 3)", "unknown template variable who"]),
    ({"prompt": "p", "extra": 1}, ["case number 3", "unknown key 'extra'"]),
])
def test_invalid_suites_are_refused_with_422_naming_case_and_field(api, case, words):
    client, store, _ = api
    r = client.post("/api/suites", json={**SUITE, "cases": [*SUITE["cases"], case]})
    error = error_of(r, 422)
    assert error["code"] == "invalid_request"
    for word in words:
        assert word in error["message"]
    assert store.list() == []
    kept = client.post("/api/suites", json=SUITE).json()
    error_of(client.put(f"/api/suites/{kept['id']}", json={**SUITE, "cases": [case]}), 422)
    assert client.get(f"/api/suites/{kept['id']}").json() == kept


def test_more_than_ten_thousand_cases_are_refused(api):
    client, store, _ = api
    cases = [{"prompt": f"q{n}"} for n in range(10_001)]
    error = error_of(client.post("/api/suites", json={"name": "big", "cases": cases}), 422)
    assert "at most 10000" in error["message"]
    r = client.post("/api/suites", json={"name": "big", "cases": cases[:10_000]})
    assert r.status_code == 201 and len(r.json()["cases"]) == 10_000
    assert store.list()[0].cases == 10_000


def test_delete_is_refused_while_a_run_is_running(api):
    client, _, runs = api
    suite_id = client.post("/api/suites", json=SUITE).json()["id"]
    runs.running.add(suite_id)
    error = error_of(client.delete(f"/api/suites/{suite_id}"), 409)
    assert error["code"] == "suite_conflict" and "cancel" in error["hint"].lower()
    runs.running.clear()
    assert client.delete(f"/api/suites/{suite_id}").status_code == 204


@pytest.mark.parametrize(("fmt", "media_type"), [("jsonl", "application/jsonl"), ("csv", "text/csv")])
def test_export_then_import_round_trip(api, fmt, media_type):
    client, store, _ = api
    original = client.post("/api/suites", json={"name": "Rich", "cases": RICH_CASES}).json()
    r = client.get(f"/api/suites/{original['id']}/export", params={"format": fmt})
    assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
    assert r.headers["content-disposition"] == f'attachment; filename="{original["id"]}.{fmt}"'
    r = client.post("/api/suites/import", params={"format": fmt, "name": "Rich again", "description": "copy"},
                    content=r.content, headers={"Content-Type": "text/plain; charset=utf-8"})
    assert r.status_code == 201, r.text
    imported = r.json()
    assert imported["id"] != original["id"] and imported["name"] == "Rich again"
    assert imported["description"] == "copy"
    assert imported["cases"] == original["cases"]
    assert store.get(imported["id"]).model_dump()["cases"] == store.get(original["id"]).model_dump()["cases"]


def test_export_defaults_to_jsonl_with_the_suite_line_first(api):
    client, _, _ = api
    suite_id = client.post("/api/suites", json=SUITE).json()["id"]
    lines = [json.loads(line) for line in client.get(f"/api/suites/{suite_id}/export").text.splitlines()]
    assert lines[0] == {"suite": {"name": "Capitals", "description": "geography", "system_prompt": "One word.",
                                  "checks": [{"kind": "max_length", "value": 50}]}}
    assert [line["id"] for line in lines[1:]] == ["case-1", "de"]


def test_jsonl_round_trip_gives_the_identical_suite(api):
    client, _, _ = api
    original = client.post("/api/suites", json={**SUITE, "cases": RICH_CASES}).json()
    text = client.get(f"/api/suites/{original['id']}/export", params={"format": "jsonl"}).content
    imported = client.post("/api/suites/import", params={"format": "jsonl"}, content=text).json()
    strip = ("id", "created_at", "updated_at")
    assert {k: v for k, v in imported.items() if k not in strip} == \
        {k: v for k, v in original.items() if k not in strip}
    # Query parameters win over the file's suite line.
    renamed = client.post("/api/suites/import", params={"format": "jsonl", "name": "Other", "description": ""},
                          content=text).json()
    assert renamed["name"] == "Other" and renamed["description"] == "" and renamed["system_prompt"] == "One word."


@pytest.mark.parametrize(("fmt", "text", "line", "words"), [
    ("jsonl", '{"prompt": "ok"}\n{"prompt": "ok too"}\n{"prompt": \n', 3, ["not valid JSON"]),
    ("jsonl", '{"prompt": "ok"}\n{"system_prompt": "no prompt"}\n', 2, ["either a prompt or messages"]),
    ("jsonl", '{"prompt": "ok"}\n{"prompt": "ok", "weight": 2}\n', 2, ["unknown key 'weight'"]),
    ("jsonl", '{"suite": {"checks": [{"kind": "regex", "value": "["}]}}\n{"prompt": "ok"}\n', 1,
     ["suite: checks.0", "invalid regular expression"]),
    ("jsonl", '{"prompt": "ok"}\n{"suite": {"name": "late"}}\n', 2, ["must be the first line"]),
    ("csv", 'id,prompt,checks\na,ok,\nb,ok,"[{""kind"": ""regex"", ""value"": ""(""}]"\n', 3,
     ["invalid regular expression"]),
    ("csv", "id,prompt,checks\na,ok,\nb,ok,[not json\n", 3, ["checks: not valid JSON"]),
    ("csv", "name,question\na,ok\n", 1, ["no prompt column"]),
])
def test_malformed_file_is_refused_with_its_line_and_nothing_is_stored(api, fmt, text, line, words):
    client, store, _ = api
    kept = client.post("/api/suites", json=SUITE).json()
    before = (store.list(), store.get(kept["id"]))
    r = client.post("/api/suites/import", params={"format": fmt}, content=text.encode("utf-8"),
                    headers={"Content-Type": "text/plain"})
    error = error_of(r, 422)
    assert error["code"] == "invalid_suite_file" and error["message"].startswith(f"line {line}: ")
    assert error["details"] == {"line": line} and "Nothing was imported" in error["hint"]
    for word in words:
        assert word in error["message"]
    assert (store.list(), store.get(kept["id"])) == before


def test_import_refuses_text_that_is_not_utf8_and_unknown_formats(api):
    client, store, _ = api
    r = client.post("/api/suites/import", params={"format": "csv"}, content=b"id,prompt\na,caf\xe9\n")
    error = error_of(r, 422)
    assert error["code"] == "invalid_suite_file" and error["message"].startswith("line 2: ") and "UTF-8" in error["hint"]
    assert error_of(client.post("/api/suites/import", params={"format": "xlsx"}, content=b"x"), 422)["code"] == \
        "invalid_request"
    assert store.list() == []


def test_import_with_a_byte_order_mark_and_crlf(api):
    client, _, _ = api
    text = "\ufeffid,prompt,expected\r\nq1,\"Two\r\nlines\",Yes\r\n"
    r = client.post("/api/suites/import", params={"format": "csv", "name": "Excel"}, content=text.encode("utf-8"))
    assert r.status_code == 201, r.text
    assert r.json()["cases"][0]["id"] == "q1" and r.json()["cases"][0]["prompt"] == "Two\r\nlines"


def test_routes_are_documented(api):
    client, _, _ = api
    spec = client.get("/openapi.json").json()
    ops = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    assert set(ops) == {"createSuite", "listSuites", "importSuite", "getSuite", "replaceSuite", "deleteSuite",
                        "exportSuite"}
    assert all(op.get("summary") and "suites" in op["tags"] for op in ops.values())
    assert "text/plain" in ops["importSuite"]["requestBody"]["content"]


@pytest.mark.docker
def test_the_app_keeps_suites_beside_the_history(tmp_path, engine):
    """The real app: the store is built by the lifespan in <home>/suites.db, the routes need the token."""
    home = tmp_path / "home"
    settings = Settings(home=home, token="suites-test", catalog_dir=tmp_path / "no-recipes")
    with serve(create_app(settings, engine=engine)) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/suites").status_code == 401
        auth = {"Authorization": "Bearer suites-test"}
        r = client.post("/api/suites", json=SUITE, headers=auth)
        assert r.status_code == 201
        assert client.get("/api/suites", headers=auth).json()[0]["id"] == r.json()["id"]
    assert (home / "suites.db").is_file()
    store = SuiteStore(home / "suites.db")
    try:
        assert store.get(r.json()["id"]).name == "Capitals"
    finally:
        store.close()

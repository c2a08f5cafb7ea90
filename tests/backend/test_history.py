"""Tests of backend.history (the SQLite store) and backend.routes.history (through real HTTP)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading

import httpx
import pytest
from fastapi import FastAPI, Request

from backend.errors import ModelDeckError, domain_error_response
from backend.history import (PREVIEW_CHARS, SCHEMA_VERSION, HistoryNotFound, HistoryStore,
                             HistoryUnavailable, scrub_secrets)
from backend.routes.history import router
from tests.support.live_server import serve


def record(store: HistoryStore, *, model: str = "demo", user: str = "hello", output: str = "hi there",
           created_at: float = 1_700_000_000.0, **extra) -> int:
    request = extra.pop("request", None) or {
        "model": model,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": user}],
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"], "seed": 7, "stream": True,
    }
    values = dict(model=model, endpoint="chat/completions", request=request, output=output,
                  finish_reason="stop", status=200, error=None, ttft_s=0.05, prompt_tokens=12,
                  completion_tokens=3, tokens_per_s=40.0, duration_s=0.1, created_at=created_at)
    values.update(extra)
    return store.record(**values)


@pytest.fixture()
def store(tmp_path):
    s = HistoryStore(tmp_path / "data" / "history.sqlite3")
    yield s
    s.close()


# --------------------------------------------------------------------------- store


def test_record_and_get_round_trip(store):
    entry_id = record(store, deployment_id="dep-1", tag="compare-1")
    entry = store.get(entry_id)
    assert entry.id == entry_id and entry.model == "demo" and entry.endpoint == "chat/completions"
    assert entry.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert entry.prompt is None
    assert entry.params == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "stop": ["\n\n"],
                            "seed": 7, "stream": True}
    assert entry.output == "hi there" and entry.finish_reason == "stop" and entry.status == 200
    assert (entry.ttft_s, entry.prompt_tokens, entry.completion_tokens, entry.tokens_per_s) == (0.05, 12, 3, 40.0)
    assert entry.deployment_id == "dep-1" and entry.tag == "compare-1"


def test_completions_prompt_is_stored_apart(store):
    entry_id = record(store, request={"model": "demo", "prompt": "Once upon", "max_tokens": 5})
    entry = store.get(entry_id)
    assert entry.prompt == "Once upon" and entry.messages is None
    assert entry.params == {"max_tokens": 5}
    assert store.list()[0].preview == "Once upon"


def test_list_is_newest_first_with_previews(store):
    first = record(store, user="first question", created_at=1.0)
    second = record(store, user="second  question\nwith lines", output="x" * 500, created_at=2.0)
    summaries = store.list()
    assert [s.id for s in summaries] == [second, first]
    newest = summaries[0]
    assert newest.preview == "second question with lines"  # the user message, not the system one
    assert len(newest.output_preview) <= PREVIEW_CHARS and newest.output_preview.endswith("…")
    assert newest.status == 200 and newest.ttft_s == 0.05 and newest.completion_tokens == 3
    assert newest.tokens_per_s == 40.0


def test_preview_of_multimodal_content(store):
    content = [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "data:x"}}]
    record(store, request={"model": "demo", "messages": [{"role": "user", "content": content}]})
    assert store.list()[0].preview == "describe"


def test_list_paging_and_model_filter(store):
    ids = [record(store, model="a" if i % 2 else "b", created_at=float(i)) for i in range(10)]
    assert [s.id for s in store.list(limit=3)] == ids[::-1][:3]
    assert [s.id for s in store.list(limit=3, offset=3)] == ids[::-1][3:6]
    assert {s.model for s in store.list(model="a")} == {"a"}
    assert len(store.list(model="a")) == 5
    assert store.list(model="nope") == []
    with pytest.raises(ValueError):
        store.list(limit=-1)


def test_search_matches_messages_and_output_case_insensitively(store):
    a = record(store, user="What is the CAPITAL of France?", output="Paris.")
    b = record(store, user="Tell me a joke", output="Why did the GPU cross the road?")
    assert [s.id for s in store.list(query="capital")] == [a]
    assert [s.id for s in store.list(query="gpu cross")] == [b]
    assert [s.id for s in store.list(query="be brief")] == [b, a]  # the system message counts too
    assert store.list(query="nowhere") == []


def test_search_treats_percent_and_underscore_literally(store):
    pct = record(store, user="growth was 100% this year")
    und = record(store, user="call my_function please")
    plain = record(store, user="100 percent and myXfunction")
    assert [s.id for s in store.list(query="100%")] == [pct]
    assert [s.id for s in store.list(query="%")] == [pct]
    assert [s.id for s in store.list(query="my_function")] == [und]
    assert [s.id for s in store.list(query="_")] == [und]
    assert plain not in [s.id for s in store.list(query="%")]
    assert store.list(query="\\") == []


def test_get_and_delete_unknown_raise_not_found(store):
    with pytest.raises(HistoryNotFound) as info:
        store.get(12345)
    assert isinstance(info.value, ModelDeckError) and info.value.status == 404 and info.value.hint
    with pytest.raises(HistoryNotFound):
        store.delete(12345)


def test_delete_and_clear(store):
    a, b, c = (record(store) for _ in range(3))
    store.delete(b)
    with pytest.raises(HistoryNotFound):
        store.get(b)
    assert sorted(s.id for s in store.list()) == [a, c]
    assert store.clear() == 2
    assert store.list() == [] and store.clear() == 0


def test_export_filters_and_returns_whole_entries(store):
    record(store, model="a", user="alpha", created_at=1.0)
    record(store, model="b", user="beta", created_at=2.0)
    everything = store.export()
    assert [e.model for e in everything] == ["b", "a"]
    assert everything[0].messages[-1]["content"] == "beta"
    assert [e.model for e in store.export(model="a")] == ["a"]
    assert [e.model for e in store.export(query="BETA")] == ["b"]


def test_secret_keys_are_never_stored(store, tmp_path):
    request = {
        "model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
        "api_key": "sk-secret-1", "Authorization": "Bearer sk-secret-2",
        "extra_headers": {"X-Api-Key": "sk-secret-3", "Accept": "json"},
        "extra_body": {"openai_api_key": "sk-secret-4", "top_k": 5, "nested": [{"access_token": "sk-secret-5"}]},
        "client_secret": "sk-secret-6", "password": "sk-secret-7",
    }
    entry = store.get(record(store, request=request))
    assert entry.params == {"max_tokens": 8, "extra_headers": {"Accept": "json"},
                            "extra_body": {"top_k": 5, "nested": [{}]}}
    store.close()
    raw = store.path.read_bytes() + b"".join(
        p.read_bytes() for p in store.path.parent.iterdir() if p.name != store.path.name)
    assert b"sk-secret" not in raw
    assert request["api_key"] == "sk-secret-1"  # the caller's dict is left alone


def test_scrub_secrets_keeps_ordinary_token_parameters():
    kept = {"max_tokens": 1, "max_completion_tokens": 2, "logprobs": True, "top_logprobs": 3,
            "skip_special_tokens": True, "prompt_tokens": 4}
    assert scrub_secrets(kept) == kept


def test_store_is_safe_across_threads(store):
    def worker(n):
        for i in range(25):
            record(store, user=f"t{n}-{i}")
            store.list(limit=5)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list(limit=500)) == 100


def test_database_is_wal_private_and_versioned(store):
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    if os.name != "nt":
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.recovered_from is None


def test_entries_survive_reopening(tmp_path):
    path = tmp_path / "history.sqlite3"
    first = HistoryStore(path)
    entry_id = record(first)
    first.close()
    second = HistoryStore(path)
    try:
        assert second.get(entry_id).output == "hi there" and second.recovered_from is None
    finally:
        second.close()


# --------------------------------------------------------------------------- damaged files


def assert_recovered(path, original: bytes | None = None) -> None:
    store = HistoryStore(path)
    try:
        moved = store.recovered_from
        assert moved is not None and moved.parent == path.parent
        assert moved.name.startswith(f"{path.name}.corrupt-")
        if original is not None:
            assert moved.read_bytes() == original  # kept, not deleted, for a person to inspect
        assert store.list() == []
        entry_id = record(store)
        assert store.get(entry_id).output == "hi there"
    finally:
        store.close()


def test_garbage_file_is_moved_aside(tmp_path):
    path = tmp_path / "history.sqlite3"
    garbage = b"this is not a database at all\n" * 200
    path.write_bytes(garbage)
    assert_recovered(path, garbage)


def test_corrupt_pages_are_detected_and_moved_aside(tmp_path):
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path)
    for i in range(300):
        record(store, user=f"question {i} " + "words " * 40, output="answer " * 40)
    store.close()
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    assert len(data) > 8 * page_size
    for page in range(2, len(data) // page_size):  # leave the header page, scramble the rest
        start = page * page_size
        data[start + 8:start + 64] = b"\xff" * 56
    path.write_bytes(bytes(data))
    assert_recovered(path, bytes(data))


def test_truncated_file_is_moved_aside(tmp_path):
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path)
    for _ in range(200):
        record(store, output="x" * 500)
    store.close()
    path.write_bytes(path.read_bytes()[:5000])
    assert_recovered(path)


def test_stale_wal_does_not_leak_into_the_fresh_database(tmp_path):
    path = tmp_path / "history.sqlite3"
    path.write_bytes(b"garbage" * 100)
    (tmp_path / "history.sqlite3-wal").write_bytes(b"stale wal" * 100)
    store = HistoryStore(path)
    try:
        assert store.recovered_from is not None
        entry_id = record(store)
        assert [s.id for s in store.list()] == [entry_id]
    finally:
        store.close()
    wal = tmp_path / "history.sqlite3-wal"
    assert not wal.exists() or b"stale wal" not in wal.read_bytes()


def test_foreign_sqlite_database_is_moved_aside(tmp_path):
    path = tmp_path / "history.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something_else (x)")
    conn.commit()
    conn.close()
    assert_recovered(path)


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="needs POSIX modes and a non-root user")
def test_unreadable_file_is_moved_aside(tmp_path):
    path = tmp_path / "history.sqlite3"
    HistoryStore(path).close()
    os.chmod(path, 0)
    assert_recovered(path)


def test_unopenable_path_is_moved_aside(tmp_path):
    # Works as root too: a folder where the file should be cannot be opened as a database.
    path = tmp_path / "history.sqlite3"
    path.mkdir()
    (path / "inside").write_text("kept")
    store = HistoryStore(path)
    try:
        assert (store.recovered_from / "inside").read_text() == "kept"
        record(store)
    finally:
        store.close()


def test_newer_schema_is_refused_not_moved(tmp_path):
    path = tmp_path / "history.sqlite3"
    store = HistoryStore(path)
    store._conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    store.close()
    with pytest.raises(HistoryUnavailable) as info:
        HistoryStore(path)
    assert info.value.hint and "Update ModelDeck" in info.value.hint
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []


def test_uncreatable_location_says_so(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(HistoryUnavailable) as info:
        HistoryStore(tmp_path / "file" / "history.sqlite3")
    assert "MODELDECK_HOME" in info.value.hint


# --------------------------------------------------------------------------- routes through HTTP


@pytest.fixture()
def api(tmp_path):
    """(base_url, store) of a real server with the history router and the app's renderer for domain errors."""
    app = FastAPI()
    app.include_router(router)

    @app.exception_handler(ModelDeckError)
    async def on_error(request: Request, exc: ModelDeckError):
        return domain_error_response(request.url.path, exc)

    store = HistoryStore(tmp_path / "history.sqlite3")
    app.state.history = store
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        yield client, store
    store.close()


def test_route_list_search_and_filter(api):
    client, store = api
    a = record(store, model="a", user="100% sure", created_at=1.0)
    b = record(store, model="b", user="not sure", created_at=2.0)
    r = client.get("/api/history")
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == [b, a]
    assert set(r.json()[0]) >= {"id", "created_at", "model", "preview", "output_preview", "status",
                                "ttft_s", "completion_tokens", "tokens_per_s"}
    assert [s["id"] for s in client.get("/api/history", params={"q": "100%"}).json()] == [a]
    assert [s["id"] for s in client.get("/api/history", params={"model": "b"}).json()] == [b]
    assert [s["id"] for s in client.get("/api/history", params={"limit": 1, "offset": 1}).json()] == [a]


@pytest.mark.parametrize("params", [{"limit": 501}, {"limit": 0}, {"offset": -1}, {"limit": "x"}])
def test_route_list_validates_paging(api, params):
    client, _ = api
    assert client.get("/api/history", params=params).status_code == 422


def test_route_get_and_404_shape(api):
    client, store = api
    entry_id = record(store)
    r = client.get(f"/api/history/{entry_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["messages"][-1] == {"role": "user", "content": "hello"}
    assert body["params"]["temperature"] == 0.2
    r = client.get("/api/history/99999")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "history_not_found" and "99999" in error["message"] and error["hint"]


def test_route_delete_one_and_clear(api):
    client, store = api
    a, b = record(store), record(store)
    r = client.delete(f"/api/history/{a}")
    assert r.status_code == 204 and r.content == b""
    assert client.delete(f"/api/history/{a}").status_code == 404
    assert client.get(f"/api/history/{a}").status_code == 404
    r = client.delete("/api/history")
    assert r.status_code == 200 and r.json() == {"deleted": 1}
    assert client.get("/api/history").json() == []
    assert b not in [s.id for s in store.list()]


def test_route_export_is_a_json_download(api):
    client, store = api
    record(store, model="a", user="alpha")
    record(store, model="b", user="beta")
    r = client.get("/api/history/export")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["content-disposition"] == 'attachment; filename="modeldeck-history.json"'
    entries = json.loads(r.content)
    assert {e["model"] for e in entries} == {"a", "b"} and all("output" in e for e in entries)
    only_a = client.get("/api/history/export", params={"model": "a"}).json()
    assert [e["model"] for e in only_a] == ["a"]


def test_routes_are_documented(api):
    client, _ = api
    spec = client.get("/openapi.json").json()
    ops = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    assert set(ops) == {"listHistory", "exportHistory", "getHistoryEntry", "deleteHistoryEntry", "clearHistory"}
    assert all(op.get("summary") for op in ops.values())
    assert "history" in ops["listHistory"]["tags"]

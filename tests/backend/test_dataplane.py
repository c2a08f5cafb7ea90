"""The /v1 data plane (backend/dataplane.py) in the real backend app: which requests it answers, and that
the front door, ordering and upstream connection faults hold on it.

The app is ``create_app`` with the Docker engine and its real lifespan, served by uvicorn with the data
plane as ``modeldeck-backend`` serves it; only its directory is pinned to a fake model server (as the
benchmark's backend is). tests/backend/test_proxy.py runs every proxy behaviour through both paths.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from contextlib import asynccontextmanager

import httpx
import openai
import pytest

from backend.app import create_app
from backend.proxy import StaticDirectory, Upstream
from backend.settings import Settings
from tests.support.live_server import free_port, serve
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker]
TOKEN = "dataplane-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024


def pinned_app(home, engine, base_url: str):
    (home / "no-catalog").mkdir(parents=True, exist_ok=True)
    app = create_app(Settings(home=home, token=TOKEN, catalog_dir=home / "no-catalog", max_body_bytes=LIMIT),
                     engine=engine)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            a.state.upstreams = StaticDirectory([Upstream("dep-tiny", "tiny", base_url, True, "running")])
            yield state

    app.router.lifespan_context = lifespan
    return app


@pytest.fixture(scope="module")
def upstream() -> FakeUpstream:
    return FakeUpstream(models=("tiny",))


@pytest.fixture(scope="module")
def upstream_port() -> int:
    return free_port()


@contextlib.contextmanager
def serving_upstream(upstream: FakeUpstream, port: int) -> Iterator[str]:
    with serve(upstream.app, port=port) as url:
        yield url


@pytest.fixture(scope="module")
def backend(tmp_path_factory, engine, upstream, upstream_port):
    app = pinned_app(tmp_path_factory.mktemp("dataplane"), engine, f"http://127.0.0.1:{upstream_port}/v1")
    with serving_upstream(upstream, upstream_port), serve(app) as url:
        wait_until(lambda: httpx.get(f"{url}/api/stats", headers=AUTH).status_code == 200, 20,
                   what="the first stats sample")
        yield app, url


def chat(max_tokens: int = 3, **extra) -> dict:
    return {"model": "tiny", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_hot_routes_are_answered_by_the_data_plane(backend) -> None:
    app, url = backend
    counts = app.state.data_plane.counts
    before = dict(counts)
    with openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0) as client:
        assert client.chat.completions.create(**chat()).choices[0].message.content == "[0][1][2]"
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            **chat(4), stream=True) if c.choices)
        assert streamed == "[0][1][2][3]"
        assert client.completions.create(model="tiny", prompt="x", max_tokens=2).choices[0].text == "[0][1]"
        assert len(client.embeddings.create(model="tiny", input=["a", "b"]).data) == 2
        assert [m.id for m in client.models.list().data] == ["tiny"]
    stats = httpx.get(f"{url}/api/stats", headers=AUTH)
    assert stats.status_code == 200 and "host" in stats.json()
    assert counts["forward"] - before["forward"] == 4
    assert counts["models"] - before["models"] == 1
    assert counts["stats"] - before["stats"] == 1
    assert counts["app"] == before["app"]
    # What the data plane relayed was measured as the ASGI path measures it.
    recent = app.state.request_log.recent()[-4:]
    assert [m.endpoint for m in recent] == ["chat/completions", "chat/completions", "completions", "embeddings"]
    assert recent[0].completion_tokens == 3 and recent[1].ttft_s is not None and recent[1].stream


@pytest.mark.parametrize("case", ["no token", "wrong token", "foreign host", "foreign origin", "too large",
                                  "too large, chunked"])
def test_the_front_door_holds_on_the_hot_routes(backend, upstream: FakeUpstream, case: str) -> None:
    """A request the front door refuses never reaches the model server, and gets the middleware's answer."""
    app, url = backend
    headers = {**AUTH, "Content-Type": "application/json"}
    content = json.dumps(chat()).encode()
    expected = {"no token": (401, "unauthorized"), "wrong token": (401, "unauthorized"),
                "foreign host": (403, "forbidden_host"), "foreign origin": (403, "forbidden_origin"),
                "too large": (413, "request_too_large"), "too large, chunked": (413, "request_too_large")}[case]
    if case == "no token":
        del headers["Authorization"]
    elif case == "wrong token":
        headers["Authorization"] = "Bearer nope"
    elif case == "foreign host":
        headers["Host"] = "evil.example:80"
    elif case == "foreign origin":
        headers["Origin"] = "http://evil.example"
    elif case.startswith("too large"):
        content = json.dumps(chat(x_pad="x" * LIMIT)).encode()
        if case.endswith("chunked"):  # no Content-Length: the middleware counts the body as it comes
            content = iter([content[:1000], content[1000:]])
    received = len(upstream.received)
    handed = app.state.data_plane.counts["app"]
    r = httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers)
    status, body = r.status_code, r.json()
    assert (status, body["error"]["code"]) == expected, body
    assert body["error"]["message"]  # OpenAI's shape under /v1, with what was wrong
    assert len(upstream.received) == received
    assert app.state.data_plane.counts["app"] == handed + 1


def content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_token_as_x_api_key_is_taken_and_as_query_goes_to_the_app(backend) -> None:
    app, url = backend
    counts = app.state.data_plane.counts
    before = dict(counts)
    r = httpx.post(f"{url}/v1/chat/completions", json=chat(), headers={"x-api-key": TOKEN})
    assert r.status_code == 200, r.text
    assert counts["forward"] == before["forward"] + 1
    r = httpx.get(f"{url}/v1/models", params={"token": TOKEN})  # a query string: the app's route answers
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny"
    assert counts["models"] == before["models"] and counts["app"] == before["app"]


def test_requests_the_data_plane_leaves_to_the_app_are_answered_there(backend, upstream: FakeUpstream) -> None:
    app, url = backend
    counts = app.state.data_plane.counts
    before = counts["app"]
    cases = [  # (body, extra headers, expected status)
        (b"{not json", {}, 400),
        (json.dumps({"model": "nobody"}).encode(), {}, 404),
        (json.dumps(chat()).encode(), {"X-ModelDeck-History": "1"}, 200),
        (json.dumps(chat(modeldeck={"history": True})).encode(), {}, 200),
    ]
    for content, extra, status in cases:
        r = httpx.post(f"{url}/v1/chat/completions", content=content, headers={**AUTH, **extra})
        assert r.status_code == status, (content, r.text)
    assert counts["app"] == before + len(cases)
    assert "modeldeck" not in upstream.received[-1]["body"]  # ModelDeck's options were not forwarded
    assert httpx.post(f"{url}/v1/chat/completions", json=chat(), headers=AUTH).headers.get(
        "x-modeldeck-history-id") is None


def test_pipelined_requests_are_answered_in_order(backend) -> None:
    """Three requests in one write (two for the data plane, one for the app): three answers, in order."""
    _, url = backend
    port = int(url.rsplit(":", 1)[1])

    def post(n: int) -> bytes:
        body = json.dumps(chat(n)).encode()
        return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                + TOKEN.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body)

    health = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(post(1) + post(2) + health + post(3))
        answers: list[dict] = []
        data = b""
        while len(answers) < 4:
            chunk = s.recv(65536)
            assert chunk, f"the connection closed after {len(answers)} answers"
            data += chunk
            while b"\r\n\r\n" in data:
                head, rest = data.split(b"\r\n\r\n", 1)
                n = content_length(data)
                if len(rest) < n:
                    break
                assert head.startswith(b"HTTP/1.1 200"), head
                answers.append(json.loads(rest[:n]))
                data = rest[n:]
    texts = [a["choices"][0]["message"]["content"] if "choices" in a else "health" for a in answers]
    assert texts == ["[0]", "[0][1]", "health", "[0][1][2]"]


def test_a_model_server_restart_does_not_fail_the_next_request(backend) -> None:
    """Pooled keep-alive connections to a server that restarted are dead: the next requests go out on new
    connections (or are sent again on one when the old one's close arrives late) rather than answered 502."""
    app, url = backend
    port = free_port()
    restarted = FakeUpstream(models=("tiny",))
    old = app.state.upstreams
    app.state.upstreams = StaticDirectory([Upstream("dep-r", "tiny", f"http://127.0.0.1:{port}/v1", True, "running")])
    forwarded = app.state.data_plane.counts["forward"]
    try:
        with httpx.Client(headers=AUTH, timeout=10) as client:
            with serve(restarted.app, port=port):
                first = [client.post(f"{url}/v1/chat/completions", json=chat()).status_code for _ in range(3)]
            with serve(restarted.app, port=port):  # the same port again: the pooled connections were to the old one
                after = [client.post(f"{url}/v1/chat/completions", json=chat()).status_code for _ in range(4)]
            # And with nothing listening, the answer says so (502 naming the deployment), not a hang.
            gone = client.post(f"{url}/v1/chat/completions", json=chat())
    finally:
        app.state.upstreams = old
    assert first == [200] * 3 and after == [200] * 4
    assert gone.status_code == 502 and "dep-r" in gone.json()["error"]["message"]
    assert app.state.data_plane.counts["forward"] == forwarded + 8


def test_models_listing_follows_the_directory_at_once(backend, upstream_port: int) -> None:
    app, url = backend
    old = app.state.upstreams
    try:
        app.state.upstreams = StaticDirectory([
            Upstream("dep-tiny", "tiny", f"http://127.0.0.1:{upstream_port}/v1", True, "running"),
            Upstream("dep-more", "more", f"http://127.0.0.1:{upstream_port}/v1", True, "running")])
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]] == ["tiny", "more"]
    finally:
        app.state.upstreams = old
    assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=AUTH).json()["data"]] == ["tiny"]


def test_an_http_1_0_client_gets_its_stream_from_the_app(backend) -> None:
    """HTTP/1.0 requests are uvicorn's to answer as it always has (the data plane speaks HTTP/1.1 only)."""
    app, url = backend
    port = int(url.rsplit(":", 1)[1])
    forwarded = app.state.data_plane.counts["forward"]
    body = json.dumps(chat(3, stream=True)).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + TOKEN.encode()
                  + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower(), head
    assert rest.count(b"data: {") == 3 and b"data: [DONE]" in rest, rest[-200:]
    assert app.state.data_plane.counts["forward"] == forwarded

"""The /v1 proxy through real HTTP: the official openai client -> ModelDeck -> a fake model server."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager

import httpx
import openai
import pytest
from fastapi import FastAPI

from backend.history import HistoryStore
from backend.metrics import RequestLog
from backend.proxy import StaticDirectory, Upstream, _usage_in, make_http_client
from backend.routes.openai import install_openai_error_handlers, router
from tests.support.live_server import free_port, serve
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_until


def make_app(directory: StaticDirectory, *, history: HistoryStore | None = None,
             read_timeout: float = 600.0, data_plane: bool = True) -> FastAPI:
    """The proxy as the backend wires it: router, error handlers, state built by the lifespan.

    With ``data_plane`` it is served as modeldeck-backend serves it, with the /v1 data plane
    (backend/dataplane.py) in front; this app has no SecurityMiddleware, so its front door is None.
    Without, uvicorn's own protocol hands every request to the app (the ASGI path alone).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.http = make_http_client(read_timeout=read_timeout)
        try:
            yield
        finally:
            await app.state.http.aclose()

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    install_openai_error_handlers(app)
    app.state.upstreams = directory
    app.state.request_log = RequestLog()
    app.state.history = history
    if data_plane:
        app.state.front_door = None
    return app


@pytest.fixture(scope="module")
def upstream() -> FakeUpstream:
    return FakeUpstream(models=("tiny", "cold"))


@pytest.fixture(scope="module")
def upstream_url(upstream: FakeUpstream) -> Iterator[str]:
    with serve(upstream.app) as url:
        yield url


@pytest.fixture(scope="module")
def directory(upstream_url: str) -> StaticDirectory:
    return StaticDirectory([
        Upstream("dep-tiny", "tiny", f"{upstream_url}/v1", True, "running"),
        Upstream("dep-cold", "cold", f"{upstream_url}/v1", False, "starting"),
        Upstream("dep-gone", "gone", f"http://127.0.0.1:{free_port()}/v1", True, "running"),
    ])


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    store = HistoryStore(tmp_path_factory.mktemp("history") / "history.sqlite3")
    yield store
    store.close()


@pytest.fixture(scope="module", params=["data plane", "ASGI"])
def app(request: pytest.FixtureRequest, directory: StaticDirectory, history: HistoryStore) -> FastAPI:
    # Every test runs through both paths: what the data plane answers, the app answers the same way.
    return make_app(directory, history=history, data_plane=request.param == "data plane")


@pytest.fixture(scope="module")
def proxy_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture
def client(proxy_url: str) -> Iterator[openai.OpenAI]:
    # No retries: a 5xx must reach the test as it was answered.
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="modeldeck-token", max_retries=0) as c:
        yield c


@pytest.fixture
def raw(proxy_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_url, timeout=10, trust_env=False) as c:
        yield c


def last_body(upstream: FakeUpstream) -> dict:
    return upstream.received[-1]["body"]


# --- listing and plain answers ------------------------------------------------------------


def test_models_lists_only_ready_deployments(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert {m.id for m in models} == {"tiny", "gone"}
    tiny = next(m for m in models if m.id == "tiny")
    assert tiny.owned_by == "modeldeck"
    assert tiny.model_extra["deployment_id"] == "dep-tiny"
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_non_streamed(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    reply = client.chat.completions.create(model="tiny", max_tokens=3,
                                           messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == "[0][1][2]"
    assert reply.usage.completion_tokens == 3
    received = upstream.received[-1]
    assert "authorization" not in received["headers"]  # ModelDeck's token stays with ModelDeck
    assert received["headers"]["content-type"] == "application/json"


def test_completions_and_embeddings(client: openai.OpenAI) -> None:
    text = client.completions.create(model="tiny", prompt="once upon", max_tokens=2)
    assert text.choices[0].text == "[0][1]"
    streamed = "".join(c.choices[0].text for c in
                       client.completions.create(model="tiny", prompt="x", max_tokens=4, stream=True))
    assert streamed == "[0][1][2][3]"
    emb = client.embeddings.create(model="tiny", input=["a", "b c"])
    assert [d.index for d in emb.data] == [0, 1]
    assert len(emb.data[0].embedding) == 8
    assert emb.usage.prompt_tokens == 3


def test_upstream_client_errors_pass_through(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=[],
                                       extra_body={"x_fail": "json", "x_status": 400})
    assert info.value.status_code == 400
    assert info.value.body["message"] == "fake failure 400"


def test_upstream_json_5xx_passes_and_html_5xx_becomes_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="tiny", messages=[], extra_body={"x_fail": "json"})
    assert info.value.status_code == 500
    assert info.value.body["message"] == "fake failure 500"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="tiny", messages=[], extra_body={"x_fail": "html"})
    assert info.value.status_code == 502
    assert info.value.body["type"] == "upstream_error"
    assert "HTTP 500" in info.value.body["message"] and "logs" in info.value.body["message"]


# --- streaming ----------------------------------------------------------------------------


def test_stream_arrives_incrementally_and_intact(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    n, delay = 8, 0.05
    start = time.monotonic()
    arrivals, texts = [], []
    active_at_first_chunk = None
    stream = client.chat.completions.create(model="tiny", max_tokens=n, stream=True,
                                            messages=[{"role": "user", "content": "count"}],
                                            extra_body={"x_delay": delay})
    for chunk in stream:
        if active_at_first_chunk is None:
            active_at_first_chunk = upstream.active_streams
        arrivals.append(time.monotonic() - start)
        texts.append(chunk.choices[0].delta.content)
    assert texts == [f"[{i}]" for i in range(n)]  # none merged, lost or reordered
    assert active_at_first_chunk >= 1  # the first chunk came while the upstream was still generating
    assert arrivals[0] < (n - 2) * delay
    assert arrivals[-1] - arrivals[0] >= (n - 3) * delay  # spread out, not delivered in one lump


def test_stream_headers_and_raw_events(raw: httpx.Client) -> None:
    body = {"model": "tiny", "messages": [], "max_tokens": 5, "stream": True}
    with raw.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-accel-buffering"] == "no"
        data = r.read()
    events = [e for e in data.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    assert [json.loads(e[6:])["choices"][0]["delta"]["content"] for e in events[:-1]] == \
        [f"[{i}]" for i in range(5)]


def test_upstream_dying_mid_stream_ends_with_error_event(client: openai.OpenAI, raw: httpx.Client) -> None:
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="tiny", messages=[], max_tokens=10, stream=True,
                                                    extra_body={"x_die_after": 3}):
            got.append(chunk.choices[0].delta.content)
    assert got == ["[0]", "[1]", "[2]"]
    assert "stopped mid-reply" in info.value.message
    # The raw stream ends with the error event and [DONE], and the backend stays healthy.
    body = {"model": "tiny", "messages": [], "max_tokens": 10, "stream": True, "x_die_after": 2}
    data = raw.post("/v1/chat/completions", json=body).content
    assert data.endswith(b"data: [DONE]\n\n")
    error = json.loads(data.split(b"\n\n")[-3][6:])["error"]
    assert error["type"] == "upstream_error" and error["code"] == 502
    reply = client.chat.completions.create(model="tiny", messages=[], max_tokens=2)
    assert reply.choices[0].message.content == "[0][1]"


def test_client_disconnect_closes_upstream_promptly(raw: httpx.Client, upstream: FakeUpstream) -> None:
    cancelled = upstream.cancelled
    body = {"model": "tiny", "messages": [], "max_tokens": 400, "stream": True, "x_delay": 0.02}
    with raw.stream("POST", "/v1/chat/completions", json=body) as r:
        # The iterator is kept: a temporary one is collected at once, and closing it closes the
        # connection, so the client would leave here already (the test then raced the proxy).
        chunks = r.iter_raw()
        next(chunks)
        assert upstream.active_streams == 1
    wait_until(lambda: upstream.active_streams == 0, 0.5, interval=0.01,
               what="the upstream stream to end after the client left")
    assert upstream.cancelled == cancelled + 1


def test_client_disconnect_while_upstream_is_silent(raw: httpx.Client, upstream: FakeUpstream) -> None:
    # The upstream sends nothing for a long time: the proxy must notice the client leaving
    # from the connection itself, not from a failed write.
    body = {"model": "tiny", "messages": [], "max_tokens": 3, "stream": True, "x_delay": 5}
    with raw.stream("POST", "/v1/chat/completions", json=body):
        wait_until(lambda: upstream.active_streams == 1, 1, interval=0.01, what="the upstream stream to start")
    wait_until(lambda: upstream.active_streams == 0, 0.5, interval=0.01,
               what="the upstream stream to end after the client left")


def test_client_leaving_before_a_non_streamed_answer_abandons_it(proxy_url: str, app: FastAPI) -> None:
    log: RequestLog = app.state.request_log
    with httpx.Client(base_url=proxy_url, timeout=0.2, trust_env=False) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/chat/completions", json={"model": "tiny", "messages": [], "x_sleep": 1.5})
    # Recorded as abandoned (499) right after the client left, long before the upstream's answer.
    wait_until(lambda: (m := log.recent()[-1]).status == 499 and not m.stream, 0.5, interval=0.01,
               what="the request logged as abandoned (499)")
    assert log.recent()[-1].duration_s < 1.0
    assert log.in_flight == 0


# --- errors answered by ModelDeck ---------------------------------------------------------


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[])
    err = info.value.body
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "invalid_request_error"
    assert "tiny" in err["message"] and "cold" not in err["message"]


def test_not_ready_model_is_503_with_its_state(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="cold", messages=[])
    assert info.value.status_code == 503
    assert "starting" in info.value.body["message"] and "dep-cold" in info.value.body["message"]


@pytest.mark.parametrize("content", [b"{nope", b"[1, 2]", b'{"messages": []}', b'{"model": 3}'])
def test_bad_bodies_are_400_in_openai_shape(raw: httpx.Client, content: bytes) -> None:
    r = raw.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


def test_routing_errors_under_v1_are_openai_shaped(raw: httpx.Client) -> None:
    missing = raw.get("/v1/nothing-here")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = raw.get("/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"
    assert "POST" in wrong.headers["allow"]
    outside = raw.get("/elsewhere")
    assert outside.status_code == 404 and outside.json() == {"detail": "Not Found"}


def test_unreachable_upstream_is_502(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gone", messages=[])
    assert info.value.status_code == 502
    assert "running" in info.value.body["message"] and "logs" in info.value.body["message"]


def test_slow_upstream_is_504(directory: StaticDirectory) -> None:
    with serve(make_app(directory, read_timeout=0.3)) as url:
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
            with pytest.raises(openai.APIStatusError) as info:
                c.chat.completions.create(model="tiny", messages=[], extra_body={"x_sleep": 1.0})
            assert info.value.status_code == 504
            assert "0.3 s" in info.value.body["message"]
            # A stream that goes silent mid-reply ends with a 504 error event.
            got = []
            with pytest.raises(openai.APIError, match="went silent"):
                for chunk in c.chat.completions.create(model="tiny", messages=[], max_tokens=3, stream=True,
                                                       extra_body={"x_delay": 1.0}):
                    got.append(chunk)
            assert got == []


# --- metrics and history ------------------------------------------------------------------


def test_request_log_records_ttft_and_tokens(client: openai.OpenAI, app: FastAPI) -> None:
    log: RequestLog = app.state.request_log
    before = len(log.recent())
    for _ in client.chat.completions.create(model="tiny", max_tokens=6, stream=True,
                                            messages=[{"role": "user", "content": "one two three"}],
                                            stream_options={"include_usage": True},
                                            extra_body={"x_delay": 0.01}):
        pass
    wait_until(lambda: len(log.recent()) > before, 2, interval=0.01, what="the streamed request logged")
    m = log.recent()[-1]
    assert (m.model, m.deployment_id, m.endpoint, m.stream, m.status) == \
        ("tiny", "dep-tiny", "chat/completions", True, 200)
    assert 0 < m.ttft_s < m.duration_s
    assert (m.prompt_tokens, m.completion_tokens) == (3, 6)
    assert m.tokens_per_s > 0
    # Without usage in the stream, the events are counted instead.
    for _ in client.chat.completions.create(model="tiny", max_tokens=4, stream=True, messages=[]):
        pass
    wait_until(lambda: log.recent()[-1].completion_tokens == 4, 2, interval=0.01, what="4 counted tokens logged")
    client.embeddings.create(model="tiny", input="a b")
    wait_until(lambda: log.recent()[-1].endpoint == "embeddings", 2, interval=0.01, what="the embeddings logged")
    assert log.recent()[-1].prompt_tokens == 2
    with contextlib.suppress(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[])
    wait_until(lambda: log.recent()[-1].status == 404, 2, interval=0.01, what="the 404 logged")
    assert log.in_flight == 0


def test_history_recorded_only_when_asked(client: openai.OpenAI, history: HistoryStore,
                                          upstream: FakeUpstream) -> None:
    count = len(history.list(limit=1000))
    client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": "no"}])
    assert len(history.list(limit=1000)) == count

    raw = client.chat.completions.with_raw_response.create(
        model="tiny", max_tokens=3, temperature=0.5, messages=[{"role": "user", "content": "keep me"}],
        extra_headers={"X-ModelDeck-History": "1", "X-ModelDeck-Tag": "compare-1"})
    entry = history.get(int(raw.headers["x-modeldeck-history-id"]))
    assert entry.output == "[0][1][2]" and entry.finish_reason == "stop"
    assert entry.messages == [{"role": "user", "content": "keep me"}]
    assert entry.params["temperature"] == 0.5 and entry.tag == "compare-1"
    assert (entry.status, entry.completion_tokens, entry.deployment_id) == (200, 3, "dep-tiny")


def test_history_of_a_stream_via_body_option_which_is_not_forwarded(
        raw: httpx.Client, history: HistoryStore, upstream: FakeUpstream) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "stream me"}], "max_tokens": 4,
            "stream": True, "modeldeck": {"history": True}}
    data = raw.post("/v1/chat/completions", json=body).content
    assert "modeldeck" not in last_body(upstream)
    assert last_body(upstream)["messages"] == body["messages"]
    # The id comes after the upstream's last event, as an SSE comment that clients skip.
    assert b"data: [DONE]\n\n: modeldeck-history-id " in data
    entry_id = int(data.rsplit(b": modeldeck-history-id ", 1)[1].strip())
    entry = history.get(entry_id)
    assert entry.output == "[0][1][2][3]" and entry.finish_reason == "stop"
    assert entry.ttft_s is not None and entry.completion_tokens == 4
    assert "modeldeck" not in entry.params


def test_history_keeps_failed_runs_too(client: openai.OpenAI, history: HistoryStore) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="gone", messages=[{"role": "user", "content": "x"}],
                                       extra_headers={"X-ModelDeck-History": "1"})
    entry = history.get(int(info.value.response.headers["x-modeldeck-history-id"]))
    assert entry.status == 502 and "could not connect" in entry.error and entry.output == ""


def test_usage_is_found_without_decoding_the_body() -> None:
    body = (b'{"usage": {"prompt_tokens": 2, "completion_tokens": 5}, "choices": [{"message": '
            b'{"content": "the \\"usage\\": {} field"}}], "x": "' + b"a" * 100_000 + b'"}')
    assert _usage_in(body) == {"prompt_tokens": 2, "completion_tokens": 5}
    stream_end = b'data: {"choices": [], "usage": {"completion_tokens": 9}}\n\ndata: [DONE]\n\n'
    assert _usage_in(b'data: {"usage": null}\n\n' + stream_end) == {"completion_tokens": 9}
    assert _usage_in(b'data: {"usage": null}\n\ndata: [DONE]\n\n') is None


def test_history_failure_never_breaks_the_reply(directory: StaticDirectory) -> None:
    class BrokenHistory:
        def record(self, **kwargs):
            raise OSError("disk full")

    with serve(make_app(directory, history=BrokenHistory())) as url:  # type: ignore[arg-type]
        with openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0) as c:
            reply = c.chat.completions.with_raw_response.create(
                model="tiny", messages=[], max_tokens=1, extra_headers={"X-ModelDeck-History": "1"})
            assert reply.parse().choices[0].message.content == "[0]"
            assert "x-modeldeck-history-id" not in reply.headers
            chunks = list(c.chat.completions.create(model="tiny", messages=[], max_tokens=2, stream=True,
                                                    extra_headers={"X-ModelDeck-History": "1"}))
            assert len(chunks) == 2

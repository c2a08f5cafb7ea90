"""/v1/messages through real HTTP to a fake model server: the failure modes a real runtime rarely shows on cue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager

import anthropic
import httpx
import pytest
from fastapi import FastAPI

from backend.metrics import RequestLog
from backend.proxy import StaticDirectory, Upstream, make_http_client
from backend.routes.anthropic import router as anthropic_router
from backend.routes.openai import install_openai_error_handlers, router
from tests.support.live_server import serve
from tests.support.upstream import FakeUpstream
from tests.support.waiting import wait_until

HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> FakeUpstream:
    return FakeUpstream(models=("tiny", "native"))


@pytest.fixture(scope="module")
def proxy_url(upstream: FakeUpstream) -> Iterator[str]:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.http = make_http_client()
        try:
            yield
        finally:
            await app.state.http.aclose()

    with serve(upstream.app) as up:
        app = FastAPI(lifespan=lifespan)
        app.include_router(router)
        app.include_router(anthropic_router)
        install_openai_error_handlers(app)
        app.state.upstreams = StaticDirectory([
            Upstream("dep-tiny", "tiny", f"{up}/v1", True, "running"),
            Upstream("dep-cold", "cold", f"{up}/v1", False, "starting"),
            # Says it speaks Messages but, like Ollama, has no count_tokens (the fake has neither).
            Upstream("dep-native", "native", f"{up}/v1", True, "running",
                     native_apis=frozenset({"anthropic_messages"})),
        ])
        app.state.request_log = RequestLog()
        app.state.history = None
        with serve(app) as url:
            yield url


@pytest.fixture
def client(proxy_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy_url, api_key="x", max_retries=0, timeout=10) as c:
        yield c


def test_translated_request_reaches_the_runtime_as_a_chat_completion(client, upstream):
    reply = client.messages.create(model="tiny", max_tokens=3, messages=HELLO, system="Be brief.",
                                   stop_sequences=["."])
    assert reply.content[0].text == "[0][1][2]" and reply.usage.output_tokens == 3
    sent = upstream.received[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert sent["body"]["stop"] == ["."] and "stop_sequences" not in sent["body"]


def test_a_runtime_dying_mid_stream_ends_the_stream_with_an_anthropic_error_event(client, proxy_url):
    texts = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(model="tiny", max_tokens=10, messages=HELLO,
                                    extra_body={"x_die_after": 3}) as stream:
            for text in stream.text_stream:
                texts.append(text)
    assert texts == ["[0]", "[1]", "[2]"]
    assert "stopped mid-reply" in str(caught.value)
    raw = httpx.post(f"{proxy_url}/v1/messages", timeout=10, json={
        "model": "tiny", "max_tokens": 10, "messages": HELLO, "stream": True, "x_die_after": 2}).content
    last = raw.strip().split(b"\n\n")[-1].split(b"\n")
    assert last[0] == b"event: error"
    error = json.loads(last[1][6:])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert b"message_stop" not in raw


def test_a_client_leaving_a_translated_stream_closes_the_upstream(proxy_url, upstream):
    cancelled = upstream.cancelled
    with httpx.stream("POST", f"{proxy_url}/v1/messages", timeout=10, json={
            "model": "tiny", "max_tokens": 1000, "messages": HELLO, "stream": True, "x_delay": 0.05}) as r:
        for line in r.iter_lines():
            if "text_delta" in line:
                break
    wait_until(lambda: upstream.cancelled > cancelled, 5, what="the fake model server told the client left")


def test_count_tokens_on_a_runtime_without_it_is_a_clear_404(client):
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="native", messages=HELLO)
    message = caught.value.body["error"]["message"]
    assert "cannot count tokens" in message and "has no /v1/messages/count_tokens" in message
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="tiny", messages=HELLO)
    assert "no Messages API" in caught.value.body["error"]["message"]


@pytest.mark.parametrize("content, status, says", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"max_tokens": 3, "messages": []}', 400, "needs a 'model'"),
    (b'{"model": "tiny", "max_tokens": 3, "messages": "hi"}', 400, "'messages' must be a non-empty list"),
    (b'{"model": "cold", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}', 503, "is starting"),
])
def test_modeldecks_own_refusals_are_in_anthropics_shape(proxy_url, content, status, says):
    r = httpx.post(f"{proxy_url}/v1/messages", content=content, timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == status
    body = r.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == ("invalid_request_error" if status == 400 else "api_error")
    assert says in body["error"]["message"]

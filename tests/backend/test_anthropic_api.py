"""POST /v1/messages through a real backend to the real demo container (translated to chat completions), with the official anthropic client."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch_ready, wait_served
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker]
TOKEN = "anthropic-token"
FAST = {"DEMO_TOKEN_DELAY": "0.005"}
HELLO = [{"role": "user", "content": "Tell me about the weather"}]


@pytest.fixture(scope="module")
def backend(engine, demo_image, demo_base_image, tmp_path_factory):
    """(url, served name) of a real backend with the demo launched through it (no Messages API of its own)."""
    served = f"t{RUN_ID}-msg"
    settings = Settings(home=tmp_path_factory.mktemp("msg-home"), token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        dep = launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served, "env": FAST})
        wait_served(url, TOKEN, served)
        yield url, served
        httpx.delete(f"{url}/api/deployments/{dep['id']}", headers={"Authorization": f"Bearer {TOKEN}"},
                     timeout=60)


@pytest.fixture()
def client(backend):
    # The Anthropic base URL is the backend's root: the SDK appends /v1/messages. api_key goes out as x-api-key.
    c = anthropic.Anthropic(base_url=backend[0], api_key=TOKEN, max_retries=0, timeout=60)
    yield c
    c.close()


def _model_stats(url: str, served: str) -> dict:
    stats = httpx.get(f"{url}/api/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
    return stats["requests"]["models"].get(served) or {"requests": 0, "completion_tokens": 0}


def test_create_answers_a_message_with_text_stop_reason_and_usage(backend, client):
    url, served = backend
    before = _model_stats(url, served)
    reply = client.messages.create(model=served, max_tokens=12, system="You are terse.", messages=HELLO,
                                   metadata={"user_id": "someone"}, stop_sequences=["zzzz"],
                                   extra_body={"temperature": 0.7, "top_k": 20})
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.model == served
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text.strip()
    # The demo writes at least min(24, max_tokens) tokens: 12 of 12 is a stop for length.
    assert reply.stop_reason == "max_tokens" and reply.stop_sequence is None
    assert reply.usage.output_tokens == 12 and reply.usage.input_tokens > 4
    after = wait_until(lambda: (s := _model_stats(url, served))["requests"] > before["requests"] and s, 5,
                       what="the request counted under its model")
    assert after["completion_tokens"] - before["completion_tokens"] == 12


def test_stream_delivers_text_as_it_comes_and_a_final_message_with_usage(backend, client):
    _, served = backend
    texts, kinds = [], []
    # ignore_eos (the demo's, passed on as a field that is not Anthropic's): all 30 tokens, whatever is sampled.
    with client.messages.stream(model=served, max_tokens=30, messages=HELLO,
                                extra_body={"ignore_eos": True}) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                texts.append(event.text)
        final = stream.get_final_message()
    assert len(texts) > 5, "text arrives in pieces, as generated"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert final.content[0].type == "text" and final.content[0].text == "".join(texts)
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 30, "usage from the runtime's own count (stream_options.include_usage)"
    assert final.usage.input_tokens > 4


def test_bearer_token_works_too_and_anthropic_version_is_accepted(backend):
    url, served = backend
    r = httpx.post(f"{url}/v1/messages", timeout=60, json={"model": served, "max_tokens": 3, "messages": HELLO},
                   headers={"Authorization": f"Bearer {TOKEN}", "anthropic-version": "2023-06-01",
                            "anthropic-beta": "some-beta"})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["output_tokens"] == 3


def test_no_key_or_a_wrong_key_is_401_and_a_foreign_origin_403(backend):
    url, served = backend
    body = {"model": served, "max_tokens": 3, "messages": HELLO}
    r = httpx.post(f"{url}/v1/messages", json=body, timeout=10)
    assert r.status_code == 401
    error = r.json()
    assert error["type"] == "error" and error["error"]["type"] == "authentication_error"
    assert "x-api-key" in error["error"]["message"]
    with anthropic.Anthropic(base_url=url, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError):
            wrong.messages.create(model=served, max_tokens=3, messages=HELLO)
    r = httpx.post(f"{url}/v1/messages", json=body, timeout=10,
                   headers={"x-api-key": TOKEN, "Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"


def test_an_unknown_model_is_an_anthropic_404_naming_the_served_ones(backend, client):
    _, served = backend
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="no-such-model", max_tokens=3, messages=HELLO)
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    message = body["error"]["message"]
    assert "'no-such-model' does not exist" in message and served in message


def test_what_the_translation_cannot_carry_is_a_400_naming_it(backend, client):
    _, served = backend
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=served, max_tokens=3, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}])
    assert "'document' block" in caught.value.body["error"]["message"]
    # The demo's own refusals come back in Anthropic's shape too.
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model=served, max_tokens=3, messages=HELLO, stop_sequences=list("abcde"))
    assert "The model server answered" in caught.value.body["error"]["message"]


def test_count_tokens_says_the_demo_cannot(backend, client):
    _, served = backend
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model=served, messages=HELLO)
    assert "cannot count tokens" in caught.value.body["error"]["message"]


def test_wrong_method_is_answered_in_anthropics_shape(backend):
    url, _ = backend
    r = httpx.get(f"{url}/v1/messages", headers={"x-api-key": TOKEN}, timeout=10)
    assert r.status_code == 405
    assert r.json()["type"] == "error" and "not allowed" in r.json()["error"]["message"]

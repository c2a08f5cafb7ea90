"""Anthropic's Messages API passed through to llama.cpp's own (llama-server serves /v1/messages), with the official anthropic client.

The launch is test_llamacpp.py's: the tiny real GGUF on the locally built image, through a real backend.
"""

from __future__ import annotations

import anthropic
import pytest

# The same fixtures (each module gets its own instances): the tiny GGUF, the catalog pointing at the
# local build, a real backend, and the model launched once.
from tests.containers.test_llamacpp import TOKEN, api, catalog_dir, model_dir, settings, tiny  # noqa: F401

pytestmark = [pytest.mark.docker, pytest.mark.slow]
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture()
def client(api):  # noqa: F811
    c = anthropic.Anthropic(base_url=api, api_key=TOKEN, max_retries=0, timeout=60)
    yield c
    c.close()


def test_messages_are_passed_through_to_llama_server(client, tiny):  # noqa: F811
    reply = client.messages.create(model=tiny["served"], max_tokens=8, messages=HELLO)
    # llama-server's own answer, not ModelDeck's translation: its ids are its chat completion ids
    # (server-task.cpp to_json_anthropic: "id": oaicompat_cmpl_id) and its usage counts cached tokens.
    assert reply.id.startswith("chatcmpl-"), reply.id
    assert reply.usage.cache_read_input_tokens is not None
    assert reply.type == "message" and reply.role == "assistant" and reply.model == tiny["served"]
    assert reply.content and reply.content[0].type == "text"
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 8
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens > 4


def test_streamed_messages_come_from_llama_server_with_usage(client, tiny):  # noqa: F811
    texts = []
    with client.messages.stream(model=tiny["served"], max_tokens=10, messages=HELLO) as stream:
        for text in stream.text_stream:
            texts.append(text)
        final = stream.get_final_message()
    assert final.id.startswith("chatcmpl-"), final.id
    assert "".join(texts) == "".join(b.text for b in final.content if b.type == "text")
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 10


def test_count_tokens_is_llama_servers_own(client, tiny):  # noqa: F811
    counted = client.messages.count_tokens(model=tiny["served"], messages=HELLO)
    longer = client.messages.count_tokens(model=tiny["served"], messages=[
        {"role": "user", "content": "Hello there, and a much longer message than the first one was"}])
    assert 4 < counted.input_tokens < longer.input_tokens


def test_an_unknown_model_is_anthropics_404_before_any_runtime(client, tiny):  # noqa: F811
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="nope", max_tokens=3, messages=HELLO)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert tiny["served"] in caught.value.body["error"]["message"]

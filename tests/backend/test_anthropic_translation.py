"""Anthropic Messages <-> chat completions translation (backend/anthropic_api.py), alone: no Docker, no HTTP."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from backend.anthropic_api import (
    MessagesAdapter,
    StreamTranslator,
    Unsupported,
    from_chat_reply,
    stop_reason,
    to_chat_request,
)
from backend.errors import Flavour, error_body, flavour_for


def _events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for frame in raw.decode().split("\n\n"):
        lines = frame.split("\n")
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        data = next((line[6:] for line in lines if line.startswith("data: ")), None)
        if name and data:
            out.append((name, json.loads(data)))
    return out


def test_request_carries_system_turns_sampling_and_stops():
    chat = to_chat_request({
        "model": "m", "max_tokens": 20, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"], "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled"},
        "messages": [{"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": [{"type": "thinking", "thinking": "..."},
                                                       {"type": "text", "text": "Hello"}]},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]})
    assert chat == {"model": "m", "max_tokens": 20, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END"],
                    "messages": [{"role": "system", "content": "Be brief.\nBe kind."},
                                 {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello"},
                                 {"role": "user", "content": "a\nb"}]}


def test_a_json_schema_output_format_becomes_response_format():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = to_chat_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}],
                            "output_config": {"effort": "low", "format": {"type": "json_schema", "schema": schema}}})
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    with pytest.raises(Unsupported, match="output_config.format"):
        to_chat_request({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                         "output_config": {"format": {"type": "xml"}}})


def test_fields_that_are_not_anthropics_go_to_the_runtime_as_they_are():
    chat = to_chat_request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}],
                            "ignore_eos": True, "min_tokens": 3, "speed": "fast", "service_tier": "auto"})
    assert chat["ignore_eos"] is True and chat["min_tokens"] == 3
    assert "speed" not in chat and "service_tier" not in chat


def test_streamed_request_asks_the_runtime_for_usage():
    chat = to_chat_request({"model": "m", "max_tokens": 5, "stream": True,
                            "messages": [{"role": "user", "content": "Hi"}]})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_tools_and_tool_turns_become_openai_tools_calls_and_tool_messages():
    chat = to_chat_request({
        "model": "m", "max_tokens": 50,
        "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                              {"type": "tool_use", "id": "toolu_1", "name": "weather",
                                               "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "text", "text": "-3 C"}]},
                                         {"type": "text", "text": "Warm enough?"}]}]})
    assert chat["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"},
                                                               "description": "Weather now"}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["messages"][1:] == [
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [{"id": "toolu_1", "type": "function",
                         "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3 C"},
        {"role": "user", "content": "Warm enough?"}]
    assert to_chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                            "tool_choice": {"type": "any"}})["tool_choice"] == "required"


@pytest.mark.parametrize("body, named", [
    ({"messages": []}, "'messages'"),
    ({"messages": [{"role": "system", "content": "x"}]}, "'messages[0]'"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "'document'"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305",
                                                                  "name": "web_search"}]}, "server tool"),
    ({"messages": [{"role": "user", "content": "x"}], "mcp_servers": [{"url": "x"}]}, "'mcp_servers'"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "'max_tokens'"),
    ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}}, "'tool_choice'"),
])
def test_what_cannot_be_carried_is_refused_by_name(body, named):
    with pytest.raises(Unsupported, match=re.escape(named)):
        to_chat_request({"model": "m", **body})


def test_reply_has_text_and_tool_blocks_stop_reason_and_usage():
    reply = from_chat_reply({"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me look.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}, "m", "msg_x")
    assert reply == {"id": "msg_x", "type": "message", "role": "assistant", "model": "m",
                     "content": [{"type": "text", "text": "Let me look."},
                                 {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}],
                     "stop_reason": "tool_use", "stop_sequence": None,
                     "usage": {"input_tokens": 11, "output_tokens": 7}}
    assert [stop_reason(r) for r in ("stop", "length", "tool_calls", None, "other")] == \
        ["end_turn", "max_tokens", "tool_use", "end_turn", "end_turn"]


def _openai_stream(*chunks: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_stream_becomes_anthropic_events_whatever_the_chunking():
    raw = _openai_stream(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1",
                                                            "function": {"name": "f", "arguments": '{"a"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}) + b": modeldeck-history-id 7\n\n"
    for size in (1, 5, len(raw)):
        t = StreamTranslator("m", "msg_1")
        out = t.start() + b"".join(t.feed(raw[i:i + size]) for i in range(0, len(raw), size)) + t.close()
        events = _events(out)
        assert [n for n, _ in events] == [
            "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
            "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
            "content_block_stop", "message_delta", "message_stop"]
        assert events[0][1]["message"]["id"] == "msg_1" and events[0][1]["message"]["role"] == "assistant"
        assert "".join(d["delta"]["text"] for n, d in events if d.get("delta", {}).get("type") == "text_delta") \
            == "Hello"
        assert events[6][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}
        assert "".join(d["delta"]["partial_json"] for n, d in events
                       if d.get("delta", {}).get("type") == "input_json_delta") == '{"a": 1}'
        assert events[-2][1] == {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                 "usage": {"output_tokens": 4, "input_tokens": 9}}
        assert out.endswith(b": modeldeck-history-id 7\n\n"), "the history id comment passes through"


def test_errors_in_the_stream_end_it_in_anthropics_shape():
    t = StreamTranslator("m")
    out = t.feed(_openai_stream({"choices": [{"index": 0, "delta": {"content": "a"}}]},
                                {"error": {"message": "out of memory", "type": "server_error"}})) + t.close()
    assert out.endswith(b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
                        b'"message":"out of memory"}}\n\n')
    assert b"message_stop" not in out
    own = b"event: error\ndata: " + error_body(Flavour.ANTHROPIC, 502, 502, "server stopped") + b"\n\n"
    t = StreamTranslator("m")
    assert t.feed(own) == own and t.close() == b""


def test_adapter_turns_upstream_errors_and_replies_into_anthropic_bodies():
    adapter = MessagesAdapter()
    assert adapter.request({"model": "demo", "max_tokens": 3, "messages": [{"role": "user", "content": "x"}]})
    error = json.loads(adapter.body(400, b'{"error":{"message":"\'stop\' must be ...","type":"x"}}'))
    assert error == {"type": "error", "error": {"type": "invalid_request_error",
                                                "message": "The model server answered: 'stop' must be ..."}}
    reply = json.loads(adapter.body(200, json.dumps({"choices": [{"message": {"content": "hi"},
                                                                   "finish_reason": "length"}]}).encode()))
    assert reply["model"] == "demo" and reply["id"] == adapter.id and reply["stop_reason"] == "max_tokens"
    assert reply["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_adapter_stream_closes_the_relay_it_reads():
    closed = []

    async def relay():
        try:
            yield _openai_stream({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]})
        finally:
            closed.append(True)

    async def run() -> bytes:
        return b"".join([c async for c in MessagesAdapter().stream(relay())])

    events = _events(asyncio.run(run()))
    assert events[-1][0] == "message_stop" and events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert closed == [True]


def test_error_flavour_follows_the_path():
    assert flavour_for("/v1/messages") is Flavour.ANTHROPIC
    assert flavour_for("/v1/messages/count_tokens") is Flavour.ANTHROPIC
    assert flavour_for("/v1/messagesx") is Flavour.OPENAI
    assert flavour_for("/v1/chat/completions") is Flavour.OPENAI
    assert json.loads(error_body(Flavour.ANTHROPIC, 404, "x", "No such model.", "Launch it.")) == \
        {"type": "error", "error": {"type": "not_found_error", "message": "No such model. Launch it."}}

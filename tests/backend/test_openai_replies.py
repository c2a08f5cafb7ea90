"""Tests of backend.openai_replies: the first choice's text from a whole answer or SSE chunks split anyhow."""

from __future__ import annotations

import json

import pytest

from backend.openai_replies import ReplyCollector, reply_text


def chat_event(text=None, finish=None, index=0) -> bytes:
    delta = {} if text is None else {"content": text}
    return b"data: " + json.dumps({"choices": [{"index": index, "delta": delta, "finish_reason": finish}]}).encode() \
        + b"\n\n"


STREAM = (b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}).encode() + b"\n\n"
          + chat_event("Hel") + chat_event("other choice", index=1) + b": a comment\n\n" + b"data: not json\n\n"
          + chat_event("lo, ") + chat_event("wörld") + chat_event(finish="stop")
          + b'data: {"choices":[],"usage":{"completion_tokens":3}}\n\n' + b"data: [DONE]\n\n")


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_a_chat_stream_split_anyhow_gives_the_first_choice(size):
    reply = ReplyCollector("chat/completions")
    for i in range(0, len(STREAM), size):
        reply.feed(STREAM[i:i + size])
    assert reply.text() == "Hello, wörld" and reply.finish_reason == "stop"


def test_a_completions_stream_reads_text():
    reply = ReplyCollector("completions")
    reply.feed(b'data: {"choices":[{"index":0,"text":"a"}]}\n\ndata: {"choices":[{"index":0,"text":"b",'
               b'"finish_reason":"length"}]}\n\ndata: [DONE]\n\n')
    assert reply.text() == "ab" and reply.finish_reason == "length"


def test_an_unfinished_last_line_waits_for_its_end():
    reply = ReplyCollector("chat/completions")
    event = chat_event("x")
    reply.feed(event[:-2])
    assert reply.text() == ""
    reply.feed(event[-2:])
    assert reply.text() == "x"


@pytest.mark.parametrize(("decoded", "endpoint", "expected"), [
    ({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}, "chat/completions", ("hi", "stop")),
    ({"choices": [{"text": "hi", "finish_reason": "length"}]}, "completions", ("hi", "length")),
    ({"data": [{"embedding": [0.1]}]}, "embeddings", ("", None)),
    ({"choices": [{"message": {"content": None}, "finish_reason": "tool_calls"}]}, "chat/completions",
     ("", "tool_calls")),
    ({"choices": []}, "chat/completions", ("", None)),
    ({"choices": ["x"]}, "chat/completions", ("", None)),
    ([1, 2], "chat/completions", ("", None)),
    (None, "completions", ("", None)),
])
def test_a_whole_answer(decoded, endpoint, expected):
    assert reply_text(decoded, endpoint) == expected

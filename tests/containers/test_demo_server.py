"""The demo model server (containers/demo/server.py) over real HTTP, with httpx and the openai client."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from tests.containers.conftest import DEMO_DIR, DemoProcess, start_demo, stop_demo
from tests.support.waiting import wait_until

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Tell me about the fox and the crow."}]


def sse_events(response: httpx.Response) -> list[str]:
    """The data fields of a Server-Sent Events response, in order."""
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


def health(http: httpx.Client) -> dict:
    reply = http.get("/health")
    assert reply.status_code == 200
    return reply.json()


# ---- pure helpers -------------------------------------------------------------------------

def test_stop_scanner_cuts_at_a_stop_spanning_tokens() -> None:
    from protocol import StopScanner

    scanner = StopScanner(["the fox"])
    released = [scanner.feed(p) for p in ["Then", " the", " fox", " ran"]]
    assert "".join(released) == "Then "
    assert scanner.stopped and scanner.text == "Then "
    assert released[1] == " "  # "the" was held back: it might have begun the stop


def test_join_piece_spaces_punctuation_and_capitalises_sentences() -> None:
    from lm import join_piece

    assert join_piece("the", None, True) == "The"
    assert join_piece(",", "fox", False) == ","
    assert join_piece("the", ".", False) == " The"
    assert join_piece("fox", "the", False) == " fox"


# ---- health and models --------------------------------------------------------------------

def test_health_names_the_model_and_counts_generations(http: httpx.Client) -> None:
    body = health(http)
    assert body["status"] == "ok"
    assert body["model"] == "demo-tiny"
    assert {"active_generations", "total_generations", "cancelled_generations"} <= body.keys()
    before = body["total_generations"]
    http.post(CHAT, json={"model": "demo", "messages": USER, "max_tokens": 2}).raise_for_status()
    assert health(http)["total_generations"] == before + 1


def test_models_lists_the_served_name(openai_client: openai.OpenAI) -> None:
    models = openai_client.models.list().data
    assert [m.id for m in models] == ["demo"]


# ---- non-streamed -------------------------------------------------------------------------

def test_chat_completion_has_text_and_usage(openai_client: openai.OpenAI) -> None:
    reply = openai_client.chat.completions.create(model="demo", messages=USER, max_tokens=30, seed=1)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content[0].isupper()
    assert choice.finish_reason in ("stop", "length")
    assert reply.model == "demo"
    assert 0 < reply.usage.completion_tokens <= 30
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_reply_is_readable_and_picks_up_the_users_words(openai_client: openai.OpenAI) -> None:
    replies = [openai_client.chat.completions.create(model="demo", messages=USER, max_tokens=60, seed=s)
               .choices[0].message.content for s in range(6)]
    for text in replies:
        assert not any(f" {p}" in text for p in ".,;:!?"), text
    assert any("fox" in text.lower() or "crow" in text.lower() for text in replies), replies


def test_model_id_is_accepted_as_well_as_served_name(http: httpx.Client) -> None:
    reply = http.post(CHAT, json={"model": "demo-tiny", "messages": USER, "max_tokens": 3})
    assert reply.status_code == 200


def test_completion_continues_the_prompt_with_usage(openai_client: openai.OpenAI) -> None:
    reply = openai_client.completions.create(model="demo", prompt="The Wolf said", max_tokens=12, seed=4)
    assert reply.object == "text_completion"
    assert reply.choices[0].text.startswith(" ") or reply.choices[0].text[:1] in ",.;:!?"
    assert reply.usage.prompt_tokens == 3
    assert 0 < reply.usage.completion_tokens <= 12


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_honoured_exactly_when_nothing_stops(http: httpx.Client, field: str) -> None:
    body = {"model": "demo", "messages": USER, field: 17, "ignore_eos": True, "seed": 9}
    reply = http.post(CHAT, json=body).json()
    assert reply["usage"]["completion_tokens"] == 17
    assert reply["choices"][0]["finish_reason"] == "length"


def test_stop_sequence_ends_the_text_before_it(http: httpx.Client) -> None:
    base = {"model": "demo", "prompt": "The Fox", "max_tokens": 40, "temperature": 0, "ignore_eos": True}
    full = http.post("/v1/completions", json=base).json()["choices"][0]["text"]
    words = full.split()
    stop = " ".join(words[5:7])  # two words from the middle, so the stop spans tokens
    cut = http.post("/v1/completions", json={**base, "stop": [stop, "never-seen-stop"]}).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == full[: full.index(stop)]
    assert stop not in cut["choices"][0]["text"]
    streamed = http.post("/v1/completions", json={**base, "stop": stop, "stream": True})
    events = sse_events(streamed)
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == cut["choices"][0]["text"]
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "stop"


def test_same_seed_gives_the_same_reply_and_seeds_differ(http: httpx.Client) -> None:
    def reply(seed: int) -> str:
        body = {"model": "demo", "messages": USER, "max_tokens": 25, "seed": seed, "temperature": 1.0}
        return http.post(CHAT, json=body).json()["choices"][0]["message"]["content"]

    assert reply(42) == reply(42)
    assert len({reply(s) for s in range(5)}) > 1


def test_temperature_zero_is_deterministic(http: httpx.Client) -> None:
    body = {"model": "demo", "prompt": "The Lion", "max_tokens": 25, "temperature": 0}
    texts = {http.post("/v1/completions", json=body).json()["choices"][0]["text"] for _ in range(3)}
    assert len(texts) == 1


# ---- streaming ------------------------------------------------------------------------------

def test_chat_stream_sends_one_token_per_chunk_and_ends_with_done(http: httpx.Client) -> None:
    body = {"model": "demo", "messages": USER, "max_tokens": 12, "ignore_eos": True, "stream": True}
    with http.stream("POST", CHAT, json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = sse_events(reply)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(content) == 12  # one chunk per token
    assert all(piece.strip() and len(piece.split()) == 1 for piece in content)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "usage" not in chunks[-1]


def test_stream_arrives_incrementally(http: httpx.Client) -> None:
    body = {"model": "demo", "messages": USER, "max_tokens": 40, "ignore_eos": True, "stream": True}
    arrivals = []
    with http.stream("POST", CHAT, json=body) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    # 40 tokens at 5 ms each: a buffered reply would arrive all at once.
    assert arrivals[-1] - arrivals[1] > 0.1


def test_openai_client_streams_chat_with_usage(openai_client: openai.OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model="demo", messages=USER, max_tokens=8, stream=True, seed=3,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 8
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]


def test_completion_stream_matches_the_unstreamed_text(http: httpx.Client) -> None:
    body = {"model": "demo", "prompt": "A Mouse", "max_tokens": 15, "seed": 11}
    whole = http.post("/v1/completions", json=body).json()["choices"][0]["text"]
    events = sse_events(http.post("/v1/completions", json={**body, "stream": True}))
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == whole


# ---- embeddings -----------------------------------------------------------------------------

def test_embeddings_are_normalised_and_deterministic(openai_client: openai.OpenAI, http: httpx.Client) -> None:
    reply = openai_client.embeddings.create(model="demo", input=["the fox", "the crow", "the fox"])
    vectors = [d.embedding for d in reply.data]
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert all(len(v) == 64 for v in vectors)
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, rel_tol=1e-5)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    plain = http.post("/v1/embeddings", json={"model": "demo", "input": "the fox"}).json()
    assert plain["object"] == "list" and plain["usage"]["prompt_tokens"] == 2
    assert plain["data"][0]["embedding"] == pytest.approx(vectors[0], abs=1e-6)


# ---- errors ---------------------------------------------------------------------------------

def test_malformed_json_is_a_400_in_openai_shape(http: httpx.Client) -> None:
    reply = http.post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


@pytest.mark.parametrize(("field", "value"), [("temperature", "hot"), ("max_tokens", 0), ("n", 2),
                                              ("stop", 5), ("seed", 1.5), ("stream", "yes")])
def test_bad_parameter_is_a_400_naming_it(http: httpx.Client, field: str, value: object) -> None:
    reply = http.post(CHAT, json={"model": "demo", "messages": USER, field: value})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == field and field in error["message"]


def test_unknown_model_is_a_404_model_not_found(http: httpx.Client, openai_client: openai.OpenAI) -> None:
    reply = http.post(CHAT, json={"model": "gpt-9", "messages": USER})
    assert reply.status_code == 404
    assert reply.json() == {"error": {"message": reply.json()["error"]["message"], "type": "invalid_request_error",
                                      "param": "model", "code": "model_not_found"}}
    with pytest.raises(openai.NotFoundError):
        openai_client.completions.create(model="gpt-9", prompt="hi")


def test_unknown_path_is_a_404(http: httpx.Client) -> None:
    assert http.get("/v1/nothing").status_code == 404


# ---- cancellation and process life ----------------------------------------------------------

def test_client_disconnect_cancels_the_generation(demo_server: DemoProcess, http: httpx.Client) -> None:
    before = health(http)
    body = {"model": "demo", "messages": USER, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=demo_server.url, timeout=30) as streamer:
        with streamer.stream("POST", CHAT, json=body) as reply:
            lines = reply.iter_lines()
            for _ in range(3):
                next(lines)
            assert health(http)["active_generations"] == before["active_generations"] + 1
    now = wait_until(lambda: (h := health(http))["active_generations"] == before["active_generations"] and h,
                     0.5, interval=0.01, what="the generation to stop after the client left")
    assert now["cancelled_generations"] == before["cancelled_generations"] + 1
    cancelled = [ln for ln in demo_server.log_text().splitlines() if "finish=cancelled" in ln]
    assert cancelled and "completion_tokens=0" not in cancelled[-1]


def test_each_request_is_logged_with_its_tokens(demo_server: DemoProcess, http: httpx.Client) -> None:
    # Only lines written after this request count: the server is shared with earlier tests,
    # and the cancellation test leaves a line with completion_tokens=3 too.
    before = len(demo_server.log_text())
    http.post("/v1/completions", json={"model": "demo", "prompt": "x", "max_tokens": 3, "ignore_eos": True})
    line = wait_until(lambda: next((ln for ln in demo_server.log_text()[before:].splitlines()
                                    if "POST /v1/completions" in ln and "completion_tokens=" in ln), None),
                      2, interval=0.01,
                      what="the request's log line")
    assert "POST /v1/completions 200" in line and "completion_tokens=3" in line


def test_unknown_cli_argument_exits_2(demo_model_file) -> None:
    result = subprocess.run([sys.executable, str(DEMO_DIR / "server.py"), "--model-file", str(demo_model_file),
                             "--no-such-flag"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--no-such-flag" in result.stderr


def test_sigterm_stops_the_server_within_2_s(demo_model_file, tmp_path) -> None:
    demo = start_demo(demo_model_file, tmp_path / "server.log")
    try:
        # A stream in progress must not hold up the exit.
        with httpx.Client(base_url=demo.url, timeout=30) as client:
            body = {"model": "demo", "messages": USER, "max_tokens": 4000, "ignore_eos": True, "stream": True}
            with client.stream("POST", CHAT, json=body) as reply:
                lines = reply.iter_lines()  # kept: collecting it would close the stream now
                next(lines)
                demo.process.send_signal(signal.SIGTERM)
                started = time.monotonic()
                assert demo.process.wait(timeout=2) == 0
                assert time.monotonic() - started < 2
    finally:
        stop_demo(demo)

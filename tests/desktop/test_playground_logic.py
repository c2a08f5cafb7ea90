"""Playground and monitor logic without a window: transcript, requests, exports, metrics, ring series."""

from __future__ import annotations

import json
import math
import shlex

import pytest

from desktop.monitor.series import RingSeries
from desktop.monitor.store import HOST_CPU, StatsStore, deployment_key, gpu_key
from desktop.playground.export import TOKEN_VAR, as_curl, as_python
from desktop.playground.chunks import Chunk, parse_chunk
from desktop.playground.metrics import ReplyMeter, decode_rate
from desktop.playground.request import (GenerationParams, build_chat_request, parse_seed, parse_stop,
                                        request_headers)
from desktop.playground.transcript import ReplyMetrics, Transcript

# -- transcript --------------------------------------------------------------------


def test_transcript_builds_messages_turn_by_turn():
    t = Transcript(system_prompt="Be brief.")
    t.add_user("Hi")
    reply = t.start_reply("m1")
    reply.content = "Hello!"
    assert t.messages("And you?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And you?"},
    ]
    assert t.last_user_text() == "Hi"


def test_transcript_leaves_out_empty_replies_and_drops_failed_exchange():
    t = Transcript()
    t.add_user("one")
    t.start_reply("m")  # failed before any text
    assert t.messages() == [{"role": "user", "content": "one"}]
    t.drop_last_exchange()
    assert t.turns == []


def test_transcript_markdown_shows_speakers_metrics_and_errors():
    t = Transcript()
    t.add_user("Hi")
    turn = t.start_reply("demo")
    turn.content, turn.streaming = "Hello **there**", False
    turn.metrics = ReplyMetrics(ttft_s=0.1, completion_tokens=3, total_s=0.5, tokens_per_s=5.0, from_usage=True)
    turn.finish_reason = "stopped"
    turn.error = "boom\nbang"
    md = t.to_markdown()
    assert "#### You" in md and "#### demo" in md and "Hello **there**" in md
    assert "TTFT 0.10 s" in md and "3 tokens" in md and "5.0 tok/s" in md and "stopped" in md
    assert "> **Error:** boom bang" in md


def test_transcript_from_history_entry():
    entry = {"id": 3, "model": "demo", "messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": [{"type": "text", "text": "q2"}]}],
        "params": {"temperature": 0.2}, "output": "a2", "finish_reason": "stop", "ttft_s": 0.05,
        "completion_tokens": 7, "tokens_per_s": 70.0, "duration_s": 0.2}
    t = Transcript.from_history(entry)
    assert t.system_prompt == "sys"
    assert [(x.role, x.content) for x in t.turns] == [("user", "q1"), ("assistant", "a1"), ("user", "q2"),
                                                       ("assistant", "a2")]
    assert t.turns[-1].metrics.completion_tokens == 7 and t.turns[-1].model == "demo"


# -- request builder -------------------------------------------------------------------


def test_parse_stop_splits_commas_and_lines_and_unescapes():
    assert parse_stop("END, ###\n\\n\\n,,") == ("END", "###", "\n\n")
    assert parse_stop("") == ()
    with pytest.raises(ValueError):
        parse_stop("a,b,c,d,e")


def test_parse_seed():
    assert parse_seed(" 42 ") == 42
    assert parse_seed("") is None
    with pytest.raises(ValueError, match="whole number"):
        parse_seed("x1")


def test_build_chat_request_streams_with_usage_and_optional_fields():
    msgs = [{"role": "user", "content": "hi"}]
    body = build_chat_request("m", msgs, GenerationParams(temperature=0.3, top_p=0.9, max_tokens=20))
    assert body == {"model": "m", "messages": msgs, "temperature": 0.3, "top_p": 0.9, "max_tokens": 20,
                    "stream": True, "stream_options": {"include_usage": True}}
    full = build_chat_request("m", msgs, GenerationParams(stop=("X",), seed=7), stream=False)
    assert full["stop"] == ["X"] and full["seed"] == 7 and "stream" not in full
    with pytest.raises(ValueError):
        build_chat_request("", msgs, GenerationParams())
    assert request_headers("cmp") == {"X-ModelDeck-History": "1", "X-ModelDeck-Tag": "cmp"}


# -- exports --------------------------------------------------------------------------------


def _body():
    msgs = [{"role": "system", "content": "It's fine"}, {"role": "user", "content": "Say \"hi\" 'now'"}]
    return build_chat_request("demo-x", msgs, GenerationParams(temperature=0.5, stop=("END",), seed=3))


def test_curl_is_valid_shell_with_the_body_and_no_token():
    text = as_curl("http://127.0.0.1:8765/", _body())
    assert "$MODELDECK_TOKEN" in text and "Bearer" in text
    words = shlex.split(text.replace("\\\n", " "))
    assert words[0] == "curl" and "http://127.0.0.1:8765/v1/chat/completions" in words
    assert json.loads(words[words.index("-d") + 1]) == _body()


def test_python_export_compiles_and_carries_parameters():
    text = as_python("http://127.0.0.1:8765", _body())
    compile(text, "<export>", "exec")
    assert f"os.environ['{TOKEN_VAR}']" in text and "base_url='http://127.0.0.1:8765/v1'" in text
    assert "model='demo-x'" in text and "temperature=0.5" in text and "seed=3" in text and "stop=['END']" in text
    assert "It's fine" in text


# -- metrics --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_meter_counts_chunks_and_prefers_usage():
    clock = FakeClock()
    meter = ReplyMeter(clock)
    clock.t += 0.2
    meter.content("")  # role-only chunk: not a token
    meter.content("Hel")
    for _ in range(4):
        clock.t += 0.1
        meter.content("x")
    meter.finish()
    m = meter.result()
    assert m.ttft_s == pytest.approx(0.2) and m.total_s == pytest.approx(0.6)
    assert m.completion_tokens == 5 and not m.from_usage
    assert m.tokens_per_s == pytest.approx(4 / 0.4)
    meter.usage({"prompt_tokens": 3, "completion_tokens": 9})
    m = meter.result()
    assert m.completion_tokens == 9 and m.prompt_tokens == 3 and m.from_usage
    assert "9 tokens" in m.summary() and "TTFT 0.20 s" in m.summary()


def test_meter_prefers_the_servers_own_decode_timing():
    clock = FakeClock()
    meter = ReplyMeter(clock)
    clock.t += 0.1
    meter.content("a")
    clock.t += 0.5
    meter.content("b")
    meter.finish()
    assert meter.result().tokens_per_s == pytest.approx(2.0) and not meter.result().rate_from_server
    for junk in ("fast", {"predicted_per_second": "9"}, {"predicted_per_second": True, "predicted_n": 5},
                 {"predicted_per_second": -3.0, "predicted_n": 5}, {"predicted_per_second": 800.0, "predicted_n": 1}):
        meter.timings(junk)  # not a rate, or a one-token reply with no decode time: the client's figure stays
    assert meter.result().tokens_per_s == pytest.approx(2.0)
    # llama-server's last chunk: "timings": {"predicted_n": 47, "predicted_per_second": 4980.3, ...}
    meter.timings({"predicted_n": 47, "predicted_ms": 9.44, "predicted_per_second": 4980.3})
    m = meter.result()
    assert m.tokens_per_s == pytest.approx(4980.3) and m.rate_from_server
    assert "4980.3 tok/s (server)" in m.summary()


def test_decode_rate_is_tokens_after_the_first_over_time_after_the_first():
    assert decode_rate(11, 0.5, 2.5) == pytest.approx(5.0)
    assert decode_rate(1, 0.4, 0.5) == pytest.approx(2.0)  # one token: no decode time, the whole reply
    assert decode_rate(3, 1.0, 1.0) == pytest.approx(3.0)  # all at once: the whole reply
    assert decode_rate(0, 0.1, 1.0) is None and decode_rate(5, None, 1.0) is None
    assert decode_rate(1, 0.0, 0.0) is None


def test_chunk_parser_reads_chat_and_legacy_chunks():
    chat = {"choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None},
                        {"index": 1, "delta": {"content": "other choice"}}]}
    assert parse_chunk(chat) == Chunk(text="Hel")
    assert parse_chunk({"choices": [{"index": 0, "text": "lo", "finish_reason": "length"}]}) \
        == Chunk(text="lo", finish_reason="length")
    last = parse_chunk({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9},
                        "timings": {"predicted_n": 9, "predicted_per_second": 41.5}})
    assert last.text == "" and last.usage["completion_tokens"] == 9 and last.timings["predicted_n"] == 9
    assert parse_chunk({"choices": [{"delta": {"role": "assistant"}}], "usage": None}) == Chunk()
    assert parse_chunk("[DONE]") == Chunk(done=True)
    assert parse_chunk({"error": {"message": "out of memory", "type": "server_error"}}).error == "out of memory"
    assert parse_chunk({"error": "plain text"}).error == "plain text"
    assert parse_chunk("keep-alive") is None and parse_chunk(["x"]) is None


def test_meter_takes_decoded_chunks():
    clock = FakeClock()
    meter = ReplyMeter(clock)
    clock.t += 0.25
    meter.add(parse_chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
    meter.add(parse_chunk({"choices": [{"index": 0, "delta": {"content": "a"}}]}))
    clock.t += 0.5
    meter.add(parse_chunk({"choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 2, "completion_tokens": 2}}))
    meter.finish()
    m = meter.result()
    assert m.ttft_s == pytest.approx(0.25) and m.completion_tokens == 2 and m.from_usage
    assert m.tokens_per_s == pytest.approx(decode_rate(2, 0.25, 0.75)) == pytest.approx(2.0)


def test_meter_without_tokens():
    m = ReplyMeter(FakeClock()).result()
    assert m.ttft_s is None and m.tokens_per_s is None and m.completion_tokens == 0


# -- ring series and stats store ---------------------------------------------------------------


def test_ring_series_wraps_keeps_order_and_windows():
    s = RingSeries("x", capacity=5)
    for t in range(8):
        assert s.append(float(t), t * 10)
    assert len(s) == 5 and s.times() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert s.append(2.0, 1) is False  # older than the newest
    assert s.window(4.5, 6.0, margin=0) == ([5.0, 6.0], [50.0, 60.0])
    assert s.window(4.5, 6.0) == ([4.0, 5.0, 6.0, 7.0], [40.0, 50.0, 60.0, 70.0])
    assert s.value_at(5.4) == (5.0, 50.0) and s.last() == (7.0, 70.0)
    s.trim_before(6.0)
    assert s.times() == [6.0, 7.0]
    s.append(8.0, None)
    assert math.isnan(s.last()[1])


def test_ring_series_holds_fifteen_minutes_at_one_hertz():
    s = RingSeries()
    for t in range(3000):
        s.append(float(t), 1.0)
    assert len(s) == s.capacity >= 900


def _snapshot(t, deployments=None, gpus=None, available=False):
    return {"time": t, "seq": int(t), "host": {"cpu_pct": 10.0 + t, "mem_used_bytes": 100, "mem_total_bytes": 1000},
            "gpus": gpus or [], "gpu_status": {"available": available, "reason": None if available else "no NVML"},
            "deployments": deployments or {}}


def test_store_ingests_dedupes_and_tracks_layout():
    store = StatsStore(window_s=10)
    dep = {"cpu_pct": 50.0, "mem_used_bytes": 10, "vram_bytes": None, "running_on_cpu": True, "wants_gpu": True}
    gpu = {"index": 0, "name": "H100", "utilization_pct": 40, "memory_used_bytes": 5, "memory_total_bytes": 80,
           "temperature_c": 50, "power_w": 300, "power_limit_w": 700}
    assert store.ingest(_snapshot(1.0, {"d1": dep}, [gpu], True))
    v = store.layout_version
    assert not store.ingest(_snapshot(1.0))  # the same sample again (backfill overlapping the stream)
    assert store.ingest_many([_snapshot(2.0, {"d1": dep}, [gpu], True), _snapshot(3.0, {"d1": dep}, [gpu], True)]) == 2
    assert store.layout_version == v
    assert len(store.get(HOST_CPU)) == 3 and store.get(gpu_key(0, "power")).last() == (3.0, 300.0)
    assert store.deployments["d1"].running_on_cpu and store.gpus[0].name == "H100"
    store.ingest(_snapshot(4.0))  # d1 gone: a gap, flagged not present
    assert store.layout_version > v and not store.deployments["d1"].present
    assert math.isnan(store.get(deployment_key("d1", "cpu")).last()[1])
    store.ingest(_snapshot(20.0))  # past the window: forgotten
    assert "d1" not in store.deployments and len(store.get(HOST_CPU)) == 1

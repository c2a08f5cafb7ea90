"""SseStream against the real backend: events arrive as they are sent, errors read as before, stop() never waits."""

from __future__ import annotations

import time

import pytest

from desktop.client import BackendClient, SseStream
from tests.support.live_server import free_port


@pytest.fixture()
def client(live_backend) -> BackendClient:
    url, token = live_backend
    c = BackendClient(url, token)
    yield c
    c.deleteLater()


class Recorder:
    """Everything one stream emitted, with the time each event arrived."""

    def __init__(self, stream: SseStream):
        self.events: list[tuple[float, str, object]] = []
        self.failures: list = []
        self.ended = 0
        stream.event.connect(lambda name, data: self.events.append((time.monotonic(), name, data)))
        stream.failed.connect(self.failures.append)
        stream.ended.connect(self._on_ended)

    def _on_ended(self) -> None:
        self.ended += 1


def test_chat_tokens_arrive_as_the_model_sends_them(qtbot, client, demo_model):
    # The demo model sends a token every 20 ms: a buffering transport (HTTP/2, a cache, a
    # proxy) would hand them over in one lump at the end.
    # ignore_eos: the demo's sampled reply may end early; this test needs its full 80 tokens.
    body = {"model": demo_model, "stream": True, "max_tokens": 80, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Count for me"}]}
    stream = client.stream("/v1/chat/completions", method="POST", body=body)
    rec = Recorder(stream)
    with qtbot.waitSignal(stream.ended, timeout=30000):
        stream.start()
    assert not rec.failures
    assert rec.events[-1][2] == "[DONE]"
    content = [t for t, _, data in rec.events if isinstance(data, dict)
               and any((c.get("delta") or {}).get("content") for c in data.get("choices", []))]
    assert len(content) >= 40
    spread = content[-1] - content[0]
    assert spread > 0.5, f"tokens arrived within {spread:.3f} s: buffered, not streamed"
    # Arrival follows the model's pace: most gaps are near the token delay, not one lump.
    batches = len({round(t, 3) for t in content})
    assert batches >= len(content) // 2, f"{len(content)} tokens arrived in only {batches} batches"
    assert not stream.running


def test_named_events_are_decoded_and_stop_returns_at_once(qtbot, client):
    stream = client.stream("/api/stats/stream")
    rec = Recorder(stream)
    stream.start()
    assert stream.running
    qtbot.waitUntil(lambda: len(rec.events) >= 2, timeout=10000)
    name, data = rec.events[0][1:]
    assert name == "stats" and isinstance(data, dict) and "host" in data
    t0 = time.perf_counter()
    stream.stop()
    assert time.perf_counter() - t0 < 0.05
    assert not stream.running
    seen = len(rec.events)
    # Another snapshot is sent every second: wait for the backend to send one more, then check.
    probe = client.stream("/api/stats/stream")
    probe_rec = Recorder(probe)
    probe.start()
    qtbot.waitUntil(lambda: len(probe_rec.events) >= 2, timeout=10000)
    probe.stop()
    assert len(rec.events) == seen and rec.ended == 0 and not rec.failures  # stop() is silent


def test_http_errors_carry_the_backends_message(qtbot, live_backend):
    url, _ = live_backend
    client = BackendClient(url, "wrong-token")
    stream = client.stream("/api/stats/stream")
    rec = Recorder(stream)
    with qtbot.waitSignal(stream.ended, timeout=10000):
        stream.start()
    (error,) = rec.failures
    assert error.status == 401 and error.message and "token" in str(error).lower()
    assert not rec.events
    client.deleteLater()


def test_not_found_answer_is_a_failure_then_ended(qtbot, client):
    stream = client.stream("/api/deployments/no-such-deployment/events")
    rec = Recorder(stream)
    with qtbot.waitSignal(stream.ended, timeout=10000):
        stream.start()
    (error,) = rec.failures
    assert error.status == 404 and error.code != "http_404"  # parsed from the JSON error body
    assert rec.ended == 1


def test_nothing_listening_is_a_lost_stream(qtbot):
    client = BackendClient(f"http://127.0.0.1:{free_port()}", "t")
    stream = client.stream("/api/stats/stream")
    rec = Recorder(stream)
    with qtbot.waitSignal(stream.ended, timeout=15000):
        stream.start()
    (error,) = rec.failures
    assert error.status == 0 and error.code == "stream_lost"
    assert error.message.startswith("The stream from the backend broke (")
    client.deleteLater()


def test_a_silent_stream_fails_after_its_read_timeout(qtbot, client):
    # Stats come once a second; a 0.3 s read limit is crossed after the first snapshot.
    stream = client.stream("/api/stats/stream", read_timeout=0.3)
    rec = Recorder(stream)
    with qtbot.waitSignal(stream.ended, timeout=10000):
        stream.start()
    assert rec.events and rec.events[0][1] == "stats"
    (error,) = rec.failures
    assert error.code == "stream_lost" and "nothing arrived for 0.3 s" in error.message


def test_open_streams_never_hold_up_rest_calls(qtbot, client):
    # Qt allows six connections per host and manager: streams must not take the REST calls' ones.
    streams = [client.stream("/api/stats/stream") for _ in range(8)]
    recs = [Recorder(s) for s in streams]
    for s in streams:
        s.start()
    qtbot.waitUntil(lambda: all(r.events for r in recs), timeout=15000)
    answers = []
    reply = client.get("/api/engine")
    reply.succeeded.connect(answers.append)
    qtbot.waitUntil(lambda: bool(answers), timeout=10000)
    assert isinstance(answers[0], dict) and "reachable" in answers[0]
    for s in streams:
        s.stop()
    assert not any(s.running for s in streams)

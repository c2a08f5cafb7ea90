"""Tests of backend.routes.stats through real HTTP: snapshot, history, SSE stream, /metrics."""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

import backend.routes.stats as stats_routes
from backend.metrics import RequestLog, RequestMetrics
from backend.routes.stats import render_prometheus, router
from backend.stats import ContainerRef, StatsSampler, StatsSnapshot
from tests.support.live_server import serve
from tests.support.waiting import wait_until

from .helpers import FakeNvml, fake_gpu


def make_app(sampler: StatsSampler) -> FastAPI:
    """An app whose lifespan starts and stops the sampler, as the real app factory does."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.stats = sampler
        sampler.start()
        try:
            yield
        finally:
            sampler.stop()

    app = FastAPI(lifespan=lifespan)
    app.include_router(router)
    return app


@pytest.fixture()
def served():
    """``served(sampler) -> (base_url, sampler)``, serving until the test ends."""
    stack = []

    def start(sampler: StatsSampler) -> str:
        cm = serve(make_app(sampler))
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _none() -> list[ContainerRef]:
    return []


def test_503_before_the_first_sample_then_snapshot(served):
    gate = threading.Event()

    def slow_source():
        gate.wait(10)  # the first tick cannot finish before the test has looked
        return []

    sampler = StatsSampler(slow_source, interval=0.1)
    url = served(sampler)
    try:
        for path in ("/api/stats", "/metrics"):
            r = httpx.get(url + path)
            assert r.status_code == 503
            err = r.json()["error"]
            assert err["code"] == "stats_not_ready" and err["message"] and err["hint"]
        r = httpx.get(url + "/api/stats/history", params={"seconds": 60})
        assert r.status_code == 200 and r.json()["snapshots"] == []
    finally:
        gate.set()
    r = wait_until(lambda: (r := httpx.get(url + "/api/stats")).status_code == 200 and r,
                   what="the first snapshot over HTTP")
    snap = StatsSnapshot.model_validate(r.json())
    assert snap.seq >= 1 and snap.gpu_status.available is False and snap.gpu_status.reason


def test_snapshot_and_history(served):
    sampler = StatsSampler(_none, interval=0.1, history_seconds=960)
    url = served(sampler)
    wait_until(lambda: sampler.latest() and sampler.latest().seq >= 5, what="five snapshots")
    r = httpx.get(url + "/api/stats")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"time", "seq", "host", "gpus", "gpu_status", "deployments", "requests"}
    assert abs(body["time"] - time.time()) < 5

    r = httpx.get(url + "/api/stats/history", params={"seconds": 1})
    assert r.status_code == 200
    hist = r.json()
    assert hist["interval"] == 0.1 and hist["seconds"] == 1
    seqs = [x["seq"] for x in hist["snapshots"]]
    assert 5 <= len(seqs) <= 12 and seqs == sorted(seqs)

    for bad in (0, 961, "x"):
        assert httpx.get(url + "/api/stats/history", params={"seconds": bad}).status_code == 422


def _read_events(lines, want: int) -> tuple[list[dict], list[str]]:
    """Parse SSE from an iterator of lines until ``want`` events (or, with 0, the first comment).

    The caller keeps the iterator: closing it (as a ``for`` over ``iter_lines()`` does on
    ``break``) makes httpx drop the connection.
    """
    events, comments, data, name = [], [], [], None
    for line in lines:
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
        elif line == "" and data:
            assert name == "stats"
            events.append(json.loads("\n".join(data)))
            data, name = [], None
            if want and len(events) >= want:
                break
        if comments and want == 0:
            break
    return events, comments


def test_sse_stream_events_and_disconnect(served):
    sampler = StatsSampler(_none, interval=0.1)
    url = served(sampler)
    wait_until(sampler.latest, what="the first snapshot")
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url + "/api/stats/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events, _ = _read_events(lines := r.iter_lines(), want=3)
            assert sampler.subscriber_count == 1
            del lines
    snaps = [StatsSnapshot.model_validate(e) for e in events]
    assert [s.seq for s in snaps] == sorted(s.seq for s in snaps) and snaps[-1].seq > snaps[0].seq
    # The client went away: the server notices and lets go of the subscription.
    wait_until(lambda: sampler.subscriber_count == 0, timeout=5, what="the subscriber to be released")


def test_sse_heartbeat(served, monkeypatch):
    monkeypatch.setattr(stats_routes, "HEARTBEAT_S", 0.2)
    sampler = StatsSampler(_none, interval=30.0)  # one sample, then a long quiet
    url = served(sampler)
    wait_until(sampler.latest, what="the first snapshot")
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url + "/api/stats/stream") as r:
            events, comments = _read_events(r.iter_lines(), want=0)
    assert len(events) == 1  # the latest snapshot comes first, at once
    assert comments == [": ping"]
    wait_until(lambda: sampler.subscriber_count == 0, timeout=5, what="the subscriber to be released")


# -- /metrics --------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A strict-enough parser of text format 0.0.4: types by family, and every sample.

    Raises:
        AssertionError: on a line that does not parse, a sample before its TYPE, or a TYPE twice.
    """
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP twice for {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "summary", "histogram", "untyped"}
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, _, label_text, value = m.groups()
            labels = {}
            if label_text:
                pos = 0
                while pos < len(label_text):
                    lm = _LABEL.match(label_text, pos)
                    assert lm, f"bad labels in {line!r}"
                    raw = lm.group(2)
                    labels[lm.group(1)] = (raw.replace("\\n", "\n").replace('\\"', '"')
                                           .replace("\\\\", "\\"))
                    pos = lm.end()
            family = re.sub(r"_(sum|count|bucket)$", "", name) if name not in types else name
            assert family in types, f"sample {name} before its TYPE line"
            samples.append((name, labels, float(value)))
    return types, samples


def test_metrics_over_http_parse(served):
    log = RequestLog()
    log.started()
    log.record(RequestMetrics(model='we"ird\\model\nname', deployment_id="d", endpoint="chat/completions",
                              stream=True, status=200, started_at=time.time(), duration_s=1.0, ttft_s=0.25,
                              completion_tokens=12, prompt_tokens=3))
    log.record(RequestMetrics(model="demo", deployment_id="d", endpoint="completions",
                              stream=False, status=503, started_at=time.time(), duration_s=0.1))
    refs = [ContainerRef("a" * 64, "demo-1", wants_gpu=True, ready=True)]
    sampler = StatsSampler(lambda: refs, request_log=log, interval=0.1,
                           nvml=FakeNvml([fake_gpu(0), fake_gpu(1)]))
    url = served(sampler)
    wait_until(sampler.latest, what="the first snapshot")
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    types, samples = parse_prometheus(r.text)

    def value(name, **labels):
        hits = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
        assert len(hits) == 1, (name, labels, hits)
        return hits[0]

    assert types["modeldeck_requests_total"] == "counter"
    assert types["modeldeck_request_ttft_seconds"] == "summary"
    assert types["modeldeck_host_cpu_percent"] == "gauge"
    assert 0 <= value("modeldeck_host_cpu_percent") <= 100
    assert value("modeldeck_host_memory_total_bytes") > 0
    assert value("modeldeck_gpu_available") == 1
    assert value("modeldeck_gpu_utilization_percent", gpu="1") == 41
    assert value("modeldeck_gpu_memory_total_bytes", gpu="0") == 24 * 2**30
    assert value("modeldeck_gpu_temperature_celsius", gpu="0") == 50
    assert value("modeldeck_gpu_power_watts", gpu="0") == 150
    assert value("modeldeck_deployment_vram_bytes", deployment="demo-1") == 0
    assert value("modeldeck_deployment_running_on_cpu", deployment="demo-1") == 1
    weird = 'we"ird\\model\nname'
    assert value("modeldeck_requests_total", model=weird, status="200") == 1
    assert value("modeldeck_requests_total", model="demo", status="503") == 1
    assert value("modeldeck_request_ttft_seconds_sum", model=weird) == 0.25
    assert value("modeldeck_request_ttft_seconds_count", model=weird) == 1
    assert value("modeldeck_completion_tokens_total", model=weird) == 12
    assert value("modeldeck_requests_in_flight") == 0


def test_render_leaves_out_unknown_values():
    snap = StatsSampler(_none, nvml=FakeNvml([fake_gpu(0)], unsupported={"nvmlDeviceGetPowerUsage"})).sample_once()
    types, samples = parse_prometheus(render_prometheus(snap))
    names = {n for n, _, _ in samples}
    assert "modeldeck_gpu_power_watts" in types and "modeldeck_gpu_power_watts" not in names
    assert "modeldeck_gpu_temperature_celsius" in names


def test_every_route_has_operation_id_and_summary():
    ids = set()
    for route in router.routes:
        assert route.operation_id and route.summary, route.path
        ids.add(route.operation_id)
    assert len(ids) == len(router.routes) == 4


def test_sse_stream_ends_cleanly_when_subscriptions_close(served):
    # What a server does before draining connections at shutdown, so it does not wait on streams.
    sampler = StatsSampler(_none, interval=0.1)
    url = served(sampler)
    wait_until(sampler.latest, what="the first snapshot")
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", url + "/api/stats/stream") as r:
            lines = r.iter_lines()
            assert next(lines).startswith("event: stats")
            sampler.close_subscriptions()
            rest = list(lines)  # returns: the server ended the response
    assert all(line == "" or line.startswith(("event:", "data:")) for line in rest)
    assert sampler.subscriber_count == 0

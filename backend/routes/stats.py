"""Stats routes: the latest snapshot, recent history, a live SSE stream, and Prometheus /metrics."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterable

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from backend.deps import StatsDep
from backend.errors import Flavour, error_body, error_response
from backend.stats.models import StatsHistory, StatsSnapshot

router = APIRouter(tags=["stats"])

HEARTBEAT_S = 15.0
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NOT_READY = (503, "stats_not_ready", "The stats sampler has not taken its first sample yet.",
              "Try again in a second; the first sample is taken right after the backend starts.")
_NOT_READY_RESPONSE = {503: {"description": "No sample has been taken yet",
                             "content": {"application/json": {
                                 "example": json.loads(error_body(Flavour.MODELDECK, *_NOT_READY))}}}}


def _not_ready() -> Response:
    return error_response(Flavour.MODELDECK, *_NOT_READY, headers={"Retry-After": "1"})


@router.get("/api/stats", operation_id="getStats", summary="The latest stats snapshot",
            response_model=StatsSnapshot, responses=_NOT_READY_RESPONSE)
async def get_stats(stats: StatsDep, request: Request):
    """Host, GPUs, deployments and request totals as of the sampler's last tick."""
    snapshot = stats.latest()
    if snapshot is None:
        return _not_ready()
    return Response(snapshot_json_cache(request.app).of(snapshot), media_type="application/json")


class SnapshotJson:
    """The latest snapshot's JSON, made once however many pollers and stream subscribers read it.

    A snapshot is immutable and served many times in its tick: a thread-pool hop plus
    response-model validation per request cost more than reading the snapshot. One per app
    (``app.state.snapshot_json``), so two apps in one process never serve each other's.
    """

    __slots__ = ("_snapshot", "_json")

    def __init__(self) -> None:
        self._snapshot: StatsSnapshot | None = None
        self._json = b""

    def of(self, snapshot: StatsSnapshot) -> bytes:
        """``snapshot`` as JSON bytes, serialised only when it is not the one seen last."""
        if self._snapshot is not snapshot:
            self._json = snapshot.model_dump_json().encode()
            self._snapshot = snapshot
        return self._json


def snapshot_json_cache(app) -> SnapshotJson:
    """The app's snapshot JSON cache, made on first use (apps built without the factory have one too)."""
    try:
        return app.state.snapshot_json
    except AttributeError:
        app.state.snapshot_json = cache = SnapshotJson()
        return cache


@router.get("/api/stats/history", operation_id="getStatsHistory",
            summary="Stats snapshots of the last seconds", response_model=StatsHistory)
def get_stats_history(stats: StatsDep,
                      seconds: float = Query(60, ge=1, le=960, description="how far back, in seconds")):
    """Every snapshot taken in the last ``seconds``, oldest first (empty before the first tick)."""
    return StatsHistory(seconds=seconds, interval=stats.interval, snapshots=stats.history(seconds))


@router.get("/api/stats/stream", operation_id="streamStats", summary="Live stats as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: stats` with a StatsSnapshot as `data`, per sample"}})
async def stream_stats(stats: StatsDep, request: Request) -> StreamingResponse:
    """One ``stats`` event per sample, starting with the latest; ``: ping`` comments keep idle proxies open.

    The response ends when the client goes away or the sampler's subscriptions are closed.
    """
    return StreamingResponse(_events(stats, snapshot_json_cache(request.app)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(stats, cache: SnapshotJson) -> AsyncIterator[bytes]:
    # Subscribed inside the generator so that the finally below always pairs with it:
    # when the client goes away the server cancels this generator and the
    # subscription is released.
    sub = stats.subscribe()
    try:
        while True:
            try:
                snapshot = await sub.next(timeout=HEARTBEAT_S)
            except StopAsyncIteration:  # the sampler stopped
                return
            if snapshot is None:
                yield b": ping\n\n"
            else:
                # Every subscriber gets the same snapshot object: serialised once, not once each.
                yield b"event: stats\ndata: " + cache.of(snapshot) + b"\n\n"
    finally:
        sub.close()


@router.get("/metrics", operation_id="getMetrics", summary="Stats in Prometheus text format",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}, **_NOT_READY_RESPONSE})
def get_metrics(stats: StatsDep):
    """The latest snapshot in Prometheus text exposition format 0.0.4."""
    snapshot = stats.latest()
    if snapshot is None:
        return _not_ready()
    return PlainTextResponse(render_prometheus(snapshot), media_type=PROMETHEUS_CONTENT_TYPE)


# -- Prometheus text exposition -----------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Exposition:
    """Collects metric families so that each has one HELP and TYPE line above all its samples."""

    def __init__(self):
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[tuple[str, dict[str, str], float | None]]) -> None:
        """Add a family; samples are ``(suffix, labels, value)``, a None value is left out."""
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            if value is None:
                continue
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self._lines.append(f"{name}{suffix}{{{label_text}}} {_number(value)}" if label_text
                               else f"{name}{suffix} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def render_prometheus(s: StatsSnapshot) -> str:
    """The snapshot in Prometheus text exposition format 0.0.4.

    Args:
        s: the snapshot to render.
    Returns:
        The exposition text; figures that are None (unsupported, unknown) are left out.
    """
    out = _Exposition()

    def gauge(name: str, help_text: str, samples):
        out.family(name, "gauge", help_text, [("", labels, v) for labels, v in samples])

    def counter(name: str, help_text: str, samples):
        # In format 0.0.4 a counter's TYPE line names the sample itself, _total included
        # (only summaries and histograms group suffixed samples under one name).
        out.family(name, "counter", help_text, [("", labels, v) for labels, v in samples])

    h = s.host
    gauge("modeldeck_host_cpu_percent", "Host CPU use over all cores, 0-100.", [({}, h.cpu_pct)])
    gauge("modeldeck_host_cpu_count", "Logical CPUs of the host.", [({}, h.cpu_count)])
    gauge("modeldeck_host_memory_used_bytes", "Host memory in use (total minus available).",
          [({}, h.mem_used_bytes)])
    gauge("modeldeck_host_memory_available_bytes", "Host memory available without swapping.",
          [({}, h.mem_available_bytes)])
    gauge("modeldeck_host_memory_total_bytes", "Host memory in total.", [({}, h.mem_total_bytes)])
    gauge("modeldeck_host_swap_used_bytes", "Host swap in use.", [({}, h.swap_used_bytes)])
    gauge("modeldeck_host_disk_used_bytes", "Used space on the data folder's filesystem.",
          [({}, h.disk_used_bytes)])
    gauge("modeldeck_host_disk_total_bytes", "Size of the data folder's filesystem.",
          [({}, h.disk_total_bytes)])
    gauge("modeldeck_host_network_receive_bytes_per_second", "Bytes received per second, all interfaces.",
          [({}, h.net_rx_bytes_per_s)])
    gauge("modeldeck_host_network_transmit_bytes_per_second", "Bytes sent per second, all interfaces.",
          [({}, h.net_tx_bytes_per_s)])

    gauge("modeldeck_gpu_available", "1 when NVML answers, else 0.", [({}, s.gpu_status.available)])
    gpus = s.gpus
    gauge("modeldeck_gpu_info", "Constant 1, labelled with each GPU's identity.",
          [({"gpu": str(g.index), "uuid": g.uuid or "", "name": g.name or ""}, 1) for g in gpus])
    gauge("modeldeck_gpu_utilization_percent", "GPU utilization, 0-100.",
          [({"gpu": str(g.index)}, g.utilization_pct) for g in gpus])
    gauge("modeldeck_gpu_memory_used_bytes", "GPU memory in use.",
          [({"gpu": str(g.index)}, g.memory_used_bytes) for g in gpus])
    gauge("modeldeck_gpu_memory_total_bytes", "GPU memory in total.",
          [({"gpu": str(g.index)}, g.memory_total_bytes) for g in gpus])
    gauge("modeldeck_gpu_temperature_celsius", "GPU core temperature.",
          [({"gpu": str(g.index)}, g.temperature_c) for g in gpus])
    gauge("modeldeck_gpu_power_watts", "GPU power draw.", [({"gpu": str(g.index)}, g.power_w) for g in gpus])
    gauge("modeldeck_gpu_power_limit_watts", "GPU enforced power limit.",
          [({"gpu": str(g.index)}, g.power_limit_w) for g in gpus])

    deps = sorted(s.deployments.values(), key=lambda d: d.deployment_id)
    gauge("modeldeck_deployment_cpu_percent", "Deployment container CPU use, percent of one core.",
          [({"deployment": d.deployment_id}, d.cpu_pct) for d in deps])
    gauge("modeldeck_deployment_memory_used_bytes", "Deployment container memory use, without page cache.",
          [({"deployment": d.deployment_id}, d.mem_used_bytes) for d in deps])
    gauge("modeldeck_deployment_memory_limit_bytes", "Deployment container memory limit.",
          [({"deployment": d.deployment_id}, d.mem_limit_bytes) for d in deps])
    gauge("modeldeck_deployment_vram_bytes", "GPU memory held by the deployment's processes.",
          [({"deployment": d.deployment_id}, d.vram_bytes) for d in deps])
    gauge("modeldeck_deployment_running_on_cpu",
          "1 when the deployment wants a GPU and is ready, yet holds no GPU memory.",
          [({"deployment": d.deployment_id}, d.running_on_cpu) for d in deps])

    req = s.requests
    models = sorted(req.models.items())
    counter("modeldeck_requests_total", "Proxied inference requests, by served model and HTTP status.",
            [({"model": m, "status": str(code)}, n)
             for m, t in models for code, n in sorted(t.by_status.items())])
    out.family("modeldeck_request_ttft_seconds", "summary",
               "Time to first token of proxied requests.",
               [row for m, t in models for row in (("_sum", {"model": m}, t.ttft_s_sum),
                                                   ("_count", {"model": m}, t.ttft_count))])
    counter("modeldeck_completion_tokens_total", "Completion tokens generated, by served model.",
            [({"model": m}, t.completion_tokens) for m, t in models])
    counter("modeldeck_prompt_tokens_total", "Prompt tokens read, by served model.",
            [({"model": m}, t.prompt_tokens) for m, t in models])
    gauge("modeldeck_decode_tokens_per_second",
          "Output tokens per second after the first token, as clients received them, by served model.",
          [({"model": m}, t.decode_tokens_per_s) for m, t in models if t.decode_tokens_per_s is not None])
    gauge("modeldeck_requests_in_flight", "Proxied inference requests in progress.", [({}, req.in_flight)])
    return out.text()

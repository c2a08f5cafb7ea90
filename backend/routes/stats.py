"""Stats routes: the latest snapshot, recent history, a live SSE stream, and Prometheus /metrics."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from backend.deps import StatsDep
from backend.errors import Flavour, error_body, error_response
from backend.prometheus import CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from backend.prometheus import Exposition, render_prometheus  # noqa: F401 - render_prometheus: this module's API
from backend.sse import HEARTBEAT_S, event_stream, sse_event
from backend.stats.models import StatsHistory, StatsSnapshot

router = APIRouter(tags=["stats"])

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
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: stats` with a StatsSnapshot as `data`, per sample"}})
async def stream_stats(stats: StatsDep, request: Request) -> EventSourceResponse:
    """One ``stats`` event per sample, starting with the latest; ``: ping`` comments keep idle proxies open.

    The response ends when the client goes away or the sampler's subscriptions are closed.
    """
    return event_stream(_events(stats, snapshot_json_cache(request.app)), ping_s=HEARTBEAT_S)


async def _events(stats, cache: SnapshotJson) -> AsyncIterator[ServerSentEvent]:
    # Subscribed inside the generator so that the finally below always pairs with it:
    # when the client goes away the response cancels this generator and the
    # subscription is released.
    sub = stats.subscribe()
    try:
        async for snapshot in sub:  # ends when the sampler closes its subscriptions
            # Every subscriber gets the same snapshot object: serialised once, not once each.
            yield sse_event("stats", cache.of(snapshot).decode())
    finally:
        sub.close()


@router.get("/metrics", operation_id="getMetrics", summary="Stats in Prometheus text format",
            response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}}, **_NOT_READY_RESPONSE})
async def get_metrics(stats: StatsDep, request: Request):
    """The latest snapshot in Prometheus text exposition format 0.0.4."""
    # async: the text is made once per snapshot (Exposition), so no scrape needs a thread-pool hop.
    text = _exposition(request.app, stats).text()
    if text is None:
        return _not_ready()
    return Response(text, media_type=PROMETHEUS_CONTENT_TYPE)


def _exposition(app, stats) -> Exposition:
    """The app's own Prometheus registry and text cache, made on first use."""
    try:
        return app.state.prometheus
    except AttributeError:
        app.state.prometheus = exposition = Exposition(stats.latest)
        return exposition

"""Server-Sent Events as the control API sends them: sse-starlette, with ``: ping`` comments and no buffering.

Not for ``/v1``: the proxy passes the model server's own bytes through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

from sse_starlette import EventSourceResponse, ServerSentEvent

#: Seconds between ``: ping`` comments, which keep idle proxies and load balancers from closing a stream.
HEARTBEAT_S = 15.0
# Lines end in a bare LF, as they always have here (sse-starlette's default is CRLF); every SSE
# parser takes either.
_SEP = "\n"
_PING = ServerSentEvent(comment="ping", sep=_SEP)


def sse_event(name: str, data: str) -> ServerSentEvent:
    """One ``event: <name>`` frame carrying ``data`` (a line of JSON here)."""
    return ServerSentEvent(data, event=name, sep=_SEP)


def event_stream(frames: AsyncIterable[ServerSentEvent], *, ping_s: float | None = None) -> EventSourceResponse:
    """An answer that sends ``frames`` as they come and a ``: ping`` comment every ``ping_s`` seconds.

    When the client goes away the frames' generator is cancelled at its current ``await``, so
    its ``finally`` releases what it holds (a stats subscription, the engine's log stream);
    the stream also ends when the generator returns or the server shuts down.

    Args:
        frames: the events to send, usually made with :func:`sse_event`.
        ping_s: seconds between pings; HEARTBEAT_S (read now, so tests can shorten it) when None.
    """
    # no-cache as before (sse-starlette would say no-store); it adds X-Accel-Buffering: no,
    # so nginx and the like pass each event on at once.
    return EventSourceResponse(frames, ping=HEARTBEAT_S if ping_s is None else ping_s, sep=_SEP, ping_message_factory=lambda: _PING,
                               headers={"Cache-Control": "no-cache"})

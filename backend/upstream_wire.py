"""HTTP/1.1 to model servers as asyncio protocols: the data plane's pooled upstream connections.

The fast path of ``/v1`` (backend/dataplane.py) relays bytes; it needs from an upstream
connection only a status, two headers and the body as it arrives, in callbacks on the event
loop. httpx gives all that through a task per request, an async iterator per body and
objects per chunk; here a connection is an ``asyncio.Protocol`` whose httptools parser calls
the request's sink directly, and idle connections wait in a stack per ``(host, port)``.

The sink (one per request; :class:`Sink`) is told, in order: ``on_head`` once, ``on_body``
for each piece of the body, then exactly one of ``on_done`` (the answer is complete) or
``on_lost`` (the connection ended first); ``flush`` after each read that did not end it, so
the pieces one read produced can leave in one write. A connection answered with keep-alive goes back
to the pool after ``on_done``; any other ends closed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import httptools

#: Idle connections kept per model server; more are closed when they come back.
MAX_IDLE_PER_ORIGIN = 128
#: Seconds an idle connection is kept (model servers close theirs after 5 s to minutes).
IDLE_EXPIRY_S = 30.0


class Sink(Protocol):
    """What one request's answer is delivered to."""

    def on_head(self, status: int, headers: dict[bytes, bytes]) -> None: ...

    def on_body(self, data: bytes) -> None: ...

    def on_done(self) -> None: ...

    def on_lost(self, exc: BaseException | None, answered: bool) -> None:
        """The connection ended before the answer was complete; ``answered``: any of it had arrived."""
        ...

    def flush(self) -> None:
        """One read from the server was parsed: send on what it produced (called while the answer goes on)."""
        ...


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a model server."""

    __slots__ = ("pool", "key", "transport", "parser", "sink", "headers", "answered", "closed", "idle_since",
                 "reused", "_close_delimited")

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]):
        self.pool, self.key = pool, key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Sink | None = None
        self.headers: dict[bytes, bytes] = {}
        self.answered = False
        self.closed = False
        self.idle_since = 0.0
        self.reused = False  # it answered a request before this one (a stale keep-alive may be closed)
        self._close_delimited = False

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.sink is None:  # bytes nobody asked for: the server is confused; drop it
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lose(exc)
            return
        sink = self.sink
        if sink is not None:
            sink.flush()  # what this read produced goes to the client in one write

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        if self.sink is not None:
            if self._close_delimited and self.answered:
                # A body without Content-Length or chunking ends with the connection.
                sink, self.sink = self.sink, None
                sink.on_done()
                return
            self._lose(exc)

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.answered = True
        headers = self.headers
        self._close_delimited = b"content-length" not in headers and b"transfer-encoding" not in headers
        if self.sink is not None:
            self.sink.on_head(self.parser.get_status_code(), headers)

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.on_body(body)

    def on_message_complete(self) -> None:
        sink, self.sink = self.sink, None
        keep = self.parser.should_keep_alive() and not self._close_delimited
        if keep:
            self.pool.release(self)
        else:
            self.abort()
        if sink is not None:
            sink.on_done()

    # --

    def send(self, head: bytes, body: bytes, sink: Sink) -> None:
        """Write one request; its answer goes to ``sink``."""
        self.sink, self.headers, self.answered = sink, {}, False
        self.transport.write(head + body)  # one system call

    def detach(self) -> None:
        """The request's client left: close this connection (the model server stops generating)."""
        self.sink = None
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.abort()

    def _lose(self, exc: BaseException | None) -> None:
        sink, self.sink = self.sink, None
        answered = self.answered
        self.abort()
        if sink is not None:
            sink.on_lost(exc, answered)


class UpstreamPool:
    """Keep-alive connections per ``(host, port)``: the most recently used idle one is taken first."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._idle: dict[tuple[str, int], deque[UpstreamConnection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, key: tuple[str, int]) -> UpstreamConnection | None:
        """An idle connection to ``key``, or None (then ``connect``)."""
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, key: tuple[str, int], timeout: float) -> UpstreamConnection:
        """A new connection to ``key``.

        Raises:
            OSError: the connection was refused or failed.
            TimeoutError: not connected within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            _, conn = await self.loop.create_connection(lambda: UpstreamConnection(self, key), key[0], key[1])
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        if conn.closed:
            return
        idle = self._idle.setdefault(conn.key, deque())
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(IDLE_EXPIRY_S, self._sweep)

    def discard(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.key)
        if idle:
            try:
                idle.remove(conn)
            except ValueError:
                pass

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = self.loop.time() - IDLE_EXPIRY_S
        for idle in list(self._idle.values()):
            while idle and idle[0].idle_since < cutoff:  # oldest first (left end)
                idle.popleft().abort()
        if any(self._idle.values()):
            self._sweeper = self.loop.call_later(IDLE_EXPIRY_S, self._sweep)

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

"""A lean HTTP/1.1 load client on an asyncio protocol: keep-alive requests, chunked SSE parsed as it arrives, events checked.

Lean on purpose: the same client measures every target, and the less it costs per
request and per event, the less its own noise hides the proxies' differences. It is an
``asyncio.BufferedProtocol`` rather than ``StreamReader`` calls because the 256-stream row
sends 20,480 events/s through one process: with a ``readline``/``readexactly`` await per
chunk and ``json.loads`` per event the client alone took ~90% of a core and its own
queueing was most of the "frame delay" it reported, direct included. Here a read is
parsed in one synchronous pass (chunk framing, SSE framing, the event's number and
stamp) and the upstream's exact event bytes take a regular-expression fast path; any
other shape (a proxy that re-serialises the JSON) falls back to ``json.loads``, so
merged or malformed events are still caught.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class HttpError(Exception):
    """The server answered something the benchmark did not expect."""


@dataclass
class StreamResult:
    """One streamed request as the client saw it."""

    ttft_ns: int | None = None  # request written -> first event parsed
    transit_ns: list[int] = field(default_factory=list)  # per event: upstream wrote it -> client parsed it
    arrival_ns: list[int] = field(default_factory=list)  # per event: CLOCK_MONOTONIC when its read arrived
    events: int = 0
    merged: int = 0  # SSE events that did not hold exactly one well-formed numbered chunk
    lost: int = 0  # numbers missing (or out of order) against 0..n-1
    done: bool = False  # the closing "data: [DONE]" arrived


# The upstream's own event, byte for byte (bench/upstream.py _event): number and stamp without a JSON parse.
_FAST = re.compile(rb'data: \{"id":"bench-1","object":"chat\.completion\.chunk","created":0,"model":"bench-model",'
                   rb'"choices":\[\{"index":0,"delta":\{"content":"\[(\d+):(\d+)\]"\},'
                   rb'"finish_reason":(?:null|"stop")\}\]\}')


class _Sink:
    """Where a response's body goes: whole (``request``) or event by event (``stream``)."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.done: asyncio.Future = asyncio.get_running_loop().create_future()

    def head(self, status: int, headers: dict[str, str]) -> None:
        self.status, self.headers = status, headers

    def body(self, data: bytes, now: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def end(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class _Whole(_Sink):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def body(self, data: bytes, now: int) -> None:
        self.parts.append(data)


class _Events(_Sink):
    """Splits the body into SSE events as it arrives and checks their numbering."""

    def __init__(self, t0: int) -> None:
        super().__init__()
        self.t0 = t0
        self.result = StreamResult()
        self.pending = b""
        self.want = 0

    def head(self, status: int, headers: dict[str, str]) -> None:
        super().head(status, headers)
        if status != 200:
            self.fail(HttpError(f"stream answered HTTP {status}"))

    def body(self, data: bytes, now: int) -> None:
        r = self.result
        self.pending += data
        if b"\n\n" not in self.pending:
            return
        *complete, self.pending = self.pending.split(b"\n\n")
        for event in complete:
            if not event or event[0] == 58:  # b":" keep-alive or comment
                continue
            if r.ttft_ns is None:
                r.ttft_ns = now - self.t0
            m = _FAST.fullmatch(event)
            if m is not None:
                number, sent = int(m[1]), int(m[2])
            elif event == b"data: [DONE]":
                r.done = True
                continue
            else:
                number, sent = _parse_event(event)
                if number == -1:
                    continue  # a chunk with no text (a gateway's role-only or closing chunk)
                if number is None:
                    r.merged += 1
                    continue
            r.events += 1
            r.transit_ns.append(now - sent)
            r.arrival_ns.append(now)
            if number != self.want:
                r.lost += abs(number - self.want)
            self.want = number + 1


class _Protocol(asyncio.BufferedProtocol):
    """HTTP/1.1 response framing (content-length, chunked, read-to-close) fed to the current ``_Sink``.

    A ``BufferedProtocol``: the loop reads into this connection's own buffer. With a plain
    ``Protocol`` the default loop allocates a 256 KiB ``bytes`` per read, which glibc serves
    with a fresh mmap at first: ~26 µs and several page faults per read, the client's
    largest cost in the 256-stream row.
    """

    READ_SIZE = 32 * 1024

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.space = bytearray(self.READ_SIZE)
        self.view = memoryview(self.space)
        self.sink: _Sink | None = None
        self.state = "idle"  # idle, head, length, chunk-size, chunk-data, trailer, close
        self.remaining = 0
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.sink is not None:
            if self.state == "close":
                self._finish()
            else:
                self.sink.fail(exc or ConnectionResetError("the server closed the connection mid-response"))
                self.sink = None

    def expect(self, sink: _Sink) -> None:
        self.sink, self.state = sink, "head"
        if self.buf:
            self._parse(time.monotonic_ns())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.buf += self.view[:nbytes]
        if self.sink is not None:
            self._parse(time.monotonic_ns())

    def _finish(self) -> None:
        sink, self.sink, self.state = self.sink, None, "idle"
        sink.end()

    def _parse(self, now: int) -> None:  # noqa: C901 - one state machine, kept in one place for speed
        buf, pos = self.buf, 0
        try:
            while self.sink is not None:
                state = self.state
                if state == "head":
                    end = buf.find(b"\r\n\r\n", pos)
                    if end < 0:
                        return
                    lines = buf[pos:end].decode("latin-1").split("\r\n")
                    pos = end + 4
                    headers = {}
                    for line in lines[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    self.sink.head(int(lines[0].split(" ", 2)[1]), headers)
                    if "chunked" in headers.get("transfer-encoding", "").lower():
                        self.state = "chunk-size"
                    elif "content-length" in headers:
                        self.state, self.remaining = "length", int(headers["content-length"])
                    else:
                        self.state = "close"
                elif state == "length":
                    if len(buf) - pos < self.remaining:
                        return
                    if self.remaining:
                        self.sink.body(bytes(buf[pos:pos + self.remaining]), now)
                    pos += self.remaining
                    self._finish()
                elif state == "chunk-size":
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        return
                    size = int(bytes(buf[pos:end]).split(b";")[0], 16)
                    pos = end + 2
                    self.state, self.remaining = ("chunk-data", size) if size else ("trailer", 0)
                elif state == "chunk-data":
                    if len(buf) - pos < self.remaining + 2:
                        return
                    self.sink.body(bytes(buf[pos:pos + self.remaining]), now)
                    pos += self.remaining + 2
                    self.state = "chunk-size"
                elif state == "trailer":
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        return
                    empty = end == pos
                    pos = end + 2
                    if empty:  # the empty line after the last chunk (and any trailer fields)
                        self._finish()
                elif state == "close":
                    if len(buf) > pos:
                        self.sink.body(bytes(buf[pos:]), now)
                        pos = len(buf)
                    return
                else:
                    return
        finally:
            if pos:
                del buf[:pos]


class Connection:
    """One keep-alive connection to ``base`` (``http://host:port``); one request at a time."""

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        extra = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
        self.protocol: _Protocol | None = None

    async def open(self) -> None:
        _transport, self.protocol = await asyncio.get_running_loop().create_connection(
            _Protocol, self.host, self.port)

    async def close(self) -> None:
        p, self.protocol = self.protocol, None
        if p is not None and p.transport is not None:
            p.transport.close()

    def _send(self, method: str, path: str, body: bytes | None) -> None:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode() + self._head
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        self.protocol.transport.write(head + b"\r\n" + (body or b""))

    async def _exchange(self, method: str, path: str, body: bytes | None, sink: _Sink) -> None:
        if self.protocol is None or self.protocol.closed:
            await self.open()
        p = self.protocol
        p.expect(sink)
        self._send(method, path, body)
        try:
            await sink.done
        except BaseException:
            await self.close()  # mid-response: the connection's state is unknown
            raise
        if sink.headers.get("connection", "").lower() == "close" or p.closed:
            await self.close()

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer; returns (status, body)."""
        sink = _Whole()
        await self._exchange(method, path, body, sink)
        return sink.status, b"".join(sink.parts)

    async def stream(self, path: str, body: bytes, expected: int) -> StreamResult:
        """POST a streamed request; parse its SSE events as they arrive and check their numbering."""
        if self.protocol is None or self.protocol.closed:
            await self.open()
        sink = _Events(time.monotonic_ns())
        await self._exchange("POST", path, body, sink)
        result = sink.result
        result.lost += max(0, expected - sink.want)
        return result


def _parse_event(event: bytes) -> tuple[int | None, int]:
    """``(number, sent_ns)`` of one SSE event holding one chunk.

    ``(None, 0)`` when malformed or merged; ``(-1, 0)`` for a chunk without text.
    """
    lines = event.split(b"\n")
    if len(lines) != 1 or not lines[0].startswith(b"data:"):
        return None, 0
    try:
        chunk = json.loads(lines[0][5:])
        choices = chunk["choices"]
        text = (choices[0].get("delta") or {}).get("content") if choices else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, 0
    if text is None or text == "":
        return -1, 0
    if not (isinstance(text, str) and text.startswith("[") and text.endswith("]") and text.count("[") == 1):
        return None, 0
    number, _, sent = text[1:-1].partition(":")
    try:
        return int(number), int(sent)
    except ValueError:
        return None, 0


def chat_body(n: int, stream: bool, delay_ms: float = 0.0) -> bytes:
    """A chat request for the bench upstream: ``n`` content events, ``delay_ms`` apart when streamed."""
    body = {"model": "bench-model", "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": n, "stream": stream}
    if delay_ms:
        body["x_delay_ms"] = delay_ms
    return json.dumps(body).encode()

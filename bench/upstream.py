"""A minimal, fast OpenAI-compatible model server for the benchmark: raw asyncio HTTP/1.1, numbered and timestamped events.

Run it as ``python -m bench.upstream --port N``. It answers ``GET /v1/models``,
``GET /health`` and ``POST /v1/chat/completions`` (streamed or not). The request body
steers it: ``max_tokens`` is the number of content events, ``x_delay_ms`` the pause
before each event. Event ``i`` carries the content ``"[i:T]"`` where ``T`` is
``time.monotonic_ns()`` when it was written: CLOCK_MONOTONIC is system-wide on Linux,
so a client in another process can tell how long each event took to reach it, and
that none was merged, lost or reordered on the way.

It is written against the socket rather than with a web framework so that it is never
the bottleneck: its cost is the floor that "direct" measures.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import time

MODEL = "bench-model"
DEFAULT_DELAY_MS = 0.0  # for requests without x_delay_ms (the desktop's); set by --delay-ms
_MODELS = json.dumps({"object": "list", "data": [
    {"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}).encode()


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(i: int, last: bool) -> bytes:
    return (b'data: {"id":"bench-1","object":"chat.completion.chunk","created":0,"model":"' + MODEL.encode()
            + b'","choices":[{"index":0,"delta":{"content":"[%d:%d]"},"finish_reason":%s}]}\n\n'
            % (i, time.monotonic_ns(), b'"stop"' if last else b"null"))


def _completion(n: int) -> bytes:
    text = "".join(f"[{i}]" for i in range(n))
    return json.dumps({"id": "bench-1", "object": "chat.completion", "created": 0, "model": MODEL,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}}).encode()


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are handled one after another."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        pass  # a paced stream of this connection is dropped at its next due event (Pacer._fire)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        while not self.busy:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path, _ = head[0].split(" ", 2)
            self._handle(method, path, body)

    def _handle(self, method: str, path: str, body: bytes) -> None:
        t = self.transport
        if method == "GET" and path in ("/v1/models", "/models"):
            t.write(_response("200 OK", _MODELS))
        elif method == "GET" and path == "/health":
            t.write(_response("200 OK", b"{}"))
        elif method == "POST" and path.endswith("/chat/completions"):
            payload = json.loads(body)
            n = int(payload.get("max_tokens") or 8)
            if not payload.get("stream"):
                t.write(_response("200 OK", _completion(n)))
                return
            t.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                    b"transfer-encoding: chunked\r\n\r\n")
            delay = float(payload.get("x_delay_ms") or DEFAULT_DELAY_MS) / 1000.0
            if delay <= 0 or n <= 0:
                for i in range(n):
                    t.write(_chunk(_event(i, i == n - 1)))
                t.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                return
            self.busy = True
            PACER.add(_Paced(self, n, delay))
        else:
            t.write(_response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}'))

    def paced_done(self) -> None:
        """The paced stream ended (or its client left): take the next pipelined request, if any."""
        self.busy = False
        if not self.transport.is_closing():
            self._next()


class _Paced:
    """One paced stream: its start, its pause, the next event to write."""

    __slots__ = ("protocol", "n", "delay", "start", "i", "due")

    def __init__(self, protocol: UpstreamProtocol, n: int, delay: float) -> None:
        self.protocol, self.n, self.delay = protocol, n, delay
        self.start = time.monotonic()
        self.i = 0
        self.due = self.start + delay


class Pacer:
    """Every paced stream of the process on one timer: wake at the earliest due event, write all that are due.

    One task per stream sleeping between events cost the upstream ~40% of a core at the
    256-stream row's 20,480 events/s (a timer, a future and a task step per event), CPU
    the proxy under test then lacked on a 2-core machine; this costs ~27%, the rest being
    one send per event. A wake-up writes every event due within ``SLACK`` of it, so streams
    that started within a millisecond share wake-ups, as a model server's batch emits one
    token for each of its sequences per step. Each event is still due at its own stream's
    start + (i + 1) × pause (one late wake-up does not shift the later ones), and it is
    stamped when it is written, so the slack never shows up as delay on the way.
    """

    SLACK = 0.001  # s: an event due this soon is written now rather than after one more wake-up

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Paced]] = []
        self.seq = 0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def add(self, s: _Paced) -> None:
        self._push(s)
        self._arm()

    def _push(self, s: _Paced) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (s.due, self.seq, s))

    def _arm(self) -> None:
        if not self.heap:
            return
        due = self.heap[0][0]
        if self.timer is not None:
            if self.timer_at <= due:
                return
            self.timer.cancel()
        # Relative to time.monotonic(), the clock the due times are on, whatever the loop's own clock is.
        self.timer = asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self._fire)
        self.timer_at = due

    def _fire(self) -> None:
        self.timer = None
        heap = self.heap
        now = time.monotonic()
        while heap and heap[0][0] <= now + self.SLACK:
            _, _, s = heapq.heappop(heap)
            t = s.protocol.transport
            if t.is_closing():
                s.protocol.paced_done()
                continue
            last = s.i == s.n - 1
            t.write(_chunk(_event(s.i, last)))
            if last:
                t.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                s.protocol.paced_done()
                continue
            s.i += 1
            s.due = s.start + (s.i + 1) * s.delay
            self._push(s)
        self._arm()


PACER = Pacer()


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(UpstreamProtocol, host, port, backlog=2048)
    print(f"bench upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0,
                        help="pause before each streamed event when the request names none")
    args = parser.parse_args(argv)
    global DEFAULT_DELAY_MS
    DEFAULT_DELAY_MS = args.delay_ms
    try:
        import uvloop
        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

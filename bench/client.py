"""A lean HTTP/1.1 load client on asyncio streams: keep-alive requests, chunked SSE read as it arrives, events checked.

Lean on purpose: the same client measures every target, and the less it costs per
request, the less its own noise hides the proxies' differences.
"""

from __future__ import annotations

import asyncio
import json
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
    events: int = 0
    merged: int = 0  # SSE events that did not hold exactly one well-formed numbered chunk
    lost: int = 0  # numbers missing (or out of order) against 0..n-1
    done: bool = False  # the closing "data: [DONE]" arrived


class Connection:
    """One keep-alive connection to ``base`` (``http://host:port``); one request at a time."""

    def __init__(self, base: str, headers: dict[str, str] | None = None):
        parts = urlsplit(base)
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        extra = {"Host": f"{self.host}:{self.port}", **(headers or {})}
        self._head = "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    def _send(self, method: str, path: str, body: bytes | None) -> None:
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode() + self._head
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        self.writer.write(head + b"\r\n" + (body or b""))

    async def _read_head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def _chunks(self, headers: dict[str, str]):
        if "content-length" in headers:
            n = int(headers["content-length"])
            if n:
                yield await self.reader.readexactly(n)
            return
        if "chunked" not in headers.get("transfer-encoding", "").lower():
            while data := await self.reader.read(65536):  # read to close
                yield data
            return
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()
                return
            data = await self.reader.readexactly(size + 2)
            yield data[:-2]

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer; returns (status, body)."""
        if self.writer is None:
            await self.open()
        self._send(method, path, body)
        status, headers = await self._read_head()
        data = b"".join([c async for c in self._chunks(headers)])
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def stream(self, path: str, body: bytes, expected: int) -> StreamResult:
        """POST a streamed request; parse its SSE events as they arrive and check their numbering."""
        if self.writer is None:
            await self.open()
        result = StreamResult()
        t0 = time.monotonic_ns()
        self._send("POST", path, body)
        status, headers = await self._read_head()
        if status != 200:
            raise HttpError(f"stream answered HTTP {status}")
        pending = b""
        want = 0
        async for chunk in self._chunks(headers):
            now = time.monotonic_ns()
            pending += chunk
            *complete, pending = pending.split(b"\n\n")
            for event in complete:
                if not event or event.startswith(b":"):
                    continue  # keep-alive or comment
                if result.ttft_ns is None:
                    result.ttft_ns = now - t0
                if event == b"data: [DONE]":
                    result.done = True
                    continue
                number, sent = _parse_event(event)
                if number == -1:
                    continue  # a chunk with no text (a gateway's role-only or closing chunk)
                if number is None:
                    result.merged += 1
                    continue
                result.events += 1
                result.transit_ns.append(now - sent)
                if number != want:
                    result.lost += abs(number - want)
                want = number + 1
        result.lost += max(0, expected - want)
        if headers.get("connection", "").lower() == "close":
            await self.close()
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

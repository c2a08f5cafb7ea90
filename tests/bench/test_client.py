"""The bench client's HTTP/1.1 and SSE framing, against a real socket server writing what a proxy might.

The client parses responses in one synchronous pass per read (bench/client.py); these check that
it neither loses nor invents events however the bytes are cut into reads and chunks, that a proxy
re-serialising the JSON still counts, and that a merged or missing event is caught, since the
"merged / lost" row rests on it. The server is a plain asyncio socket server on loopback writing
each case's bytes in the pieces given; since the kernel may join pieces into one read, the
one-byte-per-read case also feeds the client's protocol object directly.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from bench.client import Connection, HttpError, _Events, _Protocol, chat_body


def _upstream_event(i: int, last: bool = False, stamp: int | None = None) -> bytes:
    """The bench upstream's own bytes for event ``i`` (bench/upstream.py _event)."""
    return (b'data: {"id":"bench-1","object":"chat.completion.chunk","created":0,"model":"bench-model",'
            b'"choices":[{"index":0,"delta":{"content":"[%d:%d]"},"finish_reason":%s}]}\n\n'
            % (i, stamp if stamp is not None else time.monotonic_ns(), b'"stop"' if last else b"null"))


def _reserialised_event(i: int) -> bytes:
    """The same chunk as a proxy that parses and re-writes JSON sends it (spaces, other key order, extra fields)."""
    return b"data: " + json.dumps({"choices": [{"delta": {"content": f"[{i}:{time.monotonic_ns()}]"},
                                                "index": 0, "finish_reason": None}],
                                   "id": "x", "system_fingerprint": "fp"}).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
END = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


async def _serve(answers: list[list[bytes]]):
    """A server answering the n-th request on a connection with ``answers[n]``, each written piece by piece."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for pieces in answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _run(answers: list[list[bytes]], exchange):
    async def main():
        server, base = await _serve(answers)
        conn = Connection(base, {"Authorization": "Bearer t"})
        try:
            return await exchange(conn)
        finally:
            await conn.close()
            server.close()
            await server.wait_closed()

    return asyncio.run(main())


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def test_events_cut_into_single_bytes_are_each_counted_once() -> None:
    body = b"".join(_chunk(_upstream_event(i, i == 4)) for i in range(5)) + END
    r = _run([_bytewise(HEAD + body)], lambda c: c.stream("/v1/chat/completions", chat_body(5, True), 5))
    assert (r.events, r.merged, r.lost, r.done) == (5, 0, 0, True)
    assert len(r.transit_ns) == len(r.arrival_ns) == 5
    assert r.ttft_ns is not None and r.ttft_ns > 0


def test_the_parser_fed_one_byte_per_read() -> None:
    """The protocol object as the loop drives it (get_buffer, then buffer_updated), one byte per read."""
    body = b"".join(_chunk(_upstream_event(i, i == 2)) for i in range(3)) + END

    async def feed():
        protocol, sink = _Protocol(), _Events(time.monotonic_ns())
        protocol.expect(sink)
        for byte in HEAD + body:
            protocol.get_buffer(-1)[:1] = byte.to_bytes(1, "big")
            protocol.buffer_updated(1)
        assert sink.done.done(), "the response's end was not recognised"
        return sink.result, protocol.state, len(protocol.buf)

    r, state, left = asyncio.run(feed())
    assert (r.events, r.merged, r.lost, r.done) == (3, 0, 0, True)
    assert (state, left) == ("idle", 0)


def test_many_events_in_one_chunk_and_one_event_across_chunks() -> None:
    events = b"".join(_upstream_event(i) for i in range(10))
    body = _chunk(events[:7]) + _chunk(events[7:300]) + _chunk(events[300:]) + END
    r = _run([[HEAD + body]], lambda c: c.stream("/v1/chat/completions", chat_body(10, True), 10))
    assert (r.events, r.merged, r.lost, r.done) == (10, 0, 0, True)


def test_a_reserialised_chunk_is_read_through_the_json_path() -> None:
    body = b"".join(_chunk(_reserialised_event(i)) for i in range(3))
    body += _chunk(b'data: {"choices":[{"delta":{"role":"assistant"},"index":0}]}\n\n')  # no text: not an event
    body += _chunk(b": keep-alive\n\n") + END
    r = _run([[HEAD + body]], lambda c: c.stream("/v1/chat/completions", chat_body(3, True), 3))
    assert (r.events, r.merged, r.lost, r.done) == (3, 0, 0, True)


def test_merged_and_missing_events_are_caught() -> None:
    merged = _upstream_event(1)[:-1] + _upstream_event(2)  # two data lines in one SSE event
    body = _chunk(_upstream_event(0)) + _chunk(merged) + _chunk(_upstream_event(4, True)) + END
    r = _run([[HEAD + body]], lambda c: c.stream("/v1/chat/completions", chat_body(5, True), 5))
    assert r.merged == 1
    assert r.events == 2
    assert r.lost == 3  # 1, 2 (inside the merged event) and 3 never arrived as events of their own


def test_a_short_stream_counts_the_missing_tail_as_lost() -> None:
    body = b"".join(_chunk(_upstream_event(i)) for i in range(3)) + END
    r = _run([[HEAD + body]], lambda c: c.stream("/v1/chat/completions", chat_body(8, True), 8))
    assert (r.events, r.lost) == (3, 5)


def test_keep_alive_requests_after_a_stream_with_trailers_and_read_to_close() -> None:
    """A stream ending in a trailer field, then a content-length answer, then one read until the server closes."""
    stream = HEAD + _chunk(_upstream_event(0, True)) + _chunk(b"data: [DONE]\n\n") + b"0\r\nx-trailer: 1\r\n\r\n"
    plain = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
    to_close = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"

    async def exchange(conn: Connection):
        s = await conn.stream("/v1/chat/completions", chat_body(1, True), 1)
        first = await conn.request("GET", "/v1/models")
        second = await conn.request("GET", "/v1/models")
        return s, first, second

    s, first, second = _run([[stream], _bytewise(plain), [to_close[:40], to_close[40:]]], exchange)
    assert (s.events, s.lost, s.done) == (1, 0, True)
    assert first == (200, b'{"ok":true}')
    assert second == (200, b"until the end")


def test_a_stream_answered_with_an_error_status_raises() -> None:
    refused = b'HTTP/1.1 401 Unauthorized\r\ncontent-length: 15\r\n\r\n{"error":"no!"}'
    with pytest.raises(HttpError, match="HTTP 401"):
        _run([[refused]], lambda c: c.stream("/v1/chat/completions", chat_body(1, True), 1))


def test_a_connection_closed_mid_stream_raises_rather_than_hanging() -> None:
    cut = HEAD + _chunk(_upstream_event(0))  # the server closes after this: no last chunk
    with pytest.raises(ConnectionError):
        _run([[cut]], lambda c: c.stream("/v1/chat/completions", chat_body(3, True), 3))

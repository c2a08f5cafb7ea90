"""The incremental SSE parser on its own (no Qt): chunk boundaries anywhere, every line end, every field."""

from __future__ import annotations

import pytest

from desktop.sse import SseEvent, SseParser

STREAM = (b": ping\r\n\r\n"
          b"event: progress\r\ndata: {\"phase\": \"pulling\"}\r\n\r\n"
          b"id: 7\ndata: first line\ndata:second line\ndata:  two spaces\n\n"
          b"retry: 2500\r: comment between fields\rdata: caf\xc3\xa9 \xe2\x9c\x93\r\r"
          b"event: unused\n\n"
          b"data: [DONE]\n\n")

EXPECTED = [
    SseEvent("progress", '{"phase": "pulling"}', None),
    SseEvent("message", "first line\nsecond line\n two spaces", "7"),
    SseEvent("message", "café ✓", "7"),
    SseEvent("message", "[DONE]", "7"),
]


def feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[list[SseEvent], SseParser]:
    parser, events, start = SseParser(), [], 0
    for cut in [*cuts, len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events, parser


def test_whole_stream_in_one_chunk():
    events, parser = feed_in_pieces(STREAM, [])
    assert events == EXPECTED
    assert parser.retry_ms == 2500
    assert events[0].payload() == {"phase": "pulling"}
    assert events[-1].payload() == "[DONE]"


def test_every_split_point_gives_the_same_events():
    # Cuts inside CRLF pairs, inside a UTF-8 character, inside field names: the events never change.
    for cut in range(1, len(STREAM)):
        assert feed_in_pieces(STREAM, [cut])[0] == EXPECTED, cut


def test_one_byte_at_a_time():
    events, parser = feed_in_pieces(STREAM, list(range(1, len(STREAM))))
    assert events == EXPECTED
    assert parser.retry_ms == 2500


def test_cr_then_lf_in_the_next_chunk_is_one_line_end():
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []  # the LF closes the same line, it is not the blank line
    assert parser.feed(b"\r\n") == [SseEvent("message", "a")]


def test_comments_only_and_events_without_data_dispatch_nothing():
    parser = SseParser()
    assert parser.feed(b": ping\n\n: ping\n\nevent: stats\n\nid: 3\n\n") == []
    assert parser.last_id == "3"
    assert parser.feed(b"data\n\n") == [SseEvent("message", "", "3")]  # a bare field name has an empty value


def test_an_unfinished_event_waits_for_its_blank_line():
    parser = SseParser()
    assert parser.feed(b"event: log\ndata: {\"line\": \"x\"}\n") == []
    (event,) = parser.feed(b"\n")
    assert event.name == "log" and event.payload() == {"line": "x"}


def test_a_byte_order_mark_at_the_start_is_dropped_even_when_split():
    events, _ = feed_in_pieces(b"\xef\xbb\xbfdata: x\n\n", [1, 2])
    assert events == [SseEvent("message", "x")]


@pytest.mark.parametrize("value", ["soon", "-1", ""])
def test_a_retry_that_is_not_a_number_is_ignored(value):
    parser = SseParser()
    parser.feed(f"retry: {value}\n\n".encode())
    assert parser.retry_ms is None

"""Server-Sent Events, incrementally: bytes in as they arrive, whole events out (no Qt, no I/O)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# A line ends at CRLF, LF or a lone CR (the event-stream grammar allows all three).
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its name ("message" when unnamed), its data lines joined by "\\n", the last id."""

    name: str
    data: str
    id: str | None = None

    def payload(self) -> object:
        """The data JSON-decoded when it is JSON, else the raw text (OpenAI's ``[DONE]``)."""
        return decode_data(self.data)


def decode_data(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


class SseParser:
    """Feed it the stream's bytes in chunks of any size; it returns the events they complete.

    It follows the WHATWG event-stream rules that matter to a client: CRLF, LF and CR line
    ends (a CR at the end of one chunk and the LF at the start of the next are one line
    end), comments (``: ping``) ignored, ``data:`` lines joined with newlines, one space
    after the colon dropped, ``event:`` names, ``id:`` kept for later events, ``retry:``
    recorded, and an event with no data not dispatched. Bytes are split into lines before
    they are decoded, so a UTF-8 character cut across two chunks arrives whole.
    """

    def __init__(self) -> None:
        self._buf = b""
        self._skip_lf = False  # the last chunk ended in CR: an LF that starts the next one is the same line end
        self._started = False
        self._name = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        #: Reconnection time the server asked for (``retry:``), in milliseconds.
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if not chunk:
            return []
        buf = self._buf + chunk
        if self._skip_lf:
            self._skip_lf = False
            if buf.startswith(b"\n"):
                buf = buf[1:]
        if not self._started:  # a byte-order mark may open the stream, possibly cut across chunks
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf
                return []
            self._started = True
            buf = buf.removeprefix(_BOM)
        events: list[SseEvent] = []
        start = 0
        for match in _EOL.finditer(buf):
            if match.group() == b"\r" and match.end() == len(buf):
                self._skip_lf = True
            event = self._line(buf[start:match.start()].decode("utf-8", "replace"))
            if event is not None:
                events.append(event)
            start = match.end()
        self._buf = buf[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._name = value
        elif field == "id":
            if "\0" not in value:
                self.last_id = value
        elif field == "retry":
            if value.isdigit():
                self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, name = self._data, self._name
        self._data, self._name = [], ""
        if not data:
            return None
        return SseEvent(name or "message", "\n".join(data), self.last_id)

"""Reading Server-Sent Events in tests, event by event as they arrive."""

from __future__ import annotations

from collections.abc import Iterator

import httpx


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event name, data) pairs of an SSE response, as they arrive."""
    name, data = "message", []
    for line in response.iter_lines():
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())

"""What one OpenAI streaming chunk says, decoded once for the playground (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass

DONE = "[DONE]"


@dataclass(frozen=True)
class Chunk:
    """The parts of a ``chat.completion.chunk`` (or a legacy completion chunk) the playground uses.

    ``text`` is choice 0's new content only: compare columns send one prompt per column, and
    ``n > 1`` choices are not shown. ``done`` is OpenAI's ``[DONE]`` sentinel; ``error`` is a
    mid-stream error object's message (what the proxy sends when the model fails after the
    headers went out).
    """

    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    timings: dict | None = None
    error: str | None = None
    done: bool = False


def parse_chunk(data: object) -> Chunk | None:
    """Decode one event's data (JSON-decoded already, or the raw text); None when it is not a chunk."""
    if data == DONE:
        return Chunk(done=True)
    if not isinstance(data, dict):
        return None
    if "error" in data:
        err = data["error"]
        return Chunk(error=str(err.get("message") if isinstance(err, dict) else err))
    text, finish = "", None
    for choice in data.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        finish = choice.get("finish_reason") or finish
    usage, timings = data.get("usage"), data.get("timings")
    return Chunk(text=text, finish_reason=finish, usage=usage if isinstance(usage, dict) else None,
                 timings=timings if isinstance(timings, dict) else None)

"""Reading a model server's OpenAI answer: the first choice's text and finish reason, whole or as SSE chunks arrive.

The backend's one parser of OpenAI reply chunks (the proxy keeps history with it). The proxy's
relay itself never parses: it passes bytes on and counts them; this runs only for requests
that asked for history.
"""

from __future__ import annotations

import json
from typing import Any

CHAT = "chat/completions"
RESPONSES = "responses"  # OpenAI's Responses API: output items, not choices


def _responses_text(decoded: dict) -> str:
    # The text of every output_text part of the assistant's message items, in order.
    parts = []
    for item in decoded.get("output") or ():
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                    parts.append(part["text"])
    return "".join(parts)


def _choice_text(choice: dict, chat: bool, part: str) -> str:
    # Chat puts text in choice[part]["content"] (part: "message" whole, "delta" streamed);
    # completions in choice["text"] either way.
    if chat:
        holder = choice.get(part)
        text = holder.get("content") if isinstance(holder, dict) else None
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


def reply_text(decoded: Any, endpoint: str) -> tuple[str, str | None]:
    """The first choice's text and finish reason of a complete (non-streamed) answer.

    Args:
        decoded: the answer's JSON, decoded (anything: a broken server may send anything).
        endpoint: the path under the OpenAI base, e.g. ``"chat/completions"``.

    Returns:
        ``(text, finish_reason)``; ``("", None)`` for embeddings and for answers without choices.
        For the Responses API: the output text and the response's ``status`` ("completed",
        "incomplete", ...).
    """
    if not isinstance(decoded, dict):
        return "", None
    if endpoint == RESPONSES:
        status = decoded.get("status")
        return _responses_text(decoded), status if isinstance(status, str) else None
    choices = decoded.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "", None
    choice = choices[0]
    return _choice_text(choice, endpoint == CHAT, "message"), choice.get("finish_reason")


class ReplyCollector:
    """Rebuilds the first choice's text from SSE events as the chunks of a stream arrive.

    Events arrive split or joined arbitrarily across chunks; JSON never holds a raw
    newline, so decoding every complete ``data:`` line is enough.
    """

    def __init__(self, endpoint: str):
        self._chat = endpoint == CHAT
        self._responses = endpoint == RESPONSES
        self._pending = b""
        self._parts: list[str] = []
        self.finish_reason: str | None = None
        #: The stream's ``usage`` object (chat and completions send it last when asked with
        #: ``stream_options.include_usage``); None until it came.
        self.usage: dict | None = None
        #: The message of an ``{"error": ...}`` event (a server, or ModelDeck's proxy, failing mid-stream).
        self.error: str | None = None
        #: Whether any text has arrived yet (time to first token is measured at the first such chunk).
        self.has_text = False

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes of the stream, as they came."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if not data or data == b"[DONE]":
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            self._take(event)

    def _take(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("error"), dict):
            self.error = str(event["error"].get("message") or event["error"])
        if self._responses:  # named events: text deltas, then the final response's status
            kind = event.get("type")
            if kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
                self._parts.append(event["delta"])
                self.has_text = self.has_text or bool(event["delta"])
            elif kind in ("response.completed", "response.incomplete", "response.failed") \
                    and isinstance(event.get("response"), dict):
                self.finish_reason = event["response"].get("status")
            return
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            piece = _choice_text(choice, self._chat, "delta")
            self._parts.append(piece)
            self.has_text = self.has_text or bool(piece)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def text(self) -> str:
        """The text so far."""
        return "".join(self._parts)

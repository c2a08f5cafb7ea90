"""Anthropic's Messages API over a runtime's chat completions: the request, the reply and the event stream translated both ways.

Used by ``/v1/messages`` (``backend/routes/anthropic.py``) for runtimes whose recipe does not list
``anthropic_messages`` in ``native_apis``; those that do get the request passed through untouched.
``MessagesAdapter`` is the proxy's ``ReplyAdapter`` for one request; the functions above it are
pure and tested alone (``tests/backend/test_anthropic_translation.py``).

What is translated: ``system`` (a string or text blocks), ``user``/``assistant`` messages of text
(and base64 or URL image) blocks, ``tool_use``/``tool_result`` blocks ↔ ``tool_calls``/``tool``
messages, ``tools`` and ``tool_choice`` ↔ OpenAI function tools, ``stop_sequences``, ``max_tokens``,
``temperature``, ``top_p``, ``top_k`` (passed on: llama.cpp, vLLM, SGLang and TGI read it, the
demo ignores it), ``output_config.format`` (a JSON schema) -> ``response_format``, ``stream``.
Ignored: ``metadata``, ``service_tier``, ``thinking`` (the runtime decides whether it reasons;
``thinking`` blocks in the history are left out), ``cache_control``, ``output_config.effort`` and the
other fields that steer Anthropic's own service (``speed``, ``inference_geo``, ...). Fields that
are not Anthropic's go to the runtime as they are (``ignore_eos``, ``min_tokens``, ...: the SDK's
``extra_body``).
Refused with a 400 that names them: server tools (web search, code execution, ...), ``document``
and other block types, ``mcp_servers``, ``container``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from backend.errors import Flavour, error_body

#: finish_reason (OpenAI) -> stop_reason (Anthropic).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
_REFUSED = ("mcp_servers", "container", "context_management")
# Anthropic's fields: read by the translation, or (the rest) about Anthropic's own service and
# dropped. Any other field is the runtime's own (``ignore_eos``, ``min_tokens``, ...; the SDK's
# ``extra_body``) and goes on as it is, as chat completions' extra fields do.
_ANTHROPIC_FIELDS = frozenset({
    "model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences",
    "stream", "tools", "tool_choice", "output_config", "metadata", "service_tier", "thinking",
    "cache_control", "speed", "inference_geo", "diagnostics", "user_profile_id", "workspace_id",
    "output_format", *_REFUSED})
# Block types that carry nothing a chat completion can hold, in a conversation's history.
_SKIPPED_BLOCKS = ("thinking", "redacted_thinking")


class Unsupported(ValueError):
    """A Messages request asks for something a chat completion cannot carry; the message names it."""


def message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


# --------------------------------------------------------------------------- request


def to_chat_request(body: dict) -> dict:
    """The chat completion request that asks a runtime what ``body`` (a Messages request) asks.

    Args:
        body: the decoded Messages request (``model``, ``messages``, ``max_tokens``, ...).

    Returns:
        A chat completion request; a streamed one asks for usage (``stream_options``).

    Raises:
        Unsupported: a field or block this translation cannot carry, or one of the wrong type;
            the message names it and says what to do.
    """
    for name in _REFUSED:
        if body.get(name):
            raise Unsupported(f"'{name}' is not supported: this model's runtime has no Messages API of its "
                              "own and ModelDeck translates to chat completions. Leave it out.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Unsupported("'messages' must be a non-empty list of {role, content} messages.")
    chat: list[dict] = []
    system = body.get("system")
    if system is not None:
        text = _text_of(system, "system")
        if text:
            chat.append({"role": "system", "content": text})
    for i, message in enumerate(messages):
        chat.extend(_chat_messages(message, f"messages[{i}]"))
    out: dict[str, Any] = {"model": body.get("model"), "messages": chat}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise Unsupported(f"'max_tokens' must be a positive integer, got {max_tokens!r}.")
        out["max_tokens"] = max_tokens
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stops = body.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise Unsupported("'stop_sequences' must be a list of strings.")
        out["stop"] = stops
    tools = body.get("tools")
    if tools:
        out["tools"] = [_chat_tool(tool, f"tools[{i}]") for i, tool in enumerate(_list(tools, "tools"))]
    choice = body.get("tool_choice")
    if choice is not None:
        out.update(_chat_tool_choice(choice))
    config = body.get("output_config")
    # ``output_format`` is the structured-outputs beta's name for the same thing.
    output_format = (config.get("format") if isinstance(config, dict) else None) or body.get("output_format")
    if output_format is not None:
        if not isinstance(output_format, dict) or output_format.get("type") != "json_schema" \
                or not isinstance(output_format.get("schema"), dict):
            raise Unsupported("'output_config.format' must be {\"type\": \"json_schema\", \"schema\": {...}}.")
        out["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "output", "schema": output_format["schema"]}}
    for name, value in body.items():
        if name not in _ANTHROPIC_FIELDS and name not in out:
            out[name] = value
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise Unsupported(f"'{where}' must be a list.")
    return value


def _text_of(value: Any, where: str) -> str:
    """The text of a string or a list of text blocks (``system``, a ``tool_result``'s content)."""
    if isinstance(value, str):
        return value
    parts = []
    for i, block in enumerate(_list(value, where)):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise Unsupported(f"'{where}[{i}]' is a {kind!r} block; only text blocks are supported here.")
        parts.append(block["text"])
    return "\n".join(parts)


def _chat_messages(message: Any, where: str) -> list[dict]:
    """One Messages turn as chat messages: a user turn's tool results become ``tool`` messages first."""
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise Unsupported(f"'{where}' must be an object whose 'role' is 'user' or 'assistant'.")
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    parts: list[dict] = []
    tool_calls: list[dict] = []
    tool_results: list[dict] = []
    for i, block in enumerate(_list(content, f"{where}.content")):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise Unsupported(f"'{at}.text' must be a string.")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source"), at)}})
        elif kind == "tool_use" and role == "assistant":
            tool_calls.append({"id": str(block.get("id", "")), "type": "function",
                               "function": {"name": str(block.get("name", "")),
                                            "arguments": json.dumps(block.get("input") or {})}})
        elif kind == "tool_result" and role == "user":
            text = _text_of(block.get("content") or "", f"{at}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            tool_results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                                 "content": text})
        elif kind in _SKIPPED_BLOCKS:
            continue
        else:
            raise Unsupported(f"'{at}' is a {kind!r} block, which a {role} message cannot carry to this "
                              "model's runtime (supported: text, image and tool_result from the user; text "
                              "and tool_use from the assistant).")
    out = list(tool_results)
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        turn: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            turn["tool_calls"] = tool_calls
        if text or tool_calls:
            out.append(turn)
    elif parts:
        # Plain text as a string: the form every runtime reads (the demo reads no image parts).
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts) if only_text else parts})
    return out


def _image_url(source: Any, where: str) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise Unsupported(f"'{where}.source' must be a base64 or url image source.")


def _chat_tool(tool: Any, where: str) -> dict:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise Unsupported(f"'{where}' must be an object with a 'name'.")
    kind = tool.get("type")
    if kind not in (None, "custom") or "input_schema" not in tool:
        raise Unsupported(f"'{where}' ({tool['name']!r}, type {kind!r}) is a server tool, which this model's "
                          "runtime cannot run; only client tools with an 'input_schema' are supported.")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> dict:
    kind = choice.get("type") if isinstance(choice, dict) else None
    out: dict[str, Any]
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        out = {"tool_choice": "none"}
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    else:
        raise Unsupported("'tool_choice' must be {\"type\": \"auto\" | \"any\" | \"none\"} or "
                          "{\"type\": \"tool\", \"name\": ...}.")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
    return out


# --------------------------------------------------------------------------- reply


def stop_reason(finish_reason: Any) -> str:
    """Anthropic's ``stop_reason`` for an OpenAI ``finish_reason`` (``end_turn`` when none is given)."""
    return STOP_REASONS.get(finish_reason, "end_turn") if isinstance(finish_reason, str) else "end_turn"


def usage_of(usage: Any) -> dict:
    """Anthropic's ``usage`` from OpenAI's (0 where the runtime did not say)."""
    usage = usage if isinstance(usage, dict) else {}
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return {"input_tokens": prompt if isinstance(prompt, int) else 0,
            "output_tokens": completion if isinstance(completion, int) else 0}


def _tool_input(arguments: Any) -> Any:
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {"arguments": arguments}  # the model wrote no JSON: keep its text where a client can see it
    return value if isinstance(value, dict) else {"value": value}


def from_chat_reply(reply: dict, model: str, msg_id: str | None = None) -> dict:
    """The Messages reply for a chat completion ``reply`` (a decoded, successful answer).

    Args:
        reply: the chat completion object.
        model: the model name the client asked for.
        msg_id: the message id (a new ``msg_...`` when None).

    Returns:
        ``{"id", "type": "message", "role": "assistant", "model", "content", "stop_reason",
        "stop_sequence", "usage"}``.
    """
    choices = reply.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": function.get("name", ""), "input": _tool_input(function.get("arguments"))})
    return {"id": msg_id or message_id(), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(choice.get("finish_reason")),
            "stop_sequence": None, "usage": usage_of(reply.get("usage"))}


def error_message(content: bytes) -> str:
    """What a model server's error body says (OpenAI's shape, vLLM's, or plain text)."""
    try:
        decoded = json.loads(content)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(decoded.get("message"), str):
            return decoded["message"]
    return content[:500].decode("utf-8", "replace").strip() or "no details"


def anthropic_error(status: int, message: str) -> bytes:
    return error_body(Flavour.ANTHROPIC, status, None, message)


# --------------------------------------------------------------------------- stream


def _event(name: str, data: dict) -> bytes:
    return (f"event: {name}\ndata: ".encode() + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


class StreamTranslator:
    """Chat completion SSE bytes in, Messages events out (``message_start`` ... ``message_stop``).

    ``feed`` takes bytes as they arrive (events may be split anywhere) and returns the events to
    send now; ``close`` returns the closing ones. ModelDeck's own Anthropic ``error`` events and
    SSE comments pass through unchanged; an OpenAI-shaped error event becomes an ``error`` event.
    """

    def __init__(self, model: str, msg_id: str | None = None):
        self.model, self.id = model, msg_id or message_id()
        self._buffer = b""
        self._block: tuple[str, int] | None = None  # ("text", 0) or ("tool", openai index)
        self._index = -1  # the Anthropic index of the open (or last) block
        self._finish: Any = None
        self._usage: dict | None = None
        self._done = False  # message_stop (or an error) was sent

    def start(self) -> bytes:
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return _event("message_start", {"type": "message_start", "message": message}) + \
            _event("ping", {"type": "ping"})

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        out = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            frame, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            out.append(self._frame(frame))
        return b"".join(out)

    def close(self) -> bytes:
        """The closing events (after the last chunk); nothing when an error already ended the stream."""
        if self._done:
            return b""
        self._done = True
        usage = usage_of(self._usage)
        return self._close_block() + _event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop_reason(self._finish), "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"], "input_tokens": usage["input_tokens"]},
        }) + _event("message_stop", {"type": "message_stop"})

    def _frame(self, frame: bytes) -> bytes:
        lines = frame.split(b"\n")
        comments = [line for line in lines if line.startswith(b":")]
        if self._done:  # after the end only comments pass (ModelDeck's history id)
            return b"\n".join(comments) + b"\n\n" if comments else b""
        if lines and lines[0].startswith(b"event: error"):
            self._done = True
            return frame + b"\n\n"  # ModelDeck's own error event, already in Anthropic's shape
        data = b"\n".join(line[5:].lstrip() for line in lines if line.startswith(b"data:"))
        if not data:
            return b"\n".join(comments) + b"\n\n" if comments else b""
        if data.strip() == b"[DONE]":
            return self.close()
        try:
            chunk = json.loads(data)
        except ValueError:
            return b""  # not JSON: nothing a client could read
        if not isinstance(chunk, dict):
            return b""
        if "error" in chunk or chunk.get("object") == "error":
            self._done = True
            return b"event: error\ndata: " + anthropic_error(500, error_message(data)) + b"\n\n"
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._open(("text", 0), {"type": "text", "text": ""}))
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                key = ("tool", call.get("index", 0))
                out.append(self._open(key, {"type": "tool_use",
                                            "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                                            "name": function.get("name", ""), "input": {}}))
                if function.get("arguments"):
                    out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def _open(self, key: tuple[str, int], block: dict) -> bytes:
        if self._block == key:
            return b""
        closed = self._close_block()
        self._block, self._index = key, self._index + 1
        return closed + _event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                       "content_block": block})

    def _delta(self, delta: dict) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})


class MessagesAdapter:
    """The proxy's ``ReplyAdapter`` for one ``/v1/messages`` request to a runtime without the API."""

    def __init__(self) -> None:
        self.id = message_id()
        self.model = ""

    def request(self, payload: dict) -> dict:
        self.model = str(payload.get("model", ""))
        return to_chat_request(payload)

    def body(self, status: int, content: bytes) -> bytes:
        if status >= 400:
            return anthropic_error(status, f"The model server answered: {error_message(content)}")
        try:
            reply = json.loads(content)
        except ValueError:
            return anthropic_error(502, "The model server's answer is not JSON.")
        return json.dumps(from_chat_reply(reply, self.model, self.id), ensure_ascii=False,
                          separators=(",", ":")).encode()

    async def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        translator = StreamTranslator(self.model, self.id)
        try:
            yield translator.start()
            async for chunk in chunks:
                out = translator.feed(chunk)
                if out:
                    yield out
            out = translator.close()
            if out:
                yield out
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # the relay records and closes upstream

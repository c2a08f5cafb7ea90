"""The OpenAI request rules of the demo server: parameter checks (chat, completions, Responses), stop sequences, embeddings."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from dataclasses import dataclass, field

from lm import tokenize

DEFAULT_MAX_TOKENS = 128
MAX_TOKENS_LIMIT = 4096
DEFAULT_TEMPERATURE = 0.8
# A chat reply shorter than this would often be one clipped sentence; vLLM's min_tokens overrides it.
CHAT_MIN_TOKENS = 24
EMBEDDING_DIMENSIONS = 64


class ApiError(Exception):
    """A request the server refuses, rendered as an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        """The OpenAI error shape: {"error": {"message", "type", "param", "code"}}."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class GenerationRequest:
    """A validated chat or completion request."""

    chat: bool
    prompt_text: str  # the text the reply continues (completions) or answers (chat: last user message)
    prompt_tokens: int
    max_tokens: int = DEFAULT_MAX_TOKENS
    min_tokens: int = 0
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False


def parse_json(raw: bytes) -> dict:
    """Decode a request body that must be a JSON object.

    Raises:
        ApiError: 400 when the body is not valid JSON or not an object.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def check_model(body: dict, accepted: tuple[str, ...]) -> None:
    """Refuse a request for a model this server does not serve.

    Raises:
        ApiError: 400 when "model" is not a string, 404 (code model_not_found) when it names
            another model. A missing "model" means this one.
    """
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise ApiError(400, "'model' must be a string", "model")
    if model not in accepted:
        raise ApiError(404, f"The model '{model}' does not exist; this server serves '{accepted[0]}'.",
                       "model", "model_not_found")


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be a number from {low} to {high}, got {value!r}", name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"'{name}' must be an integer from {low} to {high}, got {value!r}", name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false, got {value!r}", name)
    return value


def _message_text(message: object, index: int) -> tuple[str, str]:
    """(role, text) of one chat message; content may be a string or a list of text parts."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ApiError(400, f"messages[{index}] must be an object with a string 'role'", "messages")
    content = message.get("content")
    if content is None:
        return message["role"], ""
    if isinstance(content, str):
        return message["role"], content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"messages[{index}].content: only text parts are supported", "messages")
            parts.append(part["text"])
        return message["role"], "\n".join(parts)
    raise ApiError(400, f"messages[{index}].content must be a string or a list of parts", "messages")


def parse_generation(body: dict, chat: bool) -> GenerationRequest:
    """Validate a chat completion (chat=True) or completion request.

    Args:
        body: the decoded JSON object.
        chat: which endpoint it came to.

    Returns:
        The request with defaults filled in.

    Raises:
        ApiError: 400 naming the first parameter that is missing or of the wrong type or range.
    """
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list of messages", "messages")
        turns = [_message_text(m, i) for i, m in enumerate(messages)]
        users = [text for role, text in turns if role == "user"]
        prompt_text = users[-1] if users else turns[-1][1]
        # Roughly what a chat template adds: a few tokens of framing per message.
        prompt_tokens = sum(len(tokenize(text)) + 4 for _, text in turns) + 2
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise ApiError(400, "'prompt' must be a string (or a list of one string)", "prompt")
        prompt_text, prompt_tokens = prompt, len(tokenize(prompt))

    max_tokens = _integer(body, "max_completion_tokens", None, 1, MAX_TOKENS_LIMIT)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT)
    if _integer(body, "n", 1, 1, 128) != 1:
        raise ApiError(400, "'n' must be 1: the demo model returns one choice", "n")
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, "'stop' must be a non-empty string or a list of up to 4 of them", "stop")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", "stream_options")
    default_min = min(CHAT_MIN_TOKENS, max_tokens) if chat else 0
    return GenerationRequest(
        chat=chat,
        prompt_text=prompt_text,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        min_tokens=_integer(body, "min_tokens", default_min, 0, MAX_TOKENS_LIMIT),
        temperature=_number(body, "temperature", DEFAULT_TEMPERATURE, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1e-9,
        stop=stop,
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        stream=_flag(body, "stream"),
        include_usage=_flag(options or {}, "include_usage"),
        ignore_eos=_flag(body, "ignore_eos"),
    )


# Roles a Responses input message may have, and the content part types that carry its text.
RESPONSES_ROLES = ("user", "assistant", "system", "developer")
RESPONSES_TEXT_PARTS = ("input_text", "output_text")


def _responses_item_text(item: object, index: int) -> tuple[str, str]:
    """(role, text) of one Responses input item: a message whose content is a string or text parts."""
    where = f"input[{index}]"
    if not isinstance(item, dict) or item.get("type", "message") != "message":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise ApiError(400, f"{where}: only message items are supported by the demo, got {kind!r}", "input")
    role = item.get("role")
    if role not in RESPONSES_ROLES:
        raise ApiError(400, f"{where}.role must be one of {', '.join(RESPONSES_ROLES)}, got {role!r}", "input")
    content = item.get("content")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, list):
        raise ApiError(400, f"{where}.content must be a string or a list of input_text parts", "input")
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in RESPONSES_TEXT_PARTS \
                or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(400, f"{where}.content: only input_text parts are supported by the demo, got {kind!r}",
                           "input")
        parts.append(part["text"])
    return role, "\n".join(parts)


def parse_responses(body: dict) -> GenerationRequest:
    """Validate a Responses API request (POST /v1/responses) as a chat generation.

    ``input`` is a string (one user message) or a list of message items (``role`` and ``content``: a
    string or ``input_text`` parts); ``instructions`` is a system message before it. Sampling:
    ``max_output_tokens``, ``temperature``, ``top_p``, ``stream``. Tools, files and images are refused.

    Raises:
        ApiError: 400 naming the first field that is missing or of the wrong type or range.
    """
    raw = body.get("input")
    if isinstance(raw, str):
        turns = [("user", raw)]
    elif isinstance(raw, list) and raw:
        turns = [_responses_item_text(item, i) for i, item in enumerate(raw)]
    else:
        raise ApiError(400, "'input' must be a string or a non-empty list of message items", "input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ApiError(400, "'instructions' must be a string", "instructions")
    if instructions:
        turns.insert(0, ("system", instructions))
    if body.get("tools"):
        raise ApiError(400, "'tools' are not supported by the demo model", "tools")
    users = [text for role, text in turns if role == "user"]
    max_tokens = _integer(body, "max_output_tokens", DEFAULT_MAX_TOKENS, 1, MAX_TOKENS_LIMIT)
    return GenerationRequest(
        chat=True,
        prompt_text=users[-1] if users else turns[-1][1],
        prompt_tokens=sum(len(tokenize(text)) + 4 for _, text in turns) + 2,
        max_tokens=max_tokens,
        min_tokens=min(CHAT_MIN_TOKENS, max_tokens),
        temperature=_number(body, "temperature", DEFAULT_TEMPERATURE, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1e-9,
        seed=_integer(body, "seed", None, -(2**63), 2**64 - 1),
        stream=_flag(body, "stream"),
    )


class StopScanner:
    """Cuts generated text at the first stop sequence, holding back text that may begin one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.text = ""
        self.sent = 0  # how much of self.text has been released
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add one token's text; return what may be released now (maybe "").

        After a stop sequence is found, `stopped` is True and the text before it has been released.
        """
        if self.stopped:
            return ""
        self.text += piece
        if not self.stops:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        # The held-back tail guarantees that any stop starts at or after self.sent.
        hits = [i for i in (self.text.find(s, self.sent) for s in self.stops) if i >= 0]
        if hits:
            cut = min(hits)
            out, self.text, self.sent, self.stopped = self.text[self.sent:cut], self.text[:cut], cut, True
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        end = max(len(self.text) - hold, self.sent)
        out, self.sent = self.text[self.sent:end], end
        return out

    def flush(self) -> str:
        """Release what was held back once generation has ended without a stop."""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def embed(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic, L2-normalised hashed bag of words (all zeros for text without words).

    Args:
        text: the input.
        dimensions: vector length.

    Returns:
        The vector; equal texts give equal vectors in every process (blake2b, not hash()).
    """
    vector = [0.0] * dimensions
    for word in tokenize(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimensions
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def parse_embeddings(body: dict) -> tuple[list[str], int, str]:
    """Validate an embeddings request.

    Returns:
        (inputs, dimensions, encoding_format).

    Raises:
        ApiError: 400 for a missing or non-string input or a bad dimensions or encoding_format.
    """
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise ApiError(400, "'input' must be a string or a non-empty list of strings", "input")
    dimensions = _integer(body, "dimensions", EMBEDDING_DIMENSIONS, 1, 4096)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'", "encoding_format")
    return inputs, dimensions, encoding


def encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    """A vector as OpenAI sends it: a float list, or base64 of little-endian float32."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


# ---- Responses API shapes (openai/types/responses: Response, ResponseOutputMessage, ResponseStreamEvent)

def responses_usage(input_tokens: int, output_tokens: int) -> dict:
    """A Responses ``usage`` object (ResponseUsage)."""
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def output_text_part(text: str) -> dict:
    """An ``output_text`` content part (ResponseOutputText)."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, status: str, text: str | None) -> dict:
    """The assistant's output message (ResponseOutputMessage); ``text`` None means no content part yet."""
    return {"type": "message", "id": item_id, "role": "assistant", "status": status,
            "content": [] if text is None else [output_text_part(text)]}


def response_object(response_id: str, created_at: int, model: str, body: dict, req: GenerationRequest,
                    status: str, output: list[dict], usage: dict | None,
                    incomplete_reason: str | None = None) -> dict:
    """The ``response`` object (Response): what POST /v1/responses answers and its lifecycle events carry.

    Args:
        status: "in_progress", "completed" or "incomplete" (then ``incomplete_reason`` says why,
            e.g. "max_output_tokens").
        body: the request, whose ``instructions`` and ``metadata`` are echoed.
    """
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": None if status == "in_progress" else int(time.time()),
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": body.get("instructions"), "max_output_tokens": req.max_tokens, "model": model,
        "output": output, "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None}, "store": False,
        "temperature": req.temperature, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": body.get("top_p", 1.0), "truncation": "disabled", "usage": usage,
        "user": None, "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
    }

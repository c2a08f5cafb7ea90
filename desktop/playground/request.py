"""Builds the OpenAI chat-completions request the playground sends, from parameters and a transcript."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CHAT_PATH = "/v1/chat/completions"
HISTORY_HEADERS = {"X-ModelDeck-History": "1"}
TAG_HEADER = "X-ModelDeck-Tag"
MAX_STOP = 4  # OpenAI's limit on stop sequences


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters; ``seed`` None means not sent."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None


def parse_stop(text: str) -> tuple[str, ...]:
    """Stop sequences typed by a person: separated by commas or new lines, blanks dropped.

    ``\\n`` and ``\\t`` written out are turned into the characters, so a stop at a blank line
    can be typed as ``\\n\\n``. At most four are kept (the OpenAI limit).

    Raises:
        ValueError: more than four sequences.
    """
    parts = [p for p in re.split(r"[,\n]", text or "")]
    stops = []
    for part in parts:
        part = part.strip()
        if part:
            stops.append(part.replace("\\n", "\n").replace("\\t", "\t"))
    if len(stops) > MAX_STOP:
        raise ValueError(f"At most {MAX_STOP} stop sequences are allowed; {len(stops)} were given.")
    return tuple(dict.fromkeys(stops))


def parse_seed(text: str) -> int | None:
    """A seed from a text box: empty means none.

    Raises:
        ValueError: not a whole number.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"The seed must be a whole number, not '{text}'.") from None


def build_chat_request(model: str, messages: list[dict], params: GenerationParams, *,
                       stream: bool = True) -> dict:
    """The JSON body of a chat completion.

    Args:
        model: the served model name.
        messages: OpenAI messages (system, user, assistant).
        params: sampling parameters.
        stream: ask for SSE, with usage in the final chunk.

    Returns:
        A dict ready for ``json.dumps``.

    Raises:
        ValueError: no model, or no messages.
    """
    if not model:
        raise ValueError("Pick a model first.")
    if not messages:
        raise ValueError("There is nothing to send.")
    body: dict = {
        "model": model,
        "messages": messages,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    if params.stop:
        body["stop"] = list(params.stop)
    if params.seed is not None:
        body["seed"] = params.seed
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def request_headers(tag: str | None = None) -> dict[str, str]:
    """Headers that ask the backend to keep the run in its history (with a label, e.g. a comparison)."""
    return {**HISTORY_HEADERS, **({TAG_HEADER: tag} if tag else {})}

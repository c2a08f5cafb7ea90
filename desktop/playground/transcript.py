"""A multi-turn chat transcript as plain Python objects, with per-reply metrics and Markdown rendering."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReplyMetrics:
    """How one reply went, as measured by the client (token counts from ``usage`` when the server sent it)."""

    ttft_s: float | None = None
    completion_tokens: int | None = None
    total_s: float | None = None
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None
    from_usage: bool = False
    #: ``tokens_per_s`` is the server's own decode timing (llama.cpp's ``timings``), not the client's.
    rate_from_server: bool = False

    def summary(self) -> str:
        """One line for under the reply, e.g. ``TTFT 0.12 s · 42 tokens · 48.3 tok/s · 0.99 s``."""
        parts = []
        if self.ttft_s is not None:
            parts.append(f"TTFT {self.ttft_s:.2f} s")
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens" + ("" if self.from_usage else " (counted)"))
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tok/s" + (" (server)" if self.rate_from_server else ""))
        if self.total_s is not None:
            parts.append(f"{self.total_s:.2f} s total")
        return " · ".join(parts) or "no metrics"


@dataclass
class Turn:
    """One message of the conversation; assistant turns carry the model, metrics and how they ended."""

    role: str  # "user" or "assistant"
    content: str = ""
    model: str | None = None
    metrics: ReplyMetrics | None = None
    finish_reason: str | None = None  # "stop", "length", "stopped" (by the person), ...
    error: str | None = None
    streaming: bool = False


@dataclass
class Transcript:
    """The conversation with one model: what is sent next as ``messages`` and what the view shows."""

    system_prompt: str = ""
    turns: list[Turn] = field(default_factory=list)

    def add_user(self, text: str) -> Turn:
        turn = Turn("user", text)
        self.turns.append(turn)
        return turn

    def start_reply(self, model: str) -> Turn:
        """An empty assistant turn that a stream fills in."""
        turn = Turn("assistant", "", model=model, streaming=True)
        self.turns.append(turn)
        return turn

    def drop_last_exchange(self) -> None:
        """Remove the trailing assistant reply and the user turn before it (a send that failed outright)."""
        if self.turns and self.turns[-1].role == "assistant":
            self.turns.pop()
        if self.turns and self.turns[-1].role == "user":
            self.turns.pop()

    def clear(self) -> None:
        self.turns.clear()

    def messages(self, next_user: str | None = None) -> list[dict]:
        """The OpenAI ``messages`` for the next request: system prompt, the turns, then ``next_user``.

        Assistant turns that produced nothing (a failed send) are left out.
        """
        out: list[dict] = []
        if self.system_prompt.strip():
            out.append({"role": "system", "content": self.system_prompt})
        for turn in self.turns:
            if turn.role == "assistant" and not turn.content:
                continue
            out.append({"role": turn.role, "content": turn.content})
        if next_user is not None:
            out.append({"role": "user", "content": next_user})
        return out

    def last_user_text(self) -> str:
        return next((t.content for t in reversed(self.turns) if t.role == "user"), "")

    def to_markdown(self) -> str:
        """The whole conversation as Markdown: a heading per speaker, metrics in italics under replies."""
        blocks = []
        for turn in self.turns:
            if turn.role == "user":
                blocks.append(f"#### You\n\n{turn.content}")
                continue
            head = f"#### {turn.model or 'Assistant'}"
            body = turn.content or ("…" if turn.streaming else "")
            lines = [head, body] if body else [head]
            if turn.error:
                lines.append(f"> **Error:** {_one_line(turn.error)}")
            tail = []
            if turn.metrics is not None:
                tail.append(turn.metrics.summary())
            if turn.finish_reason == "stopped":
                tail.append("stopped")
            elif turn.finish_reason == "length":
                tail.append("cut at max tokens")
            if tail:
                lines.append("*" + " · ".join(tail) + "*")
            blocks.append("\n\n".join(lines))
        return "\n\n---\n\n".join(blocks)

    @classmethod
    def from_history(cls, entry: dict) -> Transcript:
        """Rebuild a transcript from a ``GET /api/history/{id}`` entry (its messages, output and metrics)."""
        transcript = cls()
        for message in entry.get("messages") or []:
            if not isinstance(message, dict):
                continue
            role, content = message.get("role"), _text(message.get("content"))
            if role == "system":
                transcript.system_prompt = content
            elif role in ("user", "assistant"):
                transcript.turns.append(Turn(role, content, model=entry.get("model") if role == "assistant" else None))
        if not entry.get("messages") and entry.get("prompt") is not None:
            transcript.add_user(_text(entry["prompt"]))
        tokens, duration, ttft = entry.get("completion_tokens"), entry.get("duration_s"), entry.get("ttft_s")
        metrics = ReplyMetrics(ttft_s=ttft, completion_tokens=tokens, total_s=duration,
                               tokens_per_s=entry.get("tokens_per_s"), prompt_tokens=entry.get("prompt_tokens"),
                               from_usage=tokens is not None)
        transcript.turns.append(Turn("assistant", entry.get("output") or "", model=entry.get("model"),
                                     metrics=metrics, finish_reason=entry.get("finish_reason"),
                                     error=entry.get("error")))
        return transcript


def _text(content) -> str:
    """Message content as text: strings as they are, OpenAI content parts joined by their text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return "" if content is None else str(content)


def _one_line(text: str) -> str:
    return " ".join(text.split())

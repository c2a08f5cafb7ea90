"""Per-request metrics of proxied inference: one record per request, aggregated for stats and /metrics."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field


def decode_span(completion_tokens: int | None, duration_s: float, ttft_s: float | None) -> tuple[int, float] | None:
    """What decode speed is measured over: the tokens after the first and the seconds they took.

    The first token's wait (queueing, prompt processing) is not decoding, so it is left out.

    Args:
        completion_tokens: output tokens of the reply.
        duration_s: from the request to the reply's last byte.
        ttft_s: from the request to the first byte of the reply (None: not measured, 0 assumed).

    Returns:
        ``(tokens, seconds)``, or None when there is no such span (one token or none, or no
        time left after the first).
    """
    if not completion_tokens or completion_tokens <= 1:
        return None
    seconds = duration_s - (ttft_s or 0.0)
    return (completion_tokens - 1, seconds) if seconds > 0 else None


def tokens_per_s(tokens: int, seconds: float) -> float | None:
    """The one definition of a rate in tokens per second (None when no time passed)."""
    return tokens / seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class RequestMetrics:
    """What one proxied /v1 request cost; ``status`` is what the client was answered."""

    model: str
    deployment_id: str | None
    endpoint: str  # "chat/completions", "completions", "embeddings"
    stream: bool
    status: int
    started_at: float  # wall clock, time.time()
    duration_s: float
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second after the first token (decode speed); over the whole
        request when there is no decode span (a single token)."""
        if not self.completion_tokens:
            return None
        span = decode_span(self.completion_tokens, self.duration_s, self.ttft_s)
        return tokens_per_s(*span) if span else tokens_per_s(self.completion_tokens, self.duration_s)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


@dataclass
class ModelTotals:
    requests: int = 0
    errors: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    duration_s_sum: float = 0.0
    ttft_s_sum: float = 0.0
    ttft_count: int = 0
    # Decode speed: tokens after the first, and the seconds they took (successful requests only).
    decode_tokens: int = 0
    decode_s_sum: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Decode speed over all successful requests of the model."""
        return tokens_per_s(self.decode_tokens, self.decode_s_sum)


class RequestLog:
    """Thread-safe running totals per model plus the most recent requests.

    Recording is O(1) and never blocks a stream for long: the proxy calls
    ``record`` once per request, after the last byte went out.
    """

    def __init__(self, keep: int = 1000):
        self._lock = threading.Lock()
        self._recent: deque[RequestMetrics] = deque(maxlen=keep)
        self._totals: dict[str, ModelTotals] = {}
        self.in_flight = 0

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def record(self, m: RequestMetrics) -> None:
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
            self._recent.append(m)
            t = self._totals.setdefault(m.model, ModelTotals())
            t.requests += 1
            t.errors += m.status >= 400
            t.completion_tokens += m.completion_tokens or 0
            t.prompt_tokens += m.prompt_tokens or 0
            t.duration_s_sum += m.duration_s
            if m.ttft_s is not None:
                t.ttft_s_sum += m.ttft_s
                t.ttft_count += 1
            if m.status < 400 and (span := decode_span(m.completion_tokens, m.duration_s, m.ttft_s)):
                t.decode_tokens += span[0]
                t.decode_s_sum += span[1]
            t.by_status[m.status] = t.by_status.get(m.status, 0) + 1

    def totals(self) -> dict[str, ModelTotals]:
        with self._lock:
            return {k: ModelTotals(**{**asdict(v), "by_status": dict(v.by_status)})
                    for k, v in self._totals.items()}

    def recent(self, seconds: float | None = None) -> list[RequestMetrics]:
        with self._lock:
            items = list(self._recent)
        if seconds is None:
            return items
        cutoff = time.time() - seconds
        return [m for m in items if m.started_at >= cutoff]

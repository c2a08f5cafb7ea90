"""Measures one streamed reply on the client: time to first token, tokens, tokens per second, total time."""

from __future__ import annotations

import time
from collections.abc import Callable

from desktop.playground.chunks import Chunk
from desktop.playground.transcript import ReplyMetrics


def decode_rate(tokens: int | None, ttft_s: float | None, total_s: float) -> float | None:
    """The desktop's one tokens-per-second: tokens after the first over the time after the first.

    That is how servers report decode speed; a one-token reply has no decode time, so it falls
    back to the whole reply. None before the first token.
    """
    if not tokens or ttft_s is None:
        return None
    decode = total_s - ttft_s
    if tokens > 1 and decode > 0:
        return (tokens - 1) / decode
    return tokens / total_s if total_s > 0 else None


class ReplyMeter:
    """Feed it the stream's chunks as they arrive; ``result()`` gives the reply's metrics.

    Tokens are counted as content-bearing chunks (one token per chunk on the servers ModelDeck
    runs) unless the final chunk carries ``usage``, whose figures win. The decode speed is the
    server's own where it reports one (llama.cpp's ``timings.predicted_per_second`` in the last
    chunk): what a client receives also counts the network, the proxy and this GUI's event loop,
    which for a fast small model on the CPU is most of the time.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._t0 = clock()
        self._first: float | None = None
        self._end: float | None = None
        self._chunks = 0
        self._usage: dict | None = None
        self._server_rate: float | None = None

    def add(self, chunk: Chunk) -> None:
        """A decoded stream chunk arrived now (see ``desktop.playground.chunks``)."""
        self.content(chunk.text)
        if chunk.usage is not None:
            self.usage(chunk.usage)
        if chunk.timings is not None:
            self.timings(chunk.timings)

    def content(self, text: str) -> None:
        """A chunk with generated text arrived now."""
        if not text:
            return
        if self._first is None:
            self._first = self._clock()
        self._chunks += 1

    def usage(self, usage: dict) -> None:
        """The server's ``usage`` object (prompt_tokens, completion_tokens)."""
        if isinstance(usage, dict):
            self._usage = usage

    def timings(self, timings: dict) -> None:
        """The server's own timings (llama.cpp: ``predicted_n``, ``predicted_per_second``)."""
        if not isinstance(timings, dict):
            return
        rate = timings.get("predicted_per_second")
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate < 1e7 \
                and (timings.get("predicted_n") or 0) > 1:
            self._server_rate = float(rate)

    def finish(self) -> None:
        """The stream ended (done, stopped or failed); later calls keep the first end time."""
        if self._end is None:
            self._end = self._clock()

    def elapsed(self) -> float:
        return (self._end if self._end is not None else self._clock()) - self._t0

    def result(self) -> ReplyMetrics:
        total = self.elapsed()
        ttft = None if self._first is None else self._first - self._t0
        tokens: int | None = self._chunks
        prompt_tokens = None
        from_usage = False
        if self._usage is not None and isinstance(self._usage.get("completion_tokens"), int):
            tokens, from_usage = self._usage["completion_tokens"], True
            prompt_tokens = self._usage.get("prompt_tokens")
        rate = self._server_rate if self._server_rate is not None else decode_rate(tokens, ttft, total)
        return ReplyMetrics(ttft_s=ttft, completion_tokens=tokens, total_s=total, tokens_per_s=rate,
                            prompt_tokens=prompt_tokens, from_usage=from_usage,
                            rate_from_server=self._server_rate is not None)

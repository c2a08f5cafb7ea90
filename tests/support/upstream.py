"""A small, fast OpenAI-compatible model server for tests and benchmarks, with failure modes on request.

Serve it with ``tests.support.live_server.serve(FakeUpstream().app)``. Each request may
steer it with extra body fields (the proxy passes unknown fields on untouched):

- ``max_tokens``: number of content events (default: the constructor's ``events``);
  event ``i`` carries the text ``"[i]"`` so a test can tell that none was merged, lost
  or reordered;
- ``x_delay``: seconds to wait before each event;
- ``x_sleep``: seconds to wait before answering at all (to trip a read timeout);
- ``x_die_after``: drop the connection after this many events, mid-stream;
- ``x_fail``: ``"html"`` answers 500 with an HTML page, ``"json"`` answers an
  OpenAI-shaped error with status ``x_status`` (default 500).

It counts streams in flight (``active_streams``), streams the client abandoned
(``cancelled``) and finished (``completed``), and keeps every request it received
(``received``: path, headers, body); ``GET /stats`` shows the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class UpstreamDied(Exception):
    """Raised inside a stream on purpose: uvicorn then drops the connection mid-body."""


class _QuietDeaths(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return not isinstance(exc, UpstreamDied)


logging.getLogger("uvicorn.error").addFilter(_QuietDeaths())


class _ClosingStream(StreamingResponse):
    # Starlette leaves a generator paused at ``yield`` to the garbage collector when the
    # client leaves; close it now so the counters are right at once.
    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


class FakeUpstream:
    """An OpenAI-compatible server whose behaviour each request chooses (see the module doc)."""

    def __init__(self, models: tuple[str, ...] = ("tiny",), events: int = 8, delay_s: float = 0.0,
                 embedding_dim: int = 8, keep_requests: int = 1000):
        self.models = models
        self.events = events
        self.delay_s = delay_s
        self.embedding_dim = embedding_dim
        self.keep_requests = keep_requests
        self.active_streams = 0
        self.cancelled = 0
        self.completed = 0
        self.received: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/completions", self._completions, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
            Route("/stats", self._stats, methods=["GET"]),
        ])

    def stats(self) -> dict[str, Any]:
        """Counters and the last request received."""
        return {"active_streams": self.active_streams, "cancelled": self.cancelled,
                "completed": self.completed, "requests": len(self.received),
                "last_request": self.received[-1] if self.received else None}

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]})

    async def _read(self, request: Request) -> dict[str, Any]:
        body = json.loads(await request.body())
        if len(self.received) < self.keep_requests:
            self.received.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        if body.get("x_sleep"):
            await asyncio.sleep(float(body["x_sleep"]))
        return body

    @staticmethod
    def _failure(body: dict[str, Any]) -> Response | None:
        mode = body.get("x_fail")
        if mode == "html":
            return HTMLResponse("<html><body><h1>500 Internal Server Error</h1></body></html>", 500)
        if mode == "json":
            status = int(body.get("x_status", 500))
            return JSONResponse({"error": {"message": f"fake failure {status}", "type": "fake_error",
                                           "param": None, "code": status}}, status)
        return None

    def _count(self, body: dict[str, Any]) -> int:
        n = body.get("max_tokens")
        return int(n) if isinstance(n, int) else self.events

    @staticmethod
    def _prompt_tokens(body: dict[str, Any]) -> int:
        if "messages" in body:
            text = " ".join(str(m.get("content", "")) for m in body["messages"])
        else:
            text = str(body.get("prompt", body.get("input", "")))
        return max(1, len(text.split()))

    async def _chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, chat: bool) -> Response:
        body = await self._read(request)
        if (failure := self._failure(body)) is not None:
            return failure
        n = self._count(body)
        model = body.get("model", self.models[0])
        usage = {"prompt_tokens": self._prompt_tokens(body), "completion_tokens": n,
                 "total_tokens": self._prompt_tokens(body) + n}
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            text = "".join(f"[{i}]" for i in range(n))
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": text, "finish_reason": "stop"})
            return JSONResponse({"id": "fake-1", "object": kind, "created": created, "model": model,
                                 "choices": [choice], "usage": usage})
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = float(body.get("x_delay", self.delay_s))
        die_after = body.get("x_die_after")
        return _ClosingStream(self._events(chat, model, created, n, delay, die_after,
                                           usage if include_usage else None),
                              media_type="text/event-stream")

    async def _events(self, chat: bool, model: str, created: int, n: int, delay: float,
                      die_after: int | None, usage: dict | None):
        kind = "chat.completion.chunk" if chat else "text_completion"
        self.active_streams += 1
        try:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                if die_after is not None and i >= die_after:
                    raise UpstreamDied(f"fake upstream dies after {die_after} events")
                last = i == n - 1
                choice = ({"index": 0, "delta": {"content": f"[{i}]"}, "finish_reason": "stop" if last else None}
                          if chat else {"index": 0, "text": f"[{i}]", "finish_reason": "stop" if last else None})
                event = {"id": "fake-1", "object": kind, "created": created, "model": model,
                         "choices": [choice]}
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            if usage is not None:
                event = {"id": "fake-1", "object": kind, "created": created, "model": model,
                         "choices": [], "usage": usage}
                yield b"data: " + json.dumps(event).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            self.completed += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.active_streams -= 1

    async def _embeddings(self, request: Request) -> Response:
        body = await self._read(request)
        if (failure := self._failure(body)) is not None:
            return failure
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        dim = int(body.get("dimensions", self.embedding_dim))
        data = [{"object": "embedding", "index": i,
                 "embedding": [((i + 1) * (j + 1) % 7) / 7.0 for j in range(dim)]}
                for i in range(len(inputs))]
        tokens = sum(max(1, len(str(x).split())) for x in inputs)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

"""OpenAI-compatible forwarding to the model containers: route by model, stream through untouched, measure, keep history."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
import httpx
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from backend.errors import Flavour, error_body, error_response
from backend.metrics import RequestLog, RequestMetrics
from backend.openai_replies import ReplyCollector, reply_text
from backend.upstream_pool import UpstreamTransport

log = logging.getLogger(__name__)

HISTORY_HEADER = "x-modeldeck-history"
TAG_HEADER = "x-modeldeck-tag"  # a free label stored with the history entry (e.g. a comparison)
HISTORY_ID_HEADER = "X-ModelDeck-History-Id"
# Streams cannot carry a header that is only known after the last byte, so the id of a
# stream's history entry is sent as an SSE comment after the upstream's last event:
# OpenAI clients ignore comments, the desktop reads this line.
HISTORY_ID_COMMENT = b": modeldeck-history-id "
BODY_OPTIONS_KEY = "modeldeck"
# Enough for the final usage chunk (a few hundred bytes) and the [DONE] line behind it.
TAIL_BYTES = 4096
USAGE_WINDOW = 2048  # a usage object, token details included, is a few hundred bytes
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody was left to answer

_json_decoder = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where one served model name is answered: a deployment's OpenAI base URL and its state."""

    deployment_id: str
    served_name: str
    base_url: str  # e.g. "http://127.0.0.1:49123/v1", no trailing slash
    ready: bool
    state: str  # what a person reads: "running", "starting", "exited", ...
    # APIs the server answers itself beside chat completions (recipe ``[server] native_apis``):
    # "anthropic_messages", "openai_responses".
    native_apis: frozenset[str] = frozenset()
    recipe: str = ""  # the runtime's recipe name (e.g. "vllm"), for messages that name it
    # Not ready, but a request starts it (or waits for its load): on demand and stopped or loading.
    loads_on_request: bool = False
    # Federation (backend/federation.py): the node that serves it ("local": this backend's engine),
    # headers every request to it carries (the node's own token), and why the node cannot be
    # reached now (then the request is answered 503 node_unreachable).
    node: str = "local"
    headers: tuple[tuple[str, str], ...] = ()
    unreachable: str | None = None
    #: The client to send with instead of the shared one (a TLS node's, holding its client certificate).
    client: Any = None


@dataclass(frozen=True, slots=True)
class NativeApi:
    """An API only some runtimes answer themselves: ``forward`` passes it through to those and
    refuses it, with a 404 naming the runtime, for the others."""

    key: str  # the recipe's ``native_apis`` value, e.g. "openai_responses"
    name: str  # what a person reads, e.g. "OpenAI's Responses API (POST /v1/responses)"
    instead: str  # what to do instead, e.g. "Use POST /v1/chat/completions with this model."


class UpstreamDirectory(Protocol):
    """Which deployment serves which model name; answers from memory, never does I/O."""

    def lookup(self, model: str) -> Upstream | None:
        """The upstream serving ``model`` (ready or not), or None when nothing serves it."""
        ...

    def ready_models(self) -> list[Upstream]:
        """Every upstream that can answer right now."""
        ...


class ReplyAdapter(Protocol):
    """Serves another API over a runtime's chat completions: one object per request.

    ``forward`` calls ``request`` with the client's body (after the model is resolved) and
    sends what it returns to ``chat/completions``; the answer comes back through ``body`` (a
    whole reply, or an error) or ``stream`` (the model server's SSE bytes as they arrive,
    ModelDeck's own error events and comments included). ``backend/anthropic_api.py`` is one.
    """

    def request(self, payload: dict) -> dict:
        """The chat completion request for ``payload``; ValueError (its message says what is
        unsupported or wrong) is answered 400."""
        ...

    def body(self, status: int, content: bytes) -> bytes:
        """The client's body for the model server's whole answer (``status`` is its status)."""
        ...

    def stream(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The client's stream for the model server's SSE bytes."""
        ...


class StaticDirectory:
    """A fixed UpstreamDirectory, for tests, benchmarks and headless setups."""

    def __init__(self, upstreams: list[Upstream]):
        self._by_name = {u.served_name: u for u in upstreams}

    def lookup(self, model: str) -> Upstream | None:
        return self._by_name.get(model)

    def ready_models(self) -> list[Upstream]:
        return [u for u in self._by_name.values() if u.ready]


def make_http_client(
    *,
    connect_timeout: float = 5.0,
    read_timeout: float = 600.0,
    write_timeout: float = 60.0,
    pool_timeout: float = 30.0,
    max_connections: int = 512,
    max_keepalive_connections: int = 128,
) -> httpx.AsyncClient:
    """The one HTTP client the app shares to reach model servers.

    Args:
        connect_timeout: seconds to open a connection to a model server.
        read_timeout: longest silence allowed between bytes; long, since a loaded model
            can take minutes before its first token.
        write_timeout: seconds to send a request body.
        pool_timeout: seconds to wait for a free connection when all are busy.
        max_connections: requests in flight at once, over all model servers (more wait up
            to ``pool_timeout`` for a slot).
        max_keepalive_connections: idle connections kept for reuse, per model server.

    Returns:
        An ``httpx.AsyncClient``; the caller closes it (``await client.aclose()``).
    """
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_keepalive_connections, keepalive_expiry=30.0)
    return httpx.AsyncClient(
        # An O(1) keep-alive pool: httpcore's own costs more per request the more are in flight.
        transport=UpstreamTransport(limits),
        timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout,
                              write=write_timeout, pool=pool_timeout),
        # Model servers are on loopback: a user's HTTP(S)_PROXY must not capture them.
        trust_env=False,
        follow_redirects=False,
        # Raw passthrough forwards bytes as they come; compressed bytes would reach the
        # client without their Content-Encoding.
        headers={"Accept-Encoding": "identity"},
    )


class _Rejected(Exception):
    """A request ModelDeck answers itself, before or instead of the model server."""

    def __init__(self, status: int, message: str, type: str, code: str | int | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.headers = headers

    def response(self, headers: dict[str, str] | None = None, flavour: Flavour = Flavour.OPENAI) -> Response:
        # OpenAI's types are not Anthropic's: there the status picks the type.
        return error_response(flavour, self.status, self.code, self.message,
                              type=self.type if flavour is Flavour.OPENAI else None,
                              param=self.param, headers={**(self.headers or {}), **(headers or {})} or None)


@dataclass(slots=True)
class _Exchange:
    """One proxied request while it runs: what is needed to measure and record it at the end."""

    endpoint: str
    model: str
    deployment_id: str | None
    stream: bool
    started_at: float
    t0: float
    payload: dict | None = None
    keep_history: bool = False
    tag: str | None = None
    recorded: bool = False
    flavour: Flavour = Flavour.OPENAI  # the shape of ModelDeck's own errors to this client


async def forward(request: Request, endpoint: str, *, upstreams: UpstreamDirectory,
                  http: httpx.AsyncClient, request_log: RequestLog,
                  history: Any | None = None, flavour: Flavour = Flavour.OPENAI,
                  adapter: ReplyAdapter | None = None, native: NativeApi | None = None) -> Response:
    """Send a /v1 request to the deployment that serves its ``model`` and relay the answer.

    Args:
        request: the client's request; its body is a JSON object with ``model``.
        endpoint: the path under the OpenAI base, e.g. ``"chat/completions"``.
        upstreams: where each served model name is answered.
        http: the shared client (see ``make_http_client``).
        request_log: receives one ``RequestMetrics`` per request.
        history: a ``HistoryStore`` or None; used only when the request asks for history
            (header ``X-ModelDeck-History: 1`` or body ``"modeldeck": {"history": true}``;
            a label from header ``X-ModelDeck-Tag`` or ``"modeldeck": {"tag": ...}`` goes with it).
            The entry's id comes back in header ``X-ModelDeck-History-Id``, or for a stream
            in a closing SSE comment ``: modeldeck-history-id <id>``.
        flavour: the shape of ModelDeck's own errors (Anthropic's for /v1/messages).
        adapter: serves another API over ``chat/completions`` (``endpoint`` is then
            ``"chat/completions"``): see :class:`ReplyAdapter`.
        native: an API only runtimes that declare it serve (``Upstream.native_apis``); a model
            on another runtime gets a 404 that names the runtime and what to use instead.

    Returns:
        The model server's answer (streamed through as it arrives when ``"stream": true``),
        or an error in OpenAI's shape: 400 bad body, 404 unknown model, 503 model not
        ready, 502 model server unreachable or broken, 504 model server too slow.
        Nothing is raised.
    """
    ex = _Exchange(endpoint, "(invalid)", None, False, time.time(), time.perf_counter(), flavour=flavour)
    request_log.started()
    lifecycle = getattr(upstreams, "lifecycle", None)
    tracked: str | None = None  # the deployment whose in-flight count this request holds
    try:
        body = await request.body()
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise _Rejected(400, f"The request body is not valid JSON ({exc}).",
                            "invalid_request_error") from None
        if not isinstance(payload, dict):
            raise _Rejected(400, "The request body must be a JSON object.", "invalid_request_error")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise _Rejected(400, "The request needs a 'model': the served name of a model "
                            "(GET /v1/models lists them).", "invalid_request_error", param="model")
        upstream = upstreams.lookup(model)
        if upstream is None:
            ex.model = "(unknown)"  # keeps the per-model totals bounded by what is served
            names = ", ".join(sorted(u.served_name for u in upstreams.ready_models())) or "none"
            raise _Rejected(404, f"The model '{model}' does not exist. Available models: {names}. "
                            "Launch it in ModelDeck, or pick one of GET /v1/models.",
                            "invalid_request_error", "model_not_found", "model")
        ex.model, ex.deployment_id = model, upstream.deployment_id
        if native is not None and native.key not in upstream.native_apis:
            runtime = f"the runtime '{upstream.recipe}'" if upstream.recipe else "its runtime"
            raise _Rejected(404, f"The model '{model}' (deployment {upstream.deployment_id}) runs on "
                            f"{runtime}, which does not serve {native.name}. {native.instead}",
                            "invalid_request_error", "unsupported_api")
        if lifecycle is not None:
            lifecycle.begin(upstream.deployment_id)
            tracked = upstream.deployment_id
        cold = not upstream.ready and lifecycle is not None and upstream.loads_on_request
        if not upstream.ready and not cold:
            if upstream.unreachable is not None:
                raise _Rejected(503, f"The model '{model}' (deployment {upstream.deployment_id}) is on node "
                                f"'{upstream.node}', which cannot be reached now: {upstream.unreachable}",
                                "service_unavailable", "node_unreachable", "model", headers={"Retry-After": "10"})
            raise _Rejected(503, f"The model '{model}' (deployment {upstream.deployment_id}) is "
                            f"{upstream.state}, not ready. Wait until it is ready, or start it "
                            "in ModelDeck if it has stopped; its logs say why it is not.",
                            "service_unavailable", "model_not_ready", "model")
        if BODY_OPTIONS_KEY in payload:
            options = payload.pop(BODY_OPTIONS_KEY)
            # The model server must not see ModelDeck's own options.
            body = json.dumps(payload).encode()
            if isinstance(options, dict):
                ex.keep_history = options.get("history") is True
                tag = options.get("tag")
                ex.tag = tag if isinstance(tag, str) else None
        if request.headers.get(HISTORY_HEADER) == "1":
            ex.keep_history = True
            ex.tag = ex.tag or request.headers.get(TAG_HEADER)
        ex.keep_history = ex.keep_history and history is not None
        if adapter is not None:
            try:
                payload = adapter.request(payload)
            except ValueError as exc:
                raise _Rejected(400, str(exc), "invalid_request_error") from None
            body = json.dumps(payload).encode()
        ex.payload = payload
        ex.stream = payload.get("stream") is True
        if cold:
            load = lifecycle.request_load(upstream.deployment_id, "request",
                                          f"a /v1/{endpoint} request for '{model}'")
            if ex.stream:
                relay = _cold_stream(load, lifecycle, request, body, ex, upstreams, http, request_log, history,
                                     adapter)
                tracked = None  # the stream ends it
                return _ColdStream(relay, ex, request_log, lifecycle)
            upstream = await _loaded(load, lifecycle, upstreams, model, ex)
        url = _upstream_url(upstream.base_url, endpoint)
        headers = {"Content-Type": request.headers.get("content-type") or "application/json"}
        sender = http
        if upstream.headers:  # a node's backend: its own token (the client's is this backend's)
            headers.update(upstream.headers)
            sender = upstream.client or http
        # The client's Authorization is ModelDeck's own token: it is not passed on.
        upstream_request = http.build_request("POST", url, content=body, headers=headers)
        try:
            response = await _send_unless_client_leaves(sender, upstream_request, ex.stream,
                                                        request.receive)
        except httpx.TransportError as exc:
            raise _transport_rejection(exc, upstream, http) from None
        if response is None:
            _record(request_log, ex, CLIENT_CLOSED, error="the client disconnected before the reply")
            return Response(status_code=CLIENT_CLOSED)  # nobody is left to read it
        if ex.stream:
            if response.status_code == 200:
                relay = _relay_stream(response, ex, request_log, history)
                stream_end, tracked = tracked, None  # the stream ends it, after its last byte
                return _EventStream(relay if adapter is None else adapter.stream(relay),
                                    response, ex, request_log, lifecycle, stream_end)
            try:
                await response.aread()
            except httpx.TransportError as exc:
                raise _transport_rejection(exc, upstream, http) from None
            finally:
                await response.aclose()
        reply = await _relay_body(response, ex, upstream, request_log, history)
        if adapter is not None:
            reply = Response(adapter.body(response.status_code, reply.body), reply.status_code,
                             headers={k: v for k, v in reply.headers.items()
                                      if k in (HISTORY_ID_HEADER.lower(),)}, media_type="application/json")
        return reply
    except _Rejected as rejected:
        headers = None
        if not ex.recorded:
            m = _record(request_log, ex, rejected.status, error=rejected.message)
            # Only set once the model was found: a failed run (502, 504) is history too.
            if ex.keep_history:
                history_id = await _save_history(history, ex, m, "", None)
                if history_id is not None:
                    headers = {HISTORY_ID_HEADER: str(history_id)}
        return rejected.response(headers, ex.flavour)
    except Exception:
        log.exception("proxying %s for model %s failed", endpoint, ex.model)
        if not ex.recorded:
            _record(request_log, ex, 500, error="internal error")
        return error_response(ex.flavour, 500, 500, "ModelDeck failed while proxying this request; "
                              "the backend log has the details.")
    finally:
        if tracked is not None:
            lifecycle.end(tracked)


async def _send_unless_client_leaves(http: httpx.AsyncClient, upstream_request: httpx.Request,
                                    stream: bool, receive: Receive) -> httpx.Response | None:
    """Send upstream and wait for its answer (its headers, when streamed), or for the client to leave.

    Returns None when the client left first: the upstream request is then cancelled, which
    closes its connection, so the model server stops generating a reply nobody will read.
    Plain asyncio tasks rather than an anyio task group: this is on every request's path,
    and a task group costs ten times more.
    """
    sending = asyncio.ensure_future(http.send(upstream_request, stream=stream))
    watching = asyncio.ensure_future(_disconnected(receive))

    def on_watch_done(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is None:
            sending.cancel()

    watching.add_done_callback(on_watch_done)
    try:
        return await sending
    except asyncio.CancelledError:
        # Only a cancel of ours means "the client left"; one from outside (shutdown) goes on.
        if watching.done() and not watching.cancelled() and watching.exception() is None \
                and not asyncio.current_task().cancelling():
            return None
        raise
    finally:
        watching.cancel()


async def _disconnected(receive: Receive) -> None:
    # The body was read already, so the next message is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


@functools.lru_cache(maxsize=1024)
def _upstream_url(base_url: str, endpoint: str) -> httpx.URL:
    # Parsing a URL is a measurable part of httpx's per-request cost; base URLs are few.
    return httpx.URL(f"{base_url}/{endpoint}")


def _transport_rejection(exc: httpx.TransportError, upstream: Upstream,
                         http: httpx.AsyncClient) -> _Rejected:
    if isinstance(exc, httpx.TimeoutException):
        limit = http.timeout.read if isinstance(exc, httpx.ReadTimeout) else None
        return connection_rejection("timeout", f"{type(exc).__name__}", upstream, limit)
    kind = "connect" if isinstance(exc, httpx.ConnectError) else "closed"
    return connection_rejection(kind, f"{exc or type(exc).__name__}", upstream)


def connection_rejection(kind: str, detail: str, upstream: Upstream, limit: float | None = None) -> _Rejected:
    """The answer when the model server's connection failed: ``kind`` is "connect" (502: could not
    connect), "timeout" (504: silent past ``limit`` seconds) or "closed" (502: closed mid-answer)."""
    where = f"the model server of '{upstream.served_name}' (deployment {upstream.deployment_id})"
    if kind == "timeout":
        within = f" within {limit:g} s" if limit else " in time"
        return _Rejected(504, f"{where.capitalize()} did not answer{within} "
                         f"({detail}). It may be overloaded or stuck: check its "
                         "logs in ModelDeck, or retry.", "upstream_timeout", 504)
    if kind == "connect":
        return _Rejected(502, f"ModelDeck could not connect to {where} at {upstream.base_url} "
                         f"({detail}). Is the deployment still running? "
                         "Check its state and logs in ModelDeck.", "upstream_error", 502)
    return _Rejected(502, f"{where.capitalize()} closed the connection without a complete answer "
                     f"({detail}). Check its logs in ModelDeck.", "upstream_error", 502)


async def _relay_body(response: httpx.Response, ex: _Exchange, upstream: Upstream,
                      request_log: RequestLog, history: Any | None) -> Response:
    """Relay a complete (non-streamed) answer, wrapping a 5xx that is not OpenAI-shaped."""
    status, content = response.status_code, response.content
    media_type = response.headers.get("content-type", "application/json")
    decoded = checked_body(status, content, upstream)
    m = record_body(request_log, ex, status, content)
    headers = None
    if ex.keep_history:
        if decoded is None:
            try:
                decoded = json.loads(content)
            except ValueError:
                decoded = None
        output, finish_reason = reply_text(decoded, ex.endpoint)
        history_id = await _save_history(history, ex, m, output, finish_reason)
        if history_id is not None:
            headers = {HISTORY_ID_HEADER: str(history_id)}
    return Response(content, status, headers=headers, media_type=media_type)


def checked_body(status: int, content: bytes, upstream: Upstream) -> Any:
    """A 5xx answer's decoded JSON (None for other statuses, or when it is not JSON).

    Raises:
        _Rejected: 502 for a 5xx that is not an OpenAI-shaped error (an HTML page, a stack trace):
            the client gets an error it can parse that names the deployment.
    """
    if status < 500:
        return None
    decoded: Any = None
    try:
        decoded = json.loads(content)
    except ValueError:
        pass
    if not (isinstance(decoded, dict) and ("error" in decoded or decoded.get("object") == "error")):
        snippet = content[:200].decode("utf-8", "replace").strip() or "empty body"
        message = (f"The model server of '{upstream.served_name}' (deployment "
                   f"{upstream.deployment_id}) failed with HTTP {status}: {snippet}. "
                   "Check its logs in ModelDeck.")
        raise _Rejected(502, message, "upstream_error", 502)
    return decoded


def record_body(request_log: RequestLog, ex: _Exchange, status: int, content: bytes) -> RequestMetrics:
    """Measure a whole answer: its usage (a small window of the body is decoded), or its error text."""
    usage = _usage_in(content) if status < 400 else None
    error = None if status < 400 else content[:500].decode("utf-8", "replace")
    return _record(request_log, ex, status, usage=usage, error=error)


class StreamTally:
    """What is measured of a stream as its bytes pass: the first byte's time, events, the tail (for
    ``usage``), and the reply text when history keeps it. Counting and slicing bytes only: no JSON
    per chunk."""

    __slots__ = ("ex", "first", "events", "tail", "reply")

    def __init__(self, ex: _Exchange):
        self.ex = ex
        self.first: float | None = None
        self.events = 0
        self.tail = b""
        self.reply = ReplyCollector(ex.endpoint) if ex.keep_history else None

    def feed(self, chunk: bytes) -> None:
        if self.first is None:
            # The first bytes, not the first text: a chat stream may open with a
            # role-only event; most servers send it along with the first token.
            self.first = time.perf_counter()
        self.events += chunk.count(b"data:")
        tail = self.tail + chunk
        self.tail = tail[-TAIL_BYTES:] if len(tail) > 2 * TAIL_BYTES else tail
        if self.reply is not None:
            self.reply.feed(chunk)

    def finish(self, request_log: RequestLog, status: int, error: str | None) -> RequestMetrics:
        """Record the whole stream (its usage from the tail, else one token per event)."""
        usage = _usage_in(self.tail[-TAIL_BYTES:])
        if usage is None and self.events:
            # Asked without stream_options.include_usage: one event is about one token, less
            # the closing [DONE]. An estimate; adding include_usage upstream instead would
            # mean cutting the extra usage event out of the client's stream.
            usage = {"completion_tokens": self.events - (b"[DONE]" in self.tail)}
        return _record(request_log, self.ex, status, first=self.first, usage=usage, error=error)

    def abandoned(self, request_log: RequestLog) -> RequestMetrics:
        """Record a stream whose client left mid-reply (499)."""
        return _record(request_log, self.ex, CLIENT_CLOSED, first=self.first,
                       usage={"completion_tokens": self.events} if self.events else None,
                       error="the client disconnected mid-reply")


async def _relay_stream(response: httpx.Response, ex: _Exchange, request_log: RequestLog,
                        history: Any | None) -> AsyncIterator[bytes]:
    """Yield the upstream's bytes as they arrive; measure on the side; close the upstream at the end."""
    tally = StreamTally(ex)
    status, error = 200, None
    try:
        try:
            async for chunk in response.aiter_raw():
                tally.feed(chunk)
                yield chunk
        except httpx.TransportError as exc:
            timed_out = isinstance(exc, httpx.TimeoutException)
            status = 504 if timed_out else 502
            error = stream_break_message(ex, timed_out, f"{exc or type(exc).__name__}")
            yield _error_event(error, status, ex.flavour)
        m = tally.finish(request_log, status, error)
        if tally.reply is not None:
            history_id = await _save_history(history, ex, m, tally.reply.text(), tally.reply.finish_reason)
            if history_id is not None:
                yield HISTORY_ID_COMMENT + str(history_id).encode() + b"\n\n"
    finally:
        # Shielded: on a client disconnect this runs inside a cancelled scope, and the
        # upstream must still be told, or the model keeps generating for nobody.
        with anyio.CancelScope(shield=True):
            await response.aclose()
            if not ex.recorded:
                m = tally.abandoned(request_log)
                if tally.reply is not None:
                    await _save_history(history, ex, m, tally.reply.text(), tally.reply.finish_reason)


def stream_break_message(ex: _Exchange, timed_out: bool, detail: str) -> str:
    """What a stream's closing error event says when the model server stopped or went silent mid-reply."""
    what = "went silent" if timed_out else "stopped"
    return (f"The model server of '{ex.model}' (deployment {ex.deployment_id}) {what} "
            f"mid-reply ({detail}). Check its logs in ModelDeck.")


class _EventStream(StreamingResponse):
    """An SSE passthrough that always closes the upstream, however the client leaves.

    Starlette stops iterating when the client goes away but leaves a generator paused
    at ``yield`` to the garbage collector, and one that never started is never run at
    all; closing both here tells the model server now.
    """

    def __init__(self, body: AsyncIterator[bytes], upstream: httpx.Response | None, ex: _Exchange,
                 request_log: RequestLog, lifecycle: Any | None = None, in_flight: str | None = None):
        super().__init__(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        self._upstream, self._ex, self._request_log = upstream, ex, request_log
        self._lifecycle, self._in_flight = lifecycle, in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                if self._upstream is not None:
                    await self._upstream.aclose()
                if not self._ex.recorded:
                    _record(self._request_log, self._ex, CLIENT_CLOSED,
                            error="the client disconnected before the reply began")
                if self._in_flight is not None:
                    self._lifecycle.end(self._in_flight)


class _ColdStream(_EventStream):
    """A stream whose model is loading: comments while it loads, then the model server's bytes."""

    def __init__(self, body: AsyncIterator[bytes], ex: _Exchange, request_log: RequestLog, lifecycle: Any):
        super().__init__(body, None, ex, request_log, lifecycle, ex.deployment_id)


#: Seconds between the SSE comments a streaming client gets while its model loads.
LOADING_COMMENT_S = 2.0


def _load_rejection(load: Any, lifecycle: Any, model: str, ex: _Exchange, waited: float | None) -> _Rejected:
    """The 503 for a load that failed, or did not end within the wait (``waited`` seconds)."""
    where = f"The model '{model}' (deployment {ex.deployment_id})"
    if waited is not None:
        return _Rejected(503, f"{where} did not finish loading within {waited:.0f} s. Retry later; its logs in "
                         "ModelDeck say what it is doing.", "service_unavailable", "model_load_timeout", "model",
                         headers={"Retry-After": "30"})
    error = load.error
    if getattr(error, "code", "") == "does_not_fit":
        return _Rejected(503, f"{error.message} {error.hint or ''}".strip(), "service_unavailable",
                         "model_does_not_fit", "model", headers={"Retry-After": "60"})
    details = getattr(error, "details", {}) or {}
    tail = [line for line in details.get("log_tail") or [] if line.strip()][-8:]
    exit_code = details.get("exit_code")
    message = f"{where} could not be loaded: {error.message}"
    if exit_code is not None:
        message += f" Exit code {exit_code}."
    if tail:
        message += " Last log lines: " + " | ".join(tail)
    if getattr(error, "hint", None):
        message += f" {error.hint}"
    return _Rejected(503, message, "service_unavailable", "model_load_failed", "model",
                     headers={"Retry-After": "10"})


async def _loaded(load: Any, lifecycle: Any, upstreams: UpstreamDirectory, model: str, ex: _Exchange) -> Upstream:
    """Wait for ``load`` (bounded by the model's start-up time) and return the ready upstream.

    Raises:
        _Rejected: 503 with Retry-After when the load failed, does not fit, or took too long.
    """
    timeout = lifecycle.wait_timeout(ex.deployment_id)
    if not await load.wait(timeout):
        raise _load_rejection(load, lifecycle, model, ex, timeout)
    if load.error is not None:
        raise _load_rejection(load, lifecycle, model, ex, None)
    upstream = upstreams.lookup(model)
    if upstream is None or not upstream.ready:
        raise _Rejected(503, f"The model '{model}' was loaded but stopped again before this request reached it. "
                        "Retry.", "service_unavailable", "model_not_ready", "model", headers={"Retry-After": "1"})
    return upstream


async def _cold_stream(load: Any, lifecycle: Any, request: Request, body: bytes, ex: _Exchange,
                       upstreams: UpstreamDirectory, http: httpx.AsyncClient, request_log: RequestLog,
                       history: Any | None, adapter: ReplyAdapter | None) -> AsyncIterator[bytes]:
    """SSE comments every ``LOADING_COMMENT_S`` while the model loads (the first at once, so the client has
    its headers), then the model server's stream; a failed load ends the stream with the error event."""
    t0 = time.monotonic()
    name = ex.model.encode("utf-8", "replace").replace(b"\n", b" ")
    timeout = lifecycle.wait_timeout(ex.deployment_id)
    while True:
        yield b": modeldeck loading " + name + b" (%d s)\n\n" % int(time.monotonic() - t0)
        if await load.wait(min(LOADING_COMMENT_S, max(0.0, t0 + timeout - time.monotonic()))):
            break
        if time.monotonic() - t0 >= timeout:
            break
    try:
        if not load.done.is_set():
            raise _load_rejection(load, lifecycle, ex.model, ex, timeout)
        upstream = await _loaded(load, lifecycle, upstreams, ex.model, ex)
        headers = {"Content-Type": request.headers.get("content-type") or "application/json"}
        upstream_request = http.build_request("POST", _upstream_url(upstream.base_url, ex.endpoint), content=body,
                                              headers=headers)
        try:
            response = await http.send(upstream_request, stream=True)
        except httpx.TransportError as exc:
            raise _transport_rejection(exc, upstream, http) from None
        if response.status_code != 200:
            try:
                content = (await response.aread())[:300].decode("utf-8", "replace")
            finally:
                await response.aclose()
            raise _Rejected(502 if response.status_code >= 500 else response.status_code,
                            f"The model server of '{ex.model}' answered HTTP {response.status_code}: {content}",
                            "upstream_error", response.status_code)
        relay = _relay_stream(response, ex, request_log, history)
        outer = relay if adapter is None else adapter.stream(relay)
        try:
            async for chunk in outer:
                yield chunk
        finally:
            with anyio.CancelScope(shield=True):
                for gen in (outer, relay):
                    aclose = getattr(gen, "aclose", None)
                    if aclose is not None:
                        await aclose()
    except _Rejected as rejected:
        _record(request_log, ex, rejected.status, error=rejected.message)
        yield _error_event(rejected.message, rejected.status, ex.flavour)


def _error_event(message: str, code: int, flavour: Flavour = Flavour.OPENAI) -> bytes:
    if flavour is Flavour.ANTHROPIC:  # Anthropic's streams end on an "error" event
        return b"event: error\ndata: " + error_body(flavour, code, code, message) + b"\n\n"
    body = error_body(Flavour.OPENAI, code, code, message, type="upstream_error")
    return b"data: " + body + b"\n\ndata: [DONE]\n\n"


def _usage_in(data: bytes) -> dict | None:
    """The last ``"usage": {...}`` object in ``data`` (a body, or the end of a stream), or None.

    Only a small window after the key is decoded, never the whole body or every event;
    inside JSON strings the key's quotes are escaped, so generated text cannot match.
    """
    end = len(data)
    while (pos := data.rfind(b'"usage"', 0, end)) >= 0:
        end = pos
        rest = data[pos + 7:pos + 7 + USAGE_WINDOW].lstrip()
        if not rest.startswith(b":"):
            continue
        try:
            value, _ = _json_decoder.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _record(request_log: RequestLog, ex: _Exchange, status: int, *, first: float | None = None,
            usage: dict | None = None, error: str | None = None) -> RequestMetrics:
    usage = usage or {}
    prompt_tokens = usage.get("prompt_tokens")
    completion_tokens = usage.get("completion_tokens")
    if completion_tokens is None and "output_tokens" in usage:  # Anthropic's names (/v1/messages)
        prompt_tokens, completion_tokens = usage.get("input_tokens"), usage["output_tokens"]
    m = RequestMetrics(
        model=ex.model, deployment_id=ex.deployment_id, endpoint=ex.endpoint, stream=ex.stream,
        status=status, started_at=ex.started_at, duration_s=time.perf_counter() - ex.t0,
        ttft_s=None if first is None else first - ex.t0,
        prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
        completion_tokens=completion_tokens if isinstance(completion_tokens, int) else None,
        error=error,
    )
    ex.recorded = True
    request_log.record(m)
    return m


async def _save_history(history: Any, ex: _Exchange, m: RequestMetrics, output: str,
                        finish_reason: str | None) -> Any | None:
    """Store the exchange off the event loop; the new entry's id, or None if storing failed.

    A history failure is logged and never reaches the client: the reply matters more.
    """
    record = functools.partial(
        history.record, model=ex.model, endpoint=ex.endpoint, request=ex.payload, output=output,
        finish_reason=finish_reason, status=m.status, error=m.error, ttft_s=m.ttft_s,
        prompt_tokens=m.prompt_tokens, completion_tokens=m.completion_tokens,
        tokens_per_s=m.tokens_per_s, duration_s=m.duration_s, created_at=m.started_at,
        deployment_id=ex.deployment_id, tag=ex.tag,
    )
    try:
        return await anyio.to_thread.run_sync(record)
    except Exception:
        log.exception("could not save the history of a %s request to %s", ex.endpoint, ex.model)
        return None

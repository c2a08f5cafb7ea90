"""The /v1 data plane: the hot routes answered below FastAPI, on uvicorn's own HTTP parser.

Through the ASGI stack a proxied request costs a task, a middleware chain, a router, a
request object, an httpx request, an async body iterator and a response object: about
1.4 ms of CPU, so ModelDeck relayed 700 requests/s where nginx relayed 23,000 on the same
cores (docs/benchmarks.md). Here the common case is handled in the connection's protocol
callbacks instead, with bytes in and bytes out:

* ``POST /v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings`` for a ready local
  model: the body is parsed once for ``model`` and ``stream``, sent as it came over a pooled
  keep-alive connection (backend/upstream_wire.py), and the answer relayed as it arrives
  (a stream chunk by chunk), measured for ``/metrics`` as the ASGI path measures it
  (backend/proxy.py's ``StreamTally``, ``record_body``).
* ``GET /v1/models`` and ``GET /api/stats``: bytes made once per change and served again.

Everything else, and every request the fast path is not sure about, goes to the FastAPI
app exactly as before, its body handed over as if uvicorn had read it: requests the front
door refuses (the middleware answers them with the same checks: one ``FrontDoor``), bodies
that are not JSON or name no served model (their errors are the app's), history, ModelDeck's
body options, models that are loading or on another node, chunked or ``Expect`` requests,
and pipelined requests behind one in flight. So the fast path adds no behaviour: it is the
ASGI path's answer, cheaper. ``/docs`` still describes the routes, which stay registered.
On a TLS listener (a node reached over TLS) the door checks the Host the app would see
inside (backend/server.py's ``MutualTlsHost``).

The protocol is a subclass of uvicorn's ``HttpToolsProtocol``: keep-alive, pipelining,
flow control, graceful shutdown and the ASGI hand-over stay uvicorn's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from backend import proxy
from backend.errors import Flavour, error_body
from backend.routes.openai import model_list
from backend.routes.stats import snapshot_json_cache
from backend.upstream_wire import UpstreamConnection, UpstreamPool

log = logging.getLogger(__name__)

#: POST routes the data plane forwards: path -> endpoint under the model server's OpenAI base.
FORWARDED = {b"/v1/chat/completions": "chat/completions", b"/v1/completions": "completions",
             b"/v1/embeddings": "embeddings"}
MODELS_PATH, STATS_PATH = b"/v1/models", b"/api/stats"
_STREAM_HEAD = (b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
                b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n")
_LAST_CHUNK = b"0\r\n\r\n"
#: Request headers that send a request to the app: a chunked body (the middleware counts it), Expect,
#: an upgrade, history kept by the app.
_NOT_FAST = frozenset({b"transfer-encoding", b"expect", b"upgrade", proxy.HISTORY_HEADER.encode()})
_PATHS = {path: path.decode() for path in (b"/v1/chat/completions", b"/v1/completions", b"/v1/embeddings",
                                          b"/v1/models", b"/api/stats")}
_CRLF = b"\r\n"


class _Answering:
    """What uvicorn sees as the connection's current request while the data plane answers it: its
    pipelining, disconnect and shutdown logic read and set these attributes of a "cycle"."""

    __slots__ = ("response_complete", "disconnected", "keep_alive")

    class _Event:
        @staticmethod
        def set() -> None:
            pass

    message_event = _Event()

    def __init__(self, keep_alive: bool):
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive


class DataPlane:
    """One per app: the fast routes' shared state (upstream pool, cached bytes, the front door)."""

    def __init__(self, app: Any, tls_host: bytes | None = None):
        self.app = app
        #: On a TLS listener with required client certificates: the loopback Host its requests are checked
        #: with (backend/server.py's MutualTlsHost does the same for the app). None: TLS requests go to the app.
        self.tls_host = tls_host
        self.state = app.state
        self.door = app.state.front_door
        self.pool: UpstreamPool | None = None
        self._defaults_src: Any = None
        self._defaults = b""
        self._models_key: Any = None
        self._models = b""
        self._timeouts_of: Any = object()  # the http client the timeouts were read from
        self._timeouts = (5.0, 600.0)  # (connect, read) seconds: the app's http client's
        self._watched: set[_Forward] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        #: Requests to the fast routes: answered here, by route ("forward", "models", "stats"), and handed
        #: to the app ("app": refused by the door, or not for the fast path). Read by tests and the bench.
        self.counts = {"forward": 0, "models": 0, "stats": 0, "app": 0}

    def close(self) -> None:
        """Close the idle upstream connections (the app's shutdown)."""
        if self.pool is not None:
            self.pool.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    # -- what a request needs

    def upstream_pool(self, loop: asyncio.AbstractEventLoop) -> UpstreamPool:
        if self.pool is None or self.pool.loop is not loop:
            self.pool = UpstreamPool(loop)
        return self.pool

    def default_headers(self, pairs: list[tuple[bytes, bytes]]) -> bytes:
        """uvicorn's default headers (``date``, and ``server`` when on) as bytes; the list is replaced each second."""
        if pairs is not self._defaults_src:
            self._defaults = b"".join(name + b": " + value + _CRLF for name, value in pairs)
            self._defaults_src = pairs
        return self._defaults

    def admits(self, path: bytes, headers: list[tuple[bytes, bytes]], post: bool, tls: bool) -> bytes | None:
        """The request's Content-Type (b"" for a GET) when the fast path may take it; None: the app answers it."""
        door = self.door
        if tls:
            if self.tls_host is None:
                return None
            headers = [(b"host", self.tls_host), *((k, v) for k, v in headers if k != b"host")]
        if door is not None and door.refusal(_PATHS[path], b"", headers) is not None:
            return None
        length = ctype = None
        for name, value in headers:
            if name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"content-type":
                ctype = value
            elif name in _NOT_FAST:
                return None
        if not post:
            return b""
        if length is None or not length.isdigit() or (door is not None and int(length) > door.max_body_bytes):
            return None
        return ctype or b"application/json"

    # -- GET routes

    def models_body(self) -> bytes | None:
        """``GET /v1/models``'s JSON, made again only when the directory changed (or the second did)."""
        upstreams = getattr(self.state, "upstreams", None)
        if upstreams is None:
            return None
        now = int(time.time())
        key = (upstreams, getattr(upstreams, "version", None), now)  # the directory itself: another one is another key
        if key[1] is None and hasattr(upstreams, "listed_models"):
            return None  # a directory that cannot say when it changed: the route lists it every time
        if key != self._models_key:
            listing = model_list(upstreams, now)
            self._models = json.dumps(listing.model_dump(mode="json"), ensure_ascii=False,
                                      separators=(",", ":")).encode()
            self._models_key = key
        return self._models

    def stats_body(self) -> bytes | None:
        """``GET /api/stats``'s JSON: the latest snapshot's, made once per sample; None before the first."""
        stats = getattr(self.state, "stats", None)
        snapshot = stats.latest() if stats is not None else None
        if snapshot is None:
            return None  # the route answers 503 stats_not_ready
        return snapshot_json_cache(self.app).of(snapshot)

    # -- POST routes

    def forward(self, conn: DataPlaneProtocol, endpoint: str, body: bytes, ctype: bytes) -> bool:
        """Start forwarding ``body``; False when the fast path does not take it (the app answers it)."""
        if not body or body[0] != 0x7B:  # "{": anything else is the app's to answer (a 400, or JSON it reads)
            return False
        try:
            payload = json.loads(body.decode())  # UTF-8, as clients send it; other encodings: the app's
        except ValueError:
            return False
        model = payload.get("model")
        if not isinstance(model, str) or not model or proxy.BODY_OPTIONS_KEY in payload:
            return False
        # Starlette's State keeps its attributes in ``_state``: a dict read instead of a __getattr__ call each.
        state = self.state._state
        upstreams = state.get("upstreams")
        request_log = state.get("request_log")
        if upstreams is None or request_log is None:
            return False
        upstream = upstreams.lookup(model)
        if upstream is None or not upstream.ready or upstream.node != "local" or upstream.headers \
                or upstream.client is not None:
            return False
        target = _target(upstream.base_url, endpoint)
        if target is None:
            return False
        lifecycle = getattr(upstreams, "lifecycle", None)
        ex = proxy._Exchange(endpoint, model, upstream.deployment_id, payload.get("stream") is True, time.time(),
                             time.perf_counter())
        request_log.started()
        if lifecycle is not None:
            lifecycle.begin(upstream.deployment_id)
        http = state.get("http")
        if http is not self._timeouts_of:
            timeout = getattr(http, "timeout", None)
            self._timeouts = (getattr(timeout, "connect", None) or 5.0, getattr(timeout, "read", None) or 600.0)
            self._timeouts_of = http
        exchange = _Forward(self, conn, ex, upstream, request_log, lifecycle, target, body, ctype)
        conn.begin(exchange)
        exchange.start()
        return True

    # -- read timeouts: one sweep for every request in flight, not a timer each

    def watch(self, forward: _Forward, loop: asyncio.AbstractEventLoop) -> None:
        self._watched.add(forward)
        if self._sweeper is None:
            self._sweeper = loop.call_later(min(1.0, self._timeouts[1] / 4), self._sweep, loop)

    def unwatch(self, forward: _Forward) -> None:
        self._watched.discard(forward)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Answer 504 for each request whose model server has been silent for the read timeout."""
        self._sweeper = None
        now = loop.time()
        for forward in [f for f in self._watched if now - f.last >= self._timeouts[1]]:
            forward.silent()
        if self._watched:
            self._sweeper = loop.call_later(min(1.0, self._timeouts[1] / 4), self._sweep, loop)


@functools.lru_cache(maxsize=1024)
def _target(base_url: str, endpoint: str) -> tuple[tuple[str, int], bytes] | None:
    """The model server's address and the start of every request head to ``endpoint``; None: not plain HTTP."""
    parts = urlsplit(f"{base_url}/{endpoint}")
    if parts.scheme != "http" or not parts.hostname:
        return None
    port = parts.port or 80
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    head = (f"POST {parts.path} HTTP/1.1\r\nhost: {host}:{port}\r\naccept-encoding: identity\r\n"
            "user-agent: modeldeck\r\n").encode("latin-1")
    return (parts.hostname, port), head


class _Forward:
    """One request forwarded by the data plane: the upstream connection's sink, and the client's answer."""

    __slots__ = ("plane", "conn", "ex", "upstream", "request_log", "lifecycle", "key", "head", "body",
                 "connect_s", "read_s", "upstream_conn", "status", "ctype", "parts", "tally", "streaming",
                 "retried", "last", "connecting", "done", "out")

    def __init__(self, plane: DataPlane, conn: DataPlaneProtocol, ex: Any, upstream: Any, request_log: Any,
                 lifecycle: Any, target: tuple[tuple[str, int], bytes], body: bytes, ctype: bytes):
        self.plane, self.conn, self.ex, self.upstream = plane, conn, ex, upstream
        self.request_log, self.lifecycle = request_log, lifecycle
        self.key, head = target
        self.head = head + b"content-type: " + ctype + b"\r\ncontent-length: %d\r\n\r\n" % len(body)
        self.body = body
        self.connect_s, self.read_s = plane._timeouts
        self.upstream_conn: UpstreamConnection | None = None
        self.status = 0
        self.ctype = b"application/json"
        self.parts: list[bytes] = []
        self.tally: proxy.StreamTally | None = None
        self.streaming = False  # the client has the stream's head: errors now go in the stream
        self.retried = False
        self.last = 0.0
        self.connecting: asyncio.Task | None = None
        self.done = False
        self.out: list[bytes] = []  # a stream's bytes from the current read, written by ``flush``

    # -- sending

    def start(self) -> None:
        loop = self.conn.loop
        self.last = loop.time()
        self.plane.watch(self, loop)
        upstream_conn = self.plane.upstream_pool(loop).take(self.key)
        if upstream_conn is None:
            self.connecting = loop.create_task(self._connect())
        else:
            self._send(upstream_conn)

    def _send(self, upstream_conn: UpstreamConnection) -> None:
        self.upstream_conn = upstream_conn
        upstream_conn.send(self.head, self.body, self)
        if self.conn.writing_paused:
            upstream_conn.transport.pause_reading()

    async def _connect(self) -> None:
        try:
            upstream_conn = await self.plane.upstream_pool(self.conn.loop).connect(self.key, self.connect_s)
        except TimeoutError:
            self._reject(proxy.connection_rejection("timeout", "ConnectTimeout", self.upstream))
            return
        except OSError as exc:
            self._reject(proxy.connection_rejection("connect", str(exc) or type(exc).__name__, self.upstream))
            return
        finally:
            self.connecting = None
        if self.done:  # the client left while it connected
            upstream_conn.detach()
            return
        self._send(upstream_conn)

    # -- Sink: the model server's answer

    def on_head(self, status: int, headers: dict[bytes, bytes]) -> None:
        self.status = status
        self.ctype = headers.get(b"content-type", b"application/json")
        if self.ex.stream and status == 200:
            self.streaming = True
            self.tally = proxy.StreamTally(self.ex)
            self.out.append(self.conn.head(200, _STREAM_HEAD))  # leaves with the first event, in one write

    def on_body(self, data: bytes) -> None:
        if self.streaming:
            self.tally.feed(data)
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.parts.append(data)

    def flush(self) -> None:
        self.last = self.conn.loop.time()
        out = self.out
        if out:
            self.conn.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def on_done(self) -> None:
        if self.done:
            return
        self.upstream_conn = None
        if self.streaming:
            self.out.append(_LAST_CHUNK)
            self.flush()
            self.tally.finish(self.request_log, 200, None)
            self._end()
            return
        content = b"".join(self.parts)
        try:
            proxy.checked_body(self.status, content, self.upstream)
        except proxy._Rejected as rejected:
            self._reject(rejected)
            return
        proxy.record_body(self.request_log, self.ex, self.status, content)
        self.conn.write_whole(self.status, self.ctype, content)
        self._end()

    def on_lost(self, exc: BaseException | None, answered: bool) -> None:
        if self.done:
            return
        upstream_conn, self.upstream_conn = self.upstream_conn, None
        if not answered and upstream_conn is not None and upstream_conn.reused and not self.retried:
            # A kept-alive connection the model server had closed while idle: once more on a new one.
            self.retried = True
            self.parts = []
            self.connecting = self.conn.loop.create_task(self._connect())
            return
        self._break("closed", f"{exc or 'the connection closed'}")

    # -- endings

    def silent(self) -> None:
        """The model server said nothing for the read timeout (the plane's sweep found it): 504."""
        if self.done:
            return
        self._let_go()
        self._break("timeout", "ReadTimeout")

    def _let_go(self) -> None:
        """Close the model server's connection (it stops generating) or stop connecting to it."""
        if self.upstream_conn is not None:
            self.upstream_conn.detach()
            self.upstream_conn = None
        if self.connecting is not None:
            self.connecting.cancel()

    def _break(self, kind: str, detail: str) -> None:
        """The model server's connection failed: an error answer, or an error event ending the stream."""
        if self.streaming:
            timed_out = kind == "timeout"
            status = 504 if timed_out else 502
            error = proxy.stream_break_message(self.ex, timed_out, detail)
            event = proxy._error_event(error, status)
            self.out.append(b"%x\r\n%b\r\n%b" % (len(event), event, _LAST_CHUNK))
            self.flush()
            self.tally.finish(self.request_log, status, error)
            self._end()
            return
        self._reject(proxy.connection_rejection(kind, detail, self.upstream, self.read_s if kind == "timeout"
                                                else None))

    def _reject(self, rejected: Any) -> None:
        if self.done:
            return
        proxy._record(self.request_log, self.ex, rejected.status, error=rejected.message)
        body = error_body(Flavour.OPENAI, rejected.status, rejected.code, rejected.message, type=rejected.type,
                          param=rejected.param)
        extra = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in (rejected.headers or {}).items())
        self.conn.write_whole(rejected.status, b"application/json", body, extra)
        self._end()

    def client_left(self) -> None:
        """The client closed its connection: stop the model server now, record what was sent (499)."""
        if self.done:
            return
        self._let_go()
        self.out.clear()
        if self.tally is not None:
            self.tally.abandoned(self.request_log)
        else:
            proxy._record(self.request_log, self.ex, proxy.CLIENT_CLOSED,
                          error="the client disconnected before the reply")
        self._end(notify=False)

    def _end(self, notify: bool = True) -> None:
        self.done = True
        self.plane.unwatch(self)
        if self.lifecycle is not None:
            self.lifecycle.end(self.ex.deployment_id)
        if notify:
            self.conn.end(self.status or 0)


class DataPlaneProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the data plane's routes taken before the ASGI app sees them."""

    plane: DataPlane  # set on the subclass ``protocol_class`` makes

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._route: bytes | None = None  # the fast route of the request being read
        self._ctype = b""
        self._body: list[bytes] = []
        self._answering: _Answering | None = None
        self._method = self._url = b""
        self._forward: _Forward | None = None
        self.writing_paused = False

    # -- httptools callbacks (uvicorn's, with the fast routes first)

    def on_message_begin(self) -> None:
        # uvicorn makes the ASGI scope here; only a request the app answers needs one (``_app_scope``).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.scope = None  # type: ignore[assignment]

    def _app_scope(self) -> None:
        if self.scope is None:
            url, headers = self.url, self.headers
            super().on_message_begin()
            self.url, self.headers = url, headers
            self.scope["headers"] = headers

    def on_headers_complete(self) -> None:
        route = None
        if self._answering is None and (self.cycle is None or self.cycle.response_complete) \
                and self.parser.get_http_version() == "1.1":  # HTTP/1.0: uvicorn's, as it always was
            method = self.parser.get_method()
            url = self.url
            post = method == b"POST"
            if (post and url in FORWARDED) or (method == b"GET" and url in (MODELS_PATH, STATS_PATH)):
                ctype = self.plane.admits(url, self.headers, post, self.scheme == "https")
                if ctype is not None:
                    route, self._ctype = url, ctype
                else:
                    self.plane.counts["app"] += 1
        self._route = route
        if route is None:
            self._app_scope()
            super().on_headers_complete()
            return
        self._body = []

    def on_body(self, body: bytes) -> None:
        if self._route is None:
            super().on_body(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        route, self._route = self._route, None
        if route is None:
            super().on_message_complete()
            return
        body = b"".join(self._body) if self._body else b""
        self._body = []
        try:
            taken = self._serve(route, body)
        except Exception:  # a bug here must not lose the request: the app answers it, if nothing was sent yet
            log.exception("the data plane failed on %s", route.decode())
            taken = self._answering is not None
            if taken:
                self.transport.close()
        if not taken:
            self.plane.counts["app"] += 1
            # Hand the request to the app as uvicorn would have: headers, the body read so far, its end.
            self._app_scope()
            super().on_headers_complete()
            if body:
                super().on_body(body)
            super().on_message_complete()

    def _serve(self, route: bytes, body: bytes) -> bool:
        plane = self.plane
        endpoint = FORWARDED.get(route)
        if endpoint is not None:
            taken = plane.forward(self, endpoint, body, self._ctype)
            plane.counts["forward"] += taken
            return taken
        models = route == MODELS_PATH
        content = plane.models_body() if models else plane.stats_body()
        if content is None:
            return False
        plane.counts["models" if models else "stats"] += 1
        self.begin(None)
        self.write_whole(200, b"application/json", content)
        self.end(200)
        return True

    # -- answering

    def begin(self, forward: _Forward | None) -> None:
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        self._answering = self.cycle = _Answering(keep_alive)  # type: ignore[assignment]
        self._forward = forward
        self._method = self.parser.get_method()
        self._url = self.url

    def head(self, status: int, headers: bytes) -> bytes:
        close = b"" if self._answering.keep_alive else b"connection: close\r\n"
        return STATUS_LINE[status] + headers + close + self.plane.default_headers(self.server_state.default_headers) \
            + _CRLF

    def write_whole(self, status: int, ctype: bytes, content: bytes, extra: bytes = b"") -> None:
        # One write, one system call: a second one for the body costs as much as the rest of the relay.
        self.transport.write(self.head(status, b"content-type: " + ctype + b"\r\ncontent-length: %d\r\n"
                                       % len(content) + extra) + content)

    def end(self, status: int) -> None:
        """The answer is sent: the connection takes its next request (or closes)."""
        answering, self._answering, self._forward = self._answering, None, None
        if answering is None:
            return
        answering.response_complete = True
        if self.access_log:
            self.access_logger.info('%s - "%s %s HTTP/%s" %d', "%s:%d" % self.client if self.client else "",
                                    self._method.decode(),
                                    self._url.decode("latin-1"), "1.1", status)
        if not answering.keep_alive:
            self.transport.close()
        self.on_response_complete()

    # -- the connection

    def connection_lost(self, exc: Exception | None) -> None:
        forward, self._forward, self._answering = self._forward, None, None
        if forward is not None:
            forward.client_left()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The client reads slower than the model writes: stop reading the model server too.
        super().pause_writing()
        self.writing_paused = True
        upstream = self._forward.upstream_conn if self._forward is not None else None
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.writing_paused = False
        upstream = self._forward.upstream_conn if self._forward is not None else None
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()

    def shutdown(self) -> None:
        if self._answering is not None:
            self._answering.keep_alive = False  # closed after this answer
            return
        super().shutdown()


def protocol_class(app: Any, tls_host: bytes | None = None) -> type | str:
    """The HTTP protocol to give uvicorn for ``app``: the data plane's when ``app`` is ModelDeck's (its
    state has ``front_door``: the app's checks, or None for a test app that has none), uvicorn's own
    ("auto") for any other app."""
    state = getattr(app, "state", None)
    if state is None or not hasattr(state, "front_door"):
        return "auto"
    state.data_plane = plane = DataPlane(app, tls_host)
    return type("ModelDeckHttpProtocol", (DataPlaneProtocol,), {"plane": plane})

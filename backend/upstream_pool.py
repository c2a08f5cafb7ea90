"""The proxy's connections to model servers: an O(1) keep-alive pool on plain asyncio, under httpx.

Why not httpcore's own pool: it re-examines every connection for every queued request
each time a request starts or a response ends (``_assign_requests_to_connections``), and
asks each idle connection whether its socket is readable through anyio's attribute
lookup; with 32 requests in flight that bookkeeping was 60% of the proxy's CPU and
throughput fell from 840 to 410 requests/s (see docs/benchmarks.md). Here idle
connections wait in a stack per origin: a request takes the most recent one (checking
only that one), and a finished response puts it back. HTTP/1.1 itself is still
httpcore's (``AsyncHTTP11Connection``), and httpx still maps its errors.
"""

from __future__ import annotations

import asyncio
import select
import typing
from collections import deque

import httpcore
import httpx

WRITE_HIGH_WATER = 64 * 1024  # wait for the socket to drain only past this much unsent data
#: What a reused connection raises when the server had closed it before answering.
_CLOSED_BEFORE_ANSWER = (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError)


class AsyncioStream(httpcore.AsyncNetworkStream):
    """A TCP connection on asyncio streams: no anyio cancel scopes or checkpoints per read and write."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._transport = writer.transport
        sock = self._transport.get_extra_info("socket")
        self._poll = None
        # select.poll is POSIX only; without it an idle connection is not checked before reuse
        # (a dropped one then fails that request, as with httpcore's pool on such platforms).
        if sock is not None and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            if timeout is None:
                return await self._reader.read(max_bytes)
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "timed out reading from the model server") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection to the model server is closed")
        try:
            self._writer.write(buffer)
            if self._transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out writing to the model server") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS is not supported on this pool (https goes through httpcore's pool)")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            # An idle HTTP/1.1 connection that is readable was closed (or spoken to) by the server.
            if self._reader.at_eof() or self._transport.is_closing():
                return True
            return bool(self._poll.poll(0)) if self._poll is not None else False
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        return None


async def _connect(host: str, port: int, timeout: float | None) -> AsyncioStream:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
    return AsyncioStream(reader, writer)


class KeepAlivePool:
    """Plain-HTTP keep-alive connections by origin, in httpcore's request interface; https is handed on.

    ``max_connections`` bounds requests in flight (a request waits up to the pool timeout
    for a slot); at most ``max_keepalive_connections`` idle connections are kept per origin.
    """

    def __init__(self, max_connections: int, max_keepalive_connections: int, keepalive_expiry: float,
                 fallback: httpcore.AsyncConnectionPool):
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[bytes, bytes, int], deque[httpcore.AsyncHTTP11Connection]] = {}
        self._fallback = fallback

    async def __aenter__(self) -> KeepAlivePool:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for stack in idle.values():
            for conn in stack:
                await conn.aclose()
        await self._fallback.aclose()

    async def _take_idle(self, key) -> httpcore.AsyncHTTP11Connection | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.is_idle() and not conn.has_expired():
                return conn
            await conn.aclose()
        return None

    async def _put_back(self, key, conn: httpcore.AsyncHTTP11Connection) -> None:
        if not conn.is_idle():
            await conn.aclose()
            return
        stack = self._idle.setdefault(key, deque())
        # The oldest idle connection is the likeliest to have expired or been closed by the server.
        if stack and (len(stack) >= self._max_idle or stack[0].has_expired()):
            await stack.popleft().aclose()
        stack.append(conn)

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        if url.scheme != b"http":
            return await self._fallback.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError as exc:
                raise httpcore.PoolTimeout("no free connection to the model server in time") from exc
        else:
            await self._slots.acquire()
        key = (url.scheme, url.host, url.port or 80)
        conn = None
        try:
            conn = await self._take_idle(key)
            if conn is None:
                conn = await self._connect(url, timeouts)
                response = await conn.handle_async_request(request)
            else:
                try:
                    response = await conn.handle_async_request(request)
                except _CLOSED_BEFORE_ANSWER:
                    # A kept-alive connection the server closed just as it was reused (its FIN
                    # was not there yet when the pool checked it): llama.cpp's server closes a
                    # kept-alive connection after one or two streamed answers while promising
                    # more. No answer byte came, so the request is sent once more on a new
                    # connection, as browsers and Go's net/http do; a body that cannot be
                    # replayed (a streamed upload) fails as before.
                    if not isinstance(request.stream, httpx.ByteStream):
                        raise
                    await conn.aclose()
                    conn = None
                    conn = await self._connect(url, timeouts)
                    response = await conn.handle_async_request(request)
        except BaseException:
            if conn is not None:
                await conn.aclose()
            self._slots.release()
            raise
        response.stream = _PooledStream(response.stream, self, key, conn)
        return response

    async def _connect(self, url: httpcore.URL, timeouts: dict) -> httpcore.AsyncHTTP11Connection:
        stream = await _connect(url.host.decode("ascii"), url.port or 80, timeouts.get("connect"))
        return httpcore.AsyncHTTP11Connection(origin=url.origin, stream=stream, keepalive_expiry=self._expiry)

    async def _finished(self, key, conn: httpcore.AsyncHTTP11Connection) -> None:
        self._slots.release()
        await self._put_back(key, conn)


class _PooledStream:
    """The response body; closing it returns the connection to the pool (once)."""

    def __init__(self, inner, pool: KeepAlivePool, key, conn: httpcore.AsyncHTTP11Connection):
        self._inner, self._pool, self._key, self._conn = inner, pool, key, conn
        self._done = False

    async def __aiter__(self) -> typing.AsyncIterator[bytes]:
        async for part in self._inner:
            yield part

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._done:
                self._done = True
                await self._pool._finished(self._key, self._conn)


class UpstreamTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (request mapping, error mapping) over ``KeepAlivePool``."""

    def __init__(self, limits: httpx.Limits):
        super().__init__(limits=limits, trust_env=False)
        # httpx keeps its pool in ``_pool``; replaced, with httpcore's kept for https.
        self._pool = KeepAlivePool(limits.max_connections or 512, limits.max_keepalive_connections or 128,
                                   limits.keepalive_expiry or 30.0, fallback=self._pool)

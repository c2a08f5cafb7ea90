"""The proxy's keep-alive pool against a real TCP server: reuse, reconnects, limits, timeouts, errors."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from backend.upstream_pool import UpstreamTransport
from tests.support.live_server import free_port
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"  # the pool is written for asyncio (the backend runs on uvloop/asyncio)


class CountingServer:
    """A minimal HTTP/1.1 server that counts TCP connections and requests in flight."""

    def __init__(self, delay: float = 0.0, close_after_response: bool = False, drop_second_request: bool = False):
        self.delay, self.close_after = delay, close_after_response
        self.drop_second = drop_second_request
        self.dropped = 0
        self.connections = 0
        self.closed = 0  # connections this server has closed, its FIN sent
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = free_port()

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader, writer):
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                served += 1
                if self.drop_second and served == 2:
                    self.dropped += 1
                    break  # reads the next request on a kept-alive connection, then closes unanswered
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                if length:
                    await reader.readexactly(length)
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                await asyncio.sleep(self.delay)
                self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                             b'{"ok":true}')
                await writer.drain()
                if self.close_after:
                    break  # closes without saying so, as a server whose keep-alive ran out does
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed += 1


def client(max_connections: int = 16, pool_timeout: float = 5.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=8)
    return httpx.AsyncClient(transport=UpstreamTransport(limits), timeout=httpx.Timeout(5.0, pool=pool_timeout))


async def test_sequential_requests_reuse_one_connection():
    async with CountingServer() as server, client() as http:
        for _ in range(20):
            r = await http.post(f"http://127.0.0.1:{server.port}/v1/x", json={"a": 1})
            assert r.json() == {"ok": True}
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_replaced():
    async with CountingServer(close_after_response=True) as server, client() as http:
        for i in range(5):
            # The server's close has reached this end before the next request, as after an idle spell.
            await wait_until_async(lambda: server.closed == i, 2, what=f"the server to close connection {i}")
            r = await http.get(f"http://127.0.0.1:{server.port}/")
            assert r.status_code == 200
    assert server.connections == 5


async def test_requests_in_flight_are_bounded_and_all_complete():
    async with CountingServer(delay=0.1) as server, client(max_connections=2) as http:
        results = await asyncio.gather(*(http.get(f"http://127.0.0.1:{server.port}/") for _ in range(6)))
    assert [r.status_code for r in results] == [200] * 6
    assert server.max_in_flight == 2


async def test_waiting_for_a_slot_times_out_as_a_pool_timeout():
    async with CountingServer(delay=1.0) as server, client(max_connections=1, pool_timeout=0.1) as http:
        slow = asyncio.create_task(http.get(f"http://127.0.0.1:{server.port}/"))
        await wait_until_async(lambda: server.in_flight == 1, 2, what="the slow request to hold the only connection")
        with pytest.raises(httpx.PoolTimeout):
            await http.get(f"http://127.0.0.1:{server.port}/")
        assert (await slow).status_code == 200


async def test_streamed_bodies_return_their_connection_when_closed():
    async with CountingServer() as server, client() as http:
        for _ in range(3):
            async with http.stream("GET", f"http://127.0.0.1:{server.port}/") as r:
                assert await r.aread() == b'{"ok":true}'
    assert server.connections == 1


async def test_nothing_listening_is_a_connect_error():
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_a_reused_connection_closed_unanswered_is_retried_once_on_a_new_one():
    # What llama.cpp's server does after a streamed answer or two: it keeps the connection
    # open (and promises keep-alive), then closes it when the next request arrives.
    async with CountingServer(drop_second_request=True) as server, client() as http:
        for i in range(4):
            r = await http.post(f"http://127.0.0.1:{server.port}/v1/x", json={"i": i})
            assert r.status_code == 200 and r.json() == {"ok": True}
        assert server.dropped >= 1
        assert server.connections == server.dropped + 1


async def test_a_streamed_upload_is_not_replayed():
    async def body():
        yield b'{"i": 1}'

    async with CountingServer(drop_second_request=True) as server, client() as http:
        await http.post(f"http://127.0.0.1:{server.port}/v1/x", json={"i": 0})
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(f"http://127.0.0.1:{server.port}/v1/x", content=body())


"""Load through one backend process: 500 concurrent requests, 256 concurrent streams, 10,000 requests' memory."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.reliability.load_processes import SERVED_NAME
from tests.reliability.support import figure
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
TOKEN = "load-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spawn(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.load_processes", *args, "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=None)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def load_backend(tmp_path_factory):
    """(base URL, backend pid) of a backend process whose one model is the fast fake upstream, another process."""
    upstream, up_url = _spawn("upstream")
    backend = None
    try:
        wait_until(lambda: httpx.get(f"{up_url}/v1/models").status_code == 200, 20, what="fake upstream up")
        backend, url = _spawn("backend", "--upstream", f"{up_url}/v1", "--home",
                              str(tmp_path_factory.mktemp("load") / "home"), "--token", TOKEN)
        wait_until(lambda: httpx.get(f"{url}/api/health").status_code == 200, 30, what="backend up")
        yield url, backend.pid
    finally:
        for p in (backend, upstream):
            if p is not None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def client(connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers=AUTH, timeout=httpx.Timeout(60, pool=60),
                             limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))


async def one_request(c: httpx.AsyncClient, url: str, i: int) -> int:
    r = await c.post(f"{url}/v1/chat/completions", json={
        "model": SERVED_NAME, "max_tokens": 4, "messages": [{"role": "user", "content": f"hello {i}"}]})
    if r.status_code == 200:
        assert r.json()["choices"][0]["message"]["content"] == "[0][1][2][3]"
    return r.status_code


async def one_stream(c: httpx.AsyncClient, url: str, events: int) -> list[str]:
    got = []
    async with c.stream("POST", f"{url}/v1/chat/completions", json={
            "model": SERVED_NAME, "stream": True, "max_tokens": events, "x_delay": 0.005,
            "messages": [{"role": "user", "content": "stream"}]}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                got.append(line[6:])
    return got


def test_500_concurrent_requests(load_backend):
    url, _ = load_backend

    async def run():
        async with client(600) as c:
            await one_request(c, url, -1)
            t0 = time.monotonic()
            codes = await asyncio.gather(*(one_request(c, url, i) for i in range(500)), return_exceptions=True)
            return codes, time.monotonic() - t0

    codes, took = asyncio.run(run())
    counts = collections.Counter(c if isinstance(c, int) else type(c).__name__ for c in codes)
    figure("500 concurrent non-streamed: wall time (s)", f"{took:.2f}")
    figure("500 concurrent non-streamed: outcomes", dict(counts))
    assert counts == {200: 500}, counts


def test_256_concurrent_streams_complete_in_order(load_backend):
    url, _ = load_backend
    events = 32

    async def run():
        async with client(300) as c:
            t0 = time.monotonic()
            got = await asyncio.gather(*(one_stream(c, url, events) for _ in range(256)), return_exceptions=True)
            return got, time.monotonic() - t0

    streams, took = asyncio.run(run())
    figure("256 concurrent streams x 32 events: wall time (s)", f"{took:.2f}")
    failures = [s for s in streams if isinstance(s, BaseException)]
    assert not failures, failures[:3]
    import json
    for s in streams:
        assert s[-1] == "[DONE]", s[-3:]
        texts = [json.loads(d)["choices"][0]["delta"]["content"] for d in s[:-1]]
        assert texts == [f"[{i}]" for i in range(events)], texts


def test_10000_requests_memory_growth_within_10_percent(load_backend):
    url, pid = load_backend
    proc = psutil.Process(pid)

    async def run(n: int, concurrency: int = 64) -> collections.Counter:
        sem = asyncio.Semaphore(concurrency)
        counts: collections.Counter = collections.Counter()
        async with client(concurrency) as c:
            async def go(i: int):
                async with sem:
                    try:
                        if i % 10 == 0:
                            s = await one_stream(c, url, 8)
                            counts[200 if s[-1] == "[DONE]" else "incomplete"] += 1
                        else:
                            counts[await one_request(c, url, i)] += 1
                    except httpx.HTTPError as exc:
                        counts[type(exc).__name__] += 1
            await asyncio.gather(*(go(i) for i in range(n)))
        return counts

    asyncio.run(run(1000))  # warm-up: pools, caches, the request log's ring buffer fill
    rss0 = proc.memory_info().rss
    t0 = time.monotonic()
    counts = asyncio.run(run(10_000))
    took = time.monotonic() - t0
    rss1 = proc.memory_info().rss
    growth = (rss1 - rss0) / rss0
    figure("10,000 requests: wall time (s)", f"{took:.1f} ({10_000 / took:.0f} req/s)")
    figure("10,000 requests: backend RSS before/after (MiB)", f"{rss0 / 2**20:.1f} / {rss1 / 2**20:.1f} "
                                                            f"({growth:+.1%})")
    assert counts == {200: 10_000}, counts
    assert growth <= 0.10

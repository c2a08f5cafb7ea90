"""The measurements, each run the same way against every target: latency, throughput, streams, requests/s, RSS."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import Connection, StreamResult, chat_body
from bench.targets import Target

CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Profile:
    """How much of each measurement to do; ``full`` is the published run, ``quick`` the test's."""

    latency_requests: int
    latency_warmup: int
    throughput_s: float
    throughput_requests: int  # for the Python fallback when wrk is absent
    ttft_streams_1: int
    ttft_rounds_64: int
    stream_events: int
    interchunk_events: int
    interchunk_delay_ms: float
    many_streams: int
    many_events: int
    many_delay_ms: float
    rps_s: float
    rss_requests: int
    sampler_s: float
    sampler_baseline_s: float


FULL = Profile(latency_requests=3000, latency_warmup=300, throughput_s=10.0, throughput_requests=20000,
               ttft_streams_1=500, ttft_rounds_64=10, stream_events=16, interchunk_events=500,
               interchunk_delay_ms=2.0, many_streams=256, many_events=100, many_delay_ms=50.0,
               rps_s=10.0, rss_requests=10000, sampler_s=20.0, sampler_baseline_s=10.0)
QUICK = Profile(latency_requests=40, latency_warmup=10, throughput_s=1.0, throughput_requests=200,
                ttft_streams_1=10, ttft_rounds_64=1, stream_events=8, interchunk_events=40,
                interchunk_delay_ms=2.0, many_streams=256, many_events=4, many_delay_ms=20.0,
                rps_s=1.0, rss_requests=300, sampler_s=2.0, sampler_baseline_s=1.0)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), nearest-rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _ms(ns_values: list[int]) -> list[float]:
    return [v / 1e6 for v in ns_values]


# -- non-streamed ------------------------------------------------------------------------


async def latency_one_client(target: Target, p: Profile) -> dict:
    """Sequential non-streamed chat requests on one keep-alive connection: latency per request."""
    conn = Connection(target.base, target.headers)
    body = chat_body(16, stream=False)
    times: list[int] = []
    errors = 0
    try:
        for i in range(p.latency_warmup + p.latency_requests):
            t0 = time.monotonic_ns()
            status, _ = await conn.request("POST", CHAT, body)
            elapsed = time.monotonic_ns() - t0
            if status != 200:
                errors += 1
            elif i >= p.latency_warmup:
                times.append(elapsed)
    finally:
        await conn.close()
    ms = _ms(times)
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms), "errors": errors}


async def _python_load(target: Target, method: str, path: str, body: bytes | None, concurrency: int,
                       seconds: float, max_requests: int | None = None) -> dict:
    done = 0
    errors = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done, errors
        conn = Connection(target.base, target.headers)
        try:
            while time.monotonic() < deadline and (max_requests is None or done + errors < max_requests):
                status, _ = await conn.request(method, path, body)
                if status == 200:
                    done += 1
                else:
                    errors += 1
        finally:
            await conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    return {"rps": done / elapsed if elapsed else None, "requests": done, "errors": errors,
            "tool": "python client"}


WRK_SCRIPT = """\
wrk.method = "{method}"
{body}
{headers}
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


def run_wrk(target: Target, method: str, path: str, body: bytes | None, connections: int,
            seconds: float) -> dict:
    """``wrk`` with one thread (the machine has few cores: leave them to the servers)."""
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-wrk-") as tmp:
        script = Path(tmp) / "request.lua"
        headers = dict(target.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        script.write_text(WRK_SCRIPT.format(
            method=method,
            body=f"wrk.body = [[{body.decode()}]]" if body is not None else "",
            headers="\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())))
        out = subprocess.run([wrk_binary(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                              "--latency", "-s", str(script), f"{target.base}{path}"],
                             capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors:.*", text)
    if rps is None:
        raise RuntimeError(f"wrk gave no result: {text}{out.stderr}")
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)) if total else None,
            "errors": int(bad.group(1)) if bad else 0, "socket_errors": sock.group(0) if sock else None,
            "tool": "wrk"}


async def throughput(target: Target, p: Profile, concurrency: int = 32, use_wrk: bool = True) -> dict:
    """Non-streamed chat requests from ``concurrency`` keep-alive connections: requests per second."""
    body = chat_body(16, stream=False)
    if use_wrk and wrk_binary():
        return await asyncio.to_thread(run_wrk, target, "POST", CHAT, body, concurrency, p.throughput_s)
    return await _python_load(target, "POST", CHAT, body, concurrency, p.throughput_s, p.throughput_requests)


async def requests_per_s(target: Target, path: str, p: Profile, use_wrk: bool = True) -> dict:
    """GET ``path`` from 32 keep-alive connections: requests per second."""
    if use_wrk and wrk_binary():
        return await asyncio.to_thread(run_wrk, target, "GET", path, None, 32, p.rps_s)
    return await _python_load(target, "GET", path, None, 32, p.rps_s)


# -- streamed --------------------------------------------------------------------------


def _stream_summary(results: list[StreamResult | BaseException], expected: int) -> dict:
    ok = [r for r in results if isinstance(r, StreamResult)]
    failed = [r for r in results if not isinstance(r, StreamResult)]
    ttft = _ms([r.ttft_ns for r in ok if r.ttft_ns is not None])
    transit = _ms([t for r in ok for t in r.transit_ns])
    return {
        "streams": len(results),
        "completed": sum(1 for r in ok if r.done and r.events == expected and not r.lost and not r.merged),
        "failed": len(failed),
        "first_failure": repr(failed[0]) if failed else None,
        "events": sum(r.events for r in ok),
        "merged": sum(r.merged for r in ok),
        "lost": sum(r.lost for r in ok) + sum(expected for _ in failed),
        "ttft_p50_ms": percentile(ttft, 50), "ttft_p99_ms": percentile(ttft, 99),
        "transit_p50_ms": percentile(transit, 50), "transit_p95_ms": percentile(transit, 95),
        "transit_p99_ms": percentile(transit, 99),
    }


async def _streams(target: Target, concurrency: int, rounds: int, events: int, delay_ms: float,
                   timeout: float) -> dict:
    body = chat_body(events, stream=True, delay_ms=delay_ms)
    conns = [Connection(target.base, target.headers) for _ in range(concurrency)]
    results: list[StreamResult | BaseException] = []
    try:
        await asyncio.gather(*(c.open() for c in conns))
        for _ in range(rounds):
            batch = await asyncio.gather(
                *(asyncio.wait_for(c.stream(CHAT, body, events), timeout) for c in conns),
                return_exceptions=True)
            results += batch
            for i, r in enumerate(batch):
                if not isinstance(r, StreamResult):  # the connection is in an unknown state: reopen
                    await conns[i].close()
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return _stream_summary(results, events)


async def ttft(target: Target, p: Profile, concurrency: int) -> dict:
    """Time to first event of streams with ``stream_events`` unpaced events, ``concurrency`` at once."""
    rounds = p.ttft_streams_1 if concurrency == 1 else p.ttft_rounds_64
    # One round to warm connections and code paths; not counted.
    await _streams(target, concurrency, 1, p.stream_events, 0, 60)
    return await _streams(target, concurrency, rounds, p.stream_events, 0, 60)


async def interchunk(target: Target, p: Profile) -> dict:
    """One stream paced at ``interchunk_delay_ms``: how late each event reaches the client."""
    return await _streams(target, 1, 1, p.interchunk_events, p.interchunk_delay_ms, 120)


async def many_streams(target: Target, p: Profile) -> dict:
    """``many_streams`` paced streams at once through one process: all complete? frame delay p95."""
    timeout = p.many_events * p.many_delay_ms / 1000 * 4 + 30
    return await _streams(target, p.many_streams, 1, p.many_events, p.many_delay_ms, timeout)


async def proxied_requests(target: Target, count: int) -> dict:
    """``count`` requests (nine in ten non-streamed, one in ten streamed) from 16 connections."""
    plain, streamed = chat_body(16, stream=False), chat_body(16, stream=True)
    counter = iter(range(count))
    errors = 0

    async def worker() -> None:
        nonlocal errors
        conn = Connection(target.base, target.headers)
        try:
            for i in counter:
                if i % 10 == 9:
                    r = await conn.stream(CHAT, streamed, 16)
                    errors += r.lost + r.merged
                else:
                    status, _ = await conn.request("POST", CHAT, plain)
                    errors += status != 200
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(16)))
    return {"requests": count, "errors": errors}


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return None

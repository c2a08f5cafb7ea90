"""The measurements, each run the same way against every target: latency, throughput, streams, requests/s, RSS."""

from __future__ import annotations

import asyncio
import bisect
import os
import re
import resource
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
    interchunk_events: int  # per slice; every target gets ``interchunk_rounds`` slices, the targets alternating
    interchunk_delay_ms: float
    interchunk_rounds: int
    latency_rounds: int  # the latency requests and the 1-stream TTFTs come in this many slices, the targets alternating
    many_streams: int
    many_events: int
    many_delay_ms: float
    rps_s: float
    rss_requests: int
    sampler_s: float
    sampler_baseline_s: float


# The 256-stream row is issue 13's load: 256 streams at 80 tok/s each (12.5 ms apart), 20,480 events/s
# through one process; 400 events = 5 s in full mode, long enough for a steady events/s and CPU figure.
FULL = Profile(latency_requests=3000, latency_warmup=300, throughput_s=10.0, throughput_requests=20000,
               ttft_streams_1=500, ttft_rounds_64=10, stream_events=16, interchunk_events=500,
               interchunk_delay_ms=2.0, interchunk_rounds=6, latency_rounds=5, many_streams=256, many_events=400,
               many_delay_ms=12.5, rps_s=10.0, rss_requests=10000, sampler_s=20.0, sampler_baseline_s=10.0)
QUICK = Profile(latency_requests=40, latency_warmup=10, throughput_s=1.0, throughput_requests=200,
                ttft_streams_1=10, ttft_rounds_64=1, stream_events=8, interchunk_events=40,
                interchunk_delay_ms=2.0, interchunk_rounds=1, latency_rounds=2, many_streams=256, many_events=16,
                many_delay_ms=12.5, rps_s=1.0, rss_requests=300, sampler_s=2.0, sampler_baseline_s=1.0)


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


async def _latency_samples(conn: Connection, body: bytes, warmup: int, count: int) -> tuple[list[int], int]:
    times: list[int] = []
    errors = 0
    for i in range(warmup + count):
        t0 = time.monotonic_ns()
        status, _ = await conn.request("POST", CHAT, body)
        elapsed = time.monotonic_ns() - t0
        if status != 200:
            errors += 1
        elif i >= warmup:
            times.append(elapsed)
    return times, errors


def _latency_summary(times: list[int], errors: int, slices: int = 1) -> dict:
    ms = _ms(times)
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms), "errors": errors,
            "slices": slices}


async def latency_one_client(target: Target, p: Profile) -> dict:
    """Sequential non-streamed chat requests on one keep-alive connection: latency per request."""
    conn = Connection(target.base, target.headers)
    try:
        times, errors = await _latency_samples(conn, chat_body(16, stream=False), p.latency_warmup,
                                               p.latency_requests)
    finally:
        await conn.close()
    return _latency_summary(times, errors)


async def latency_alternating(targets: list[Target], p: Profile) -> dict[str, dict]:
    """``latency_one_client`` for every target, in ``latency_rounds`` slices with the targets taking turns.

    The added latency of the issue's goal (≤ 0.3 ms at p50) is ModelDeck's percentile minus
    direct's: measured one after the other, a minute of someone else's load on a shared
    machine lands on one of them only. Taking turns in slices spreads it over all of them.
    Each target keeps one warm connection for all its slices.
    """
    body = chat_body(16, stream=False)
    conns = {t.name: Connection(t.base, t.headers) for t in targets}
    times: dict[str, list[int]] = {t.name: [] for t in targets}
    errors = dict.fromkeys(times, 0)
    failed: dict[str, str] = {}  # a target whose connection broke drops out; the others go on
    per_slice = max(1, p.latency_requests // p.latency_rounds)

    async def slice_of(t: Target, warmup: int, count: int) -> None:
        if t.name in failed:
            return
        try:
            got, bad = await asyncio.wait_for(_latency_samples(conns[t.name], body, warmup, count), 300)
        except Exception as exc:  # noqa: BLE001 - one target's failure must not lose the others' figures
            failed[t.name] = f"{type(exc).__name__}: {exc}"
            return
        times[t.name] += got
        errors[t.name] += bad

    try:
        for t in targets:  # warm-up, not counted
            await slice_of(t, p.latency_warmup, 0)
        for i in range(p.latency_rounds):
            for t in _turns(targets, i):
                await slice_of(t, 0, per_slice)
    finally:
        await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)
    return {name: {"error": failed[name]} if name in failed else
            _latency_summary(times[name], errors[name], p.latency_rounds) for name in times}


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


def _relay_rate(ok: list[StreamResult]) -> tuple[float | None, float | None]:
    """(events/s while every stream was live, that window in s); the whole span when there is no such window.

    The window runs from the last stream's first event to the first stream's last one: the
    rate in it is what the path relayed with the whole batch streaming, free of the ramp
    at either end (streams that started a few ms apart finish a few ms apart).
    """
    live = [r.arrival_ns for r in ok if len(r.arrival_ns) >= 2]
    if not live:
        return None, None
    start, end = max(a[0] for a in live), min(a[-1] for a in live)
    if end - start < 0.5 * (max(a[-1] for a in live) - min(a[0] for a in live)):
        start, end = min(a[0] for a in live), max(a[-1] for a in live)  # no steady middle (quick mode)
        return sum(len(a) for a in live) / ((end - start) / 1e9), (end - start) / 1e9
    count = sum(bisect.bisect_left(a, end) - bisect.bisect_left(a, start) for a in live)
    return count / ((end - start) / 1e9), (end - start) / 1e9


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


def process_tree(pid: int | None) -> list[int]:
    """``pid`` and its descendants (a server that forks workers is all of them)."""
    if pid is None:
        return []
    import psutil
    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` from /proc/<pid>/stat (utime, stime); a process gone counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": state is field 3 of proc(5)
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15: utime, stime in clock ticks
    return total / _CLK_TCK


def _own_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _streams(target: Target, concurrency: int, rounds: int, events: int, delay_ms: float,
                   timeout: float, watch: dict[str, int | None] | None = None) -> dict:
    """``rounds`` batches of ``concurrency`` streams; with ``watch`` (name: pid), the CPU of those process trees
    and of this client over the batches, as % of one core (``cpu_pct``), and the events/s relayed."""
    body = chat_body(events, stream=True, delay_ms=delay_ms)
    conns = [Connection(target.base, target.headers) for _ in range(concurrency)]
    results: list[StreamResult | BaseException] = []
    trees = {name: process_tree(pid) for name, pid in (watch or {}).items()}
    used = dict.fromkeys(trees, 0.0)
    used_client, wall = 0.0, 0.0
    try:
        await asyncio.gather(*(c.open() for c in conns))
        for _ in range(rounds):
            before = {name: cpu_seconds(pids) for name, pids in trees.items()}
            client0, t0 = _own_cpu_seconds(), time.monotonic()
            batch = await asyncio.gather(
                *(asyncio.wait_for(c.stream(CHAT, body, events), timeout) for c in conns),
                return_exceptions=True)
            wall += time.monotonic() - t0
            used_client += _own_cpu_seconds() - client0
            for name, pids in trees.items():
                used[name] += cpu_seconds(pids) - before[name]
            results += batch
            for i, r in enumerate(batch):
                if not isinstance(r, StreamResult):  # the connection is in an unknown state: reopen
                    await conns[i].close()
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    summary = _stream_summary(results, events)
    if watch is not None:
        rate, window = _relay_rate([r for r in results if isinstance(r, StreamResult)])
        summary.update(
            offered_events_per_s=concurrency * 1000 / delay_ms if delay_ms else None,
            events_per_s=rate, rate_window_s=window, wall_s=wall,
            cpu_pct={name: used[name] / wall * 100 if wall else None for name in trees},
            processes={name: len(pids) for name, pids in trees.items()},
            client_cpu_pct=used_client / wall * 100 if wall else None)
    return summary


async def ttft(target: Target, p: Profile, concurrency: int) -> dict:
    """Time to first event of streams with ``stream_events`` unpaced events, ``concurrency`` at once."""
    rounds = p.ttft_streams_1 if concurrency == 1 else p.ttft_rounds_64
    # One round to warm connections and code paths; not counted.
    await _streams(target, concurrency, 1, p.stream_events, 0, 60)
    return await _streams(target, concurrency, rounds, p.stream_events, 0, 60)


async def interchunk(target: Target, p: Profile) -> dict:
    """One stream paced at ``interchunk_delay_ms``: how late each event reaches the client."""
    return await _streams(target, 1, p.interchunk_rounds, p.interchunk_events, p.interchunk_delay_ms, 120)


def _turns(targets: list[Target], i: int) -> list[Target]:
    """Slice ``i``'s order: the targets rotated, so none is always first after another's load."""
    return targets[i % len(targets):] + targets[:i % len(targets)]


async def _alternating_streams(targets: list[Target], concurrency: int, slices: int, per_slice: int, events: int,
                               delay_ms: float, timeout: float, warmup: bool) -> dict[str, dict]:
    """Streams for every target in ``slices`` slices, the targets taking turns; each slice is ``per_slice``
    batches of ``concurrency`` streams on that target's own keep-alive connections."""
    body = chat_body(events, stream=True, delay_ms=delay_ms)
    conns = {t.name: [Connection(t.base, t.headers) for _ in range(concurrency)] for t in targets}
    results: dict[str, list[StreamResult | BaseException]] = {t.name: [] for t in targets}

    async def batch(t: Target) -> list[StreamResult | BaseException]:
        got = await asyncio.gather(*(asyncio.wait_for(c.stream(CHAT, body, events), timeout)
                                     for c in conns[t.name]), return_exceptions=True)
        for c, r in zip(conns[t.name], got):
            if not isinstance(r, StreamResult):  # the connection is in an unknown state: reopen
                await c.close()
        return got

    try:
        if warmup:  # one batch per target to warm connections and code paths; not counted
            for t in targets:
                await batch(t)
        for i in range(slices):
            for t in _turns(targets, i):
                for _ in range(per_slice):
                    results[t.name] += await batch(t)
    finally:
        await asyncio.gather(*(c.close() for cs in conns.values() for c in cs), return_exceptions=True)
    return {name: {**_stream_summary(rs, events), "slices": slices} for name, rs in results.items()}


async def ttft_alternating(targets: list[Target], p: Profile, concurrency: int) -> dict[str, dict]:
    """``ttft`` for every target, the targets taking turns: one stream at a time in ``latency_rounds`` slices, or
    each of the ``ttft_rounds_64`` rounds of 64 concurrent streams a slice of its own.

    The goals are ModelDeck's figure minus direct's (issue 13: added p50 ≤ 5 ms at 64 streams),
    so both must see the same machine; see ``latency_alternating``.
    """
    if concurrency == 1:
        slices = p.latency_rounds
        per_slice = max(1, p.ttft_streams_1 // slices)
    else:
        slices, per_slice = p.ttft_rounds_64, 1
    return await _alternating_streams(targets, concurrency, slices, per_slice, p.stream_events, 0, 60, warmup=True)


async def interchunk_alternating(targets: list[Target], p: Profile) -> dict[str, dict]:
    """``interchunk`` for every target in ``interchunk_rounds`` slices, the targets taking turns.

    Issue 13's goal compares ModelDeck's added p99 with nginx's from the same run, within
    0.1 ms: a p99 of one stream is its few worst events, which a burst of someone else's
    load decides when the targets are measured minutes apart. Taking turns in slices gives
    every target the same machine; each slice is one stream of ``interchunk_events``.
    """
    return await _alternating_streams(targets, 1, p.interchunk_rounds, 1, p.interchunk_events,
                                      p.interchunk_delay_ms, 120, warmup=False)


async def many_streams(target: Target, p: Profile, upstream: Target | None = None) -> dict:
    """``many_streams`` paced streams at once through one process: all complete? frame delay p95, events/s relayed,
    and the CPU of the target's process tree (for direct, the upstream itself) and of the upstream and this client."""
    timeout = p.many_events * p.many_delay_ms / 1000 * 4 + 30
    watch = {"target": target.pid}
    if upstream is not None and upstream.pid != target.pid:
        watch["upstream"] = upstream.pid
    return await _streams(target, p.many_streams, 1, p.many_events, p.many_delay_ms, timeout, watch)


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
    """Resident memory of ``pid`` and its descendants (a server with worker processes is all of them), MB."""
    if pid is None:
        return None
    import psutil
    total = 0
    for each in process_tree(pid):
        try:
            total += psutil.Process(each).memory_info().rss
        except psutil.Error:
            if each == pid:
                return None
    return total / 2**20

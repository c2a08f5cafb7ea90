"""The figures measured with the targets taking turns (bench/scenarios.py *_alternating), against real servers.

The bench upstream runs as its own process (as in a bench run); beside it, a target whose
server accepts a connection and closes it at once stands for a proxy that broke mid-run:
its figure must say so while the other targets' figures are still whole.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bench import scenarios, targets
from bench.scenarios import QUICK


@pytest.fixture(scope="module")
def upstream():
    t = targets.start_upstream()
    yield t
    t.stop()


async def _with_broken(run):
    async def slam(_reader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    try:
        broken = targets.Target("broken", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        return await run(broken)
    finally:
        server.close()
        await server.wait_closed()


def test_turns_rotate_so_no_target_always_goes_first() -> None:
    a, b, c = (targets.Target(n, "http://127.0.0.1:1") for n in "abc")
    orders = [[t.name for t in scenarios._turns([a, b, c], i)] for i in range(4)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_latency_in_turns_keeps_the_others_figures_when_one_target_breaks(upstream) -> None:
    got = asyncio.run(_with_broken(lambda broken: scenarios.latency_alternating([upstream, broken], QUICK)))
    assert "error" in got["broken"], got["broken"]
    direct = got["direct"]
    assert (direct["n"], direct["errors"], direct["slices"]) == (QUICK.latency_requests, 0, QUICK.latency_rounds)
    assert 0 < direct["p50_ms"] <= direct["p99_ms"], direct


@pytest.mark.parametrize("concurrency", [1, 64])
def test_ttft_in_turns_counts_every_stream_of_every_slice(upstream, concurrency) -> None:
    got = asyncio.run(_with_broken(lambda broken: scenarios.ttft_alternating([upstream, broken], QUICK, concurrency)))
    direct, broken = got["direct"], got["broken"]
    expected = QUICK.ttft_streams_1 if concurrency == 1 else 64 * QUICK.ttft_rounds_64
    assert (direct["streams"], direct["completed"], direct["merged"], direct["lost"]) == (expected, expected, 0, 0)
    assert (broken["streams"], broken["failed"], broken["completed"]) == (expected, expected, 0), broken


def test_event_delay_in_turns_gives_each_target_its_slices(upstream) -> None:
    p = dataclasses.replace(QUICK, interchunk_rounds=3, interchunk_events=10)
    got = asyncio.run(_with_broken(lambda broken: scenarios.interchunk_alternating([upstream, broken], p)))
    direct = got["direct"]
    assert (direct["streams"], direct["events"], direct["lost"], direct["slices"]) == (3, 30, 0, 3), direct
    assert direct["transit_p99_ms"] is not None and direct["transit_p99_ms"] >= 0
    assert got["broken"]["failed"] == 3 and got["broken"]["lost"] == 30, got["broken"]

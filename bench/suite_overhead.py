"""Suite runner overhead: a suite's cases run by ModelDeck's suite runner vs. the same requests sent by a client.

Both sides go through the same ModelDeck backend's ``/v1/chat/completions`` to the same
bench upstream, with the same bodies (``stream: true``, ``stream_options.include_usage``,
the run's ``max_tokens``) and the same concurrency:

- **runner**: ``POST /api/suites/{id}/runs`` with one deployment (``bench-model``) and
  ``concurrency`` N, timed from writing the POST to the run's ``end`` event on
  ``GET /api/runs/{id}/events`` (every cell checked, stored in ``suites.db`` and published);
- **client**: the bench's own client (``bench.client.Connection``) sends the same requests
  from N keep-alive connections, timed from the first request to the last answer's end.

The figure is runner time / client time, the median of ``repetitions`` alternating pairs.
A run's parameter sets accept no ``x_delay_ms``, so this figure has its own upstream,
started with ``--delay-ms`` (every event that many ms apart), and its own ModelDeck in front of it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from backend.suites import Suite
from bench import targets
from bench.backend_static import MODEL
from bench.client import Connection, StreamResult

CHAT = "/v1/chat/completions"
DELAY_MS = 20.0  # 50 tokens/s per stream, a typical single-GPU decode speed


async def _runner_once(client: httpx.AsyncClient, suite_id: str, run_body: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    made = await client.post(f"/api/suites/{suite_id}/runs", json=run_body)
    if made.status_code != 202:
        raise RuntimeError(f"POST /api/suites/{suite_id}/runs: {made.status_code} {made.text[:300]}")
    run_id = made.json()["id"]
    event = None
    async with client.stream("GET", f"/api/runs/{run_id}/events", timeout=httpx.Timeout(30, read=600)) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET /api/runs/{run_id}/events: {r.status_code}")
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "end":
                elapsed = time.perf_counter() - t0
                return elapsed, json.loads(line.split(":", 1)[1])
    raise RuntimeError(f"the events of run {run_id} ended without an end event")


async def _client_once(target: targets.Target, bodies: list[bytes], events: int, concurrency: int) -> tuple[float, int]:
    queue = iter(bodies)
    bad = 0

    async def worker() -> None:
        nonlocal bad
        conn = Connection(target.base, target.headers)
        try:
            for body in queue:
                r: StreamResult = await conn.stream(CHAT, body, events)
                bad += not r.done or r.events < events or r.lost > 0 or r.merged > 0
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, bad


async def measure(cases: int, concurrency: int, max_tokens: int, repetitions: int = 3,
                  delay_ms: float = DELAY_MS, log=print) -> dict:
    """Start an upstream paced at ``delay_ms`` and a ModelDeck in front of it; time both sides."""
    upstream = targets.start_upstream(delay_ms=delay_ms)
    try:
        modeldeck = targets.start_modeldeck(upstream)
        try:
            return await _measure(modeldeck, cases, concurrency, max_tokens, repetitions, delay_ms, log)
        finally:
            modeldeck.stop()
    finally:
        upstream.stop()


async def _measure(modeldeck: targets.Target, cases: int, concurrency: int, max_tokens: int, repetitions: int,
                   delay_ms: float, log) -> dict:
    suite_body = {"name": "bench runner overhead",
                  "cases": [{"id": f"c{i:04d}", "prompt": f"Count to {i}."} for i in range(cases)]}
    run_body = {"deployments": [MODEL], "concurrency": concurrency, "repetitions": 1,
                "parameter_sets": [{"label": "bench", "max_tokens": max_tokens}]}
    async with httpx.AsyncClient(base_url=modeldeck.base, headers=modeldeck.headers, trust_env=False,
                                 timeout=30) as client:
        made = await client.post("/api/suites", json=suite_body)
        if made.status_code != 201:
            raise RuntimeError(f"POST /api/suites: {made.status_code} {made.text[:300]}")
        suite = Suite.model_validate(made.json())
        # The bodies the runner sends (backend/suite_runner.py _answer), byte for byte in content.
        bodies = [json.dumps({"model": MODEL, "messages": case.render(suite), "stream": True,
                              "stream_options": {"include_usage": True}, "max_tokens": max_tokens}).encode()
                  for case in suite.cases]
        # One small warm-up of each side (connections, code paths), not counted.
        await _client_once(modeldeck, bodies[:concurrency], max_tokens, concurrency)
        runner_s: list[float] = []
        client_s: list[float] = []
        problems: list[str] = []
        for rep in range(repetitions):
            order = ("runner", "client") if rep % 2 == 0 else ("client", "runner")
            for side in order:
                if side == "runner":
                    elapsed, summary = await _runner_once(client, suite.id, run_body)
                    if summary.get("status") != "completed" or summary.get("errors"):
                        problems.append(f"run {summary.get('id')}: {summary.get('status')}, "
                                        f"{summary.get('errors')} errors")
                    runner_s.append(elapsed)
                else:
                    elapsed, bad = await _client_once(modeldeck, bodies, max_tokens, concurrency)
                    if bad:
                        problems.append(f"client: {bad} incomplete streams")
                    client_s.append(elapsed)
            log(f"  suite runner overhead, repetition {rep + 1}: runner {runner_s[-1]:.3f} s, "
                f"client {client_s[-1]:.3f} s")
    ratios = [a / b for a, b in zip(runner_s, client_s)]
    ideal = cases / concurrency * max_tokens * delay_ms / 1000
    return {"ratio": statistics.median(ratios), "ratios": ratios, "runner_s": runner_s, "client_s": client_s,
            "cases": cases, "concurrency": concurrency, "max_tokens": max_tokens, "delay_ms": delay_ms,
            "ideal_s": ideal, "problems": problems}

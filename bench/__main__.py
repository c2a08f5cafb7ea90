"""`python -m bench [--quick] [--out docs/benchmarks.md]`: measure ModelDeck against direct, nginx and LiteLLM."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback
from pathlib import Path

from bench import report, scenarios, targets
from bench.machine import describe
from bench.scenarios import FULL, QUICK, Profile

PREAMBLE = """\
# Benchmarks

`python -m bench` measures what ModelDeck adds between an OpenAI client and a model server,
side by side with the physical limit (**direct**: client → model server) and reference
proxies (**nginx** with `proxy_buffering off`; **LiteLLM**'s proxy, where installed), all
against the same upstream, in one run on one machine. See "How it measures" below.
"""


async def _step(out: dict, name: str, label: str, step, log) -> None:
    t0 = time.monotonic()
    try:
        out[name] = await step()
    except Exception as exc:  # noqa: BLE001 - one failed figure must not lose the others
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  {label} {name}: FAILED {exc!r}")
        return
    log(f"  {label} {name}: {json.dumps(out[name], default=str)} ({time.monotonic() - t0:.1f} s)")


async def _measure_alternating(ts: list[targets.Target], p: Profile, results: dict, log) -> None:
    """The figures whose goal is a small difference between targets, measured in slices with the targets taking
    turns (scenarios.*_alternating); stored under each target's name."""
    names = ", ".join(t.name for t in ts)
    for figure, measure in (("latency", scenarios.latency_alternating),
                            ("ttft_1", lambda ts, p: scenarios.ttft_alternating(ts, p, 1)),
                            ("ttft_64", lambda ts, p: scenarios.ttft_alternating(ts, p, 64)),
                            ("interchunk", scenarios.interchunk_alternating)):
        got: dict = {}
        await _step(got, figure, names, lambda: measure(ts, p), lambda m: log(m[:3000]))
        for t in ts:
            results.setdefault(t.name, {})[figure] = (got[figure] if "error" in got[figure]
                                                      else got[figure].get(t.name, {"error": "not measured"}))


async def _measure_target(t: targets.Target, p: Profile, use_wrk: bool, log, upstream: targets.Target) -> dict:
    out: dict = {}
    steps = [
        ("throughput", lambda: scenarios.throughput(t, p, 32, use_wrk)),
        ("many_streams", lambda: scenarios.many_streams(t, p, upstream)),
        ("rps_models", lambda: scenarios.requests_per_s(t, "/v1/models", p, use_wrk)),
    ]
    if t.name.startswith("ModelDeck"):
        steps.append(("rps_stats", lambda: scenarios.requests_per_s(t, "/api/stats", p, use_wrk)))
    for name, step in steps:
        await _step(out, name, t.name, step, log)
    return out


async def run(quick: bool = False, with_nginx: bool = True, with_litellm: bool = True, use_wrk: bool = True,
              with_sampler: bool = True, with_desktop: bool = True, compare_asgi: bool = False, sleep_image: str | None = None,
              desktop_seconds: float | None = None, with_suite_overhead: bool = True, with_cold_start: bool = True,
              with_library_listing: bool = True, log=print) -> tuple[dict, list[str]]:
    """Run every measurement; returns (results by target and figure, notes for the report)."""
    p = QUICK if quick else FULL
    results: dict = {}
    notes: list[str] = []
    started: list[targets.Target] = []
    try:
        upstream = targets.start_upstream()
        started.append(upstream)
        modeldeck = targets.start_modeldeck(upstream)
        started.append(modeldeck)
        await asyncio.sleep(2.0)  # lifespan done, first sampler ticks and refreshes behind it
        rss = {"idle_mb": scenarios.rss_mb(modeldeck.pid), "requests": p.rss_requests}
        log(f"ModelDeck idle RSS {rss['idle_mb']:.1f} MB; sending {p.rss_requests} proxied requests")
        load = await scenarios.proxied_requests(modeldeck, p.rss_requests)
        await asyncio.sleep(1.0)
        rss["after_mb"] = scenarios.rss_mb(modeldeck.pid)
        rss["errors"] = load["errors"]
        results["rss"] = rss

        proxies = [modeldeck]
        if compare_asgi:
            stock = targets.start_modeldeck(upstream, asgi_only=True)
            started.append(stock)
            proxies.append(stock)
        if with_nginx:
            try:
                nginx = targets.start_nginx(upstream)
            except Exception as exc:  # noqa: BLE001
                nginx = None
                notes.append(f"nginx failed to start: {exc}")
            if nginx is None:
                notes.append("nginx column: nginx is not installed (apt-get install nginx-light).")
            else:
                started.append(nginx)
                proxies.append(nginx)
        if with_litellm:
            try:
                litellm = targets.start_litellm(upstream)
            except Exception as exc:  # noqa: BLE001
                litellm = None
                notes.append(f"LiteLLM failed to start: {exc}")
            if litellm is None:
                notes.append("LiteLLM column: not installed (pip install 'litellm[proxy]'; or point "
                             "MODELDECK_BENCH_LITELLM at a `litellm` command in another venv).")
            else:
                started.append(litellm)
                proxies.append(litellm)
        elif quick:
            notes.append("LiteLLM column: skipped in quick mode (its start-up alone takes longer).")

        everyone = [upstream, *proxies]
        log("measuring latency, time to first token and event delay, the targets taking turns: "
            + ", ".join(f"{t.name} at {t.base}" for t in everyone))
        await _measure_alternating(everyone, p, results, log)
        for t in everyone:
            log(f"measuring {t.name} at {t.base}")
            results[t.name].update(await _measure_target(t, p, use_wrk, log, upstream))
        for t in (upstream, *proxies[1:]):
            rss[f"{t.name}_mb"] = scenarios.rss_mb(t.pid)
        rss["ModelDeck_end_mb"] = scenarios.rss_mb(modeldeck.pid)
    finally:
        for t in reversed(started):
            t.stop()

    if with_suite_overhead:
        # Issue 18: a suite run through the runner vs. the same requests from a client, same upstream.
        from bench import suite_overhead
        cases, conc, tokens = (20, 4, 8) if quick else (200, 8, 16)
        log(f"measuring the suite runner's overhead ({cases} cases, concurrency {conc}, {tokens} tokens each)")
        try:
            results["suite_overhead"] = await suite_overhead.measure(cases, conc, tokens, log=log)
            log(f"  suite_overhead: {json.dumps(results['suite_overhead'])}")
        except Exception as exc:  # noqa: BLE001
            results["suite_overhead"] = {"error": f"{type(exc).__name__}: {exc}"}
            notes.append(f"suite runner overhead not measured: {exc}")
            log(traceback.format_exc())
    if with_cold_start:
        # Issue 14: a request loading an unloaded model through ModelDeck vs. the container's own start.
        from bench import cold_start
        reps, runtimes = (2, ("demo",)) if quick else (10, cold_start.RUNTIMES)
        try:
            results["cold_start"] = await asyncio.to_thread(cold_start.measure, reps, runtimes, log)
            log(f"  cold_start: {json.dumps(results['cold_start'])}")
        except Exception as exc:  # noqa: BLE001
            results["cold_start"] = {"error": f"{type(exc).__name__}: {exc}"}
            notes.append(f"cold-start overhead not measured: {exc}")
            log(traceback.format_exc())
    if with_library_listing:
        # Issue 15: GGUF metadata from headers only, so a multi-GiB file lists in well under a second.
        from bench import library_listing
        gib, runs = (1.0, 3) if quick else (8.0, 7)
        log(f"measuring GET /api/library with a {gib:g} GiB sparse GGUF ({runs} runs)")
        try:
            results["library_listing"] = await asyncio.to_thread(library_listing.measure, gib, runs, log)
            log(f"  library_listing: {json.dumps(results['library_listing'])}")
        except Exception as exc:  # noqa: BLE001
            results["library_listing"] = {"error": f"{type(exc).__name__}: {exc}"}
            notes.append(f"library listing not measured: {exc}")
            log(traceback.format_exc())
    if with_sampler:
        log("measuring the stats sampler over 10 running containers")
        try:
            from bench import sampler_cost
            results["sampler"] = await asyncio.to_thread(sampler_cost.measure, p.sampler_s, p.sampler_baseline_s,
                                                          image=sleep_image)
            log(f"  sampler: {json.dumps(results['sampler'])}")
        except Exception as exc:  # noqa: BLE001
            results["sampler"] = {"error": f"{type(exc).__name__}: {exc}"}
            notes.append(f"stats sampler cost not measured: {exc}")
            log(traceback.format_exc())
    if with_desktop:
        try:
            from bench import desktop
            results["desktop"] = await asyncio.to_thread(desktop.measure, quick, desktop_seconds)
        except Exception as exc:  # noqa: BLE001
            why = getattr(exc, "headline", None) or f"{type(exc).__name__}: {str(exc)[:300]}"
            results["desktop"] = {"why": f"not measured ({why})"}
            log(traceback.format_exc())
        log(f"  desktop: {json.dumps(results['desktop'], default=str)}")
    else:
        results["desktop"] = {"why": "not measured (--no-desktop)"}
    notes += _method_notes(p, results, use_wrk)
    return results, notes


def _method_notes(p: Profile, r: dict, use_wrk: bool) -> list[str]:
    tool = r.get("ModelDeck", {}).get("throughput", {}).get("tool", "?")
    return [
        f"Mode: {'quick (tiny counts: figures prove the harness, not the speed)' if p is QUICK else 'full'}.",
        "Every server is its own process: the upstream (`bench/upstream.py`, raw asyncio + uvloop), ModelDeck "
        "(`modeldeck-backend`'s own `main`, real `create_app`, SecurityMiddleware, Docker engine, stats sampler; "
        "only `app.state.upstreams` pinned to the upstream), nginx (1 worker) and LiteLLM (1 worker). The client "
        "is this process (raw HTTP/1.1 on asyncio) or wrk.",
        f"Latency: {p.latency_requests} sequential non-streamed requests (16 tokens) per target on one keep-alive "
        f"connection after {p.latency_warmup} warm-up, sent in {p.latency_rounds} slice{'s' * (p.latency_rounds > 1)} "
        "with the targets taking turns (so a burst of other load on the machine falls on all of them, not on one). "
        f"Throughput: 32 connections for {p.throughput_s:g} s ({tool}, 1 thread).",
        f"TTFT: {p.ttft_streams_1 // p.latency_rounds * p.latency_rounds} streams one after another in "
        f"{p.latency_rounds} slice{'s' * (p.latency_rounds > 1)}, and {p.ttft_rounds_64} round"
        f"{'s' * (p.ttft_rounds_64 > 1)} of 64 concurrent streams, each round a slice, the targets taking turns "
        f"after a warm-up round each; {p.stream_events} unpaced events per stream; time from writing the request "
        "to parsing the first event.",
        f"Event delay: the upstream stamps each event with CLOCK_MONOTONIC when it writes it; the client "
        f"subtracts it on arrival ({p.interchunk_rounds} slice{'s' * (p.interchunk_rounds > 1)} of one stream of "
        f"{p.interchunk_events} events "
        f"{p.interchunk_delay_ms:g} ms apart per target, the targets taking turns; the goal is nginx's added p99 "
        f"from the same run + 0.1 ms). Events are numbered: a merged event fails to parse as one chunk, a lost one "
        "leaves a gap.",
        f"256 streams: {p.many_streams} streams at once, each {p.many_events} events {p.many_delay_ms:g} ms apart "
        f"({1000 / p.many_delay_ms:g} tok/s; {p.many_streams * 1000 / p.many_delay_ms:,.0f} events/s offered through "
        "one process); the upstream writes the events due within 1 ms of one wake-up together, as a model server's "
        "batch step does. Events/s relayed: the events that arrived while every stream was live (from the last "
        "stream's first event to the first stream's last) over that window. CPU: utime + stime from "
        "/proc/<pid>/stat of the server process and its children (ModelDeck: the backend; nginx: its worker; "
        "direct: the upstream) from the batch's first request to its last event, as % of one core; the upstream's "
        "and the client's own CPU over the same window are noted beside it.",
        "RSS: ModelDeck's backend process (and any processes it started) right after start-up (2 s idle) and after "
        f"{p.rss_requests:,} proxied requests (9 in 10 non-streamed, 1 in 10 streamed, 16 connections).",
        "Stats sampler: the real `StatsSampler` (1 Hz, host + cgroups + NVML where present) in its own process, "
        "given 10 running `sleep` containers through a fixed ContainerRef source; its CPU time over "
        f"{p.sampler_s:g} s, and dockerd's CPU over the same window minus a {p.sampler_baseline_s:g} s baseline "
        "just before (other Docker users on the machine add noise to that delta).",
        "Suite runner overhead: its own upstream paced at %g ms per event and a ModelDeck in front of it (a "
        "run's parameter sets carry no pacing field); one suite, run with one deployment through "
        "`POST /api/suites/{id}/runs` and timed from that POST to the run's `end` event, against the bench client "
        "sending the same bodies (stream, include_usage, max_tokens) through the same ModelDeck `/v1` at the same "
        "concurrency; median ratio of %d alternating pairs after a warm-up." % (
            (r.get("suite_overhead") or {}).get("delay_ms") or 0, len((r.get("suite_overhead") or {}).get("ratios") or [])),
        "Cold-start overhead: a real `modeldeck-backend` with the Docker engine; per runtime one deployment "
        "launched with `on_demand`, unloaded (stop) before each request; time from a streamed "
        "`/v1/chat/completions` to the first `data:` line minus the same container's `docker start` to the "
        "backend's readiness probe answering yes (polled every 5 ms), the two alternating; median of the pairs "
        "(see bench/cold_start.py).",
        "Library listing: `GET /api/library` from the real `modeldeck-backend` whose model folder holds one GGUF "
        "of the row's size (a real header and tensor infos written with the `gguf` package, the data region a "
        "sparse hole) and whose caches are empty host folders; median client-side time of the runs after a "
        "warm-up (`python -m bench.library_listing` runs it alone).",
        "The client, the proxy under test and the upstream share the same cores: on a 2-core machine a proxy "
        "that needs a core of its own competes with the client and the upstream for it.",
        "Goals: issue 13's (bench/report.py states them); rows it does not name keep the goal of the issue that "
        "introduced them.",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny counts (a few seconds): proves the harness")
    parser.add_argument("--out", type=Path, help="write the results into this Markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument("--no-nginx", action="store_true")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python client for requests/s figures")
    parser.add_argument("--no-sampler", action="store_true", help="skip the stats sampler figure (needs Docker)")
    parser.add_argument("--no-desktop", action="store_true", help="skip the desktop figures")
    parser.add_argument("--no-suite-overhead", action="store_true", help="skip the suite runner overhead figure")
    parser.add_argument("--no-cold-start", action="store_true",
                        help="skip the cold-start overhead figure (python -m bench.cold_start runs it alone)")
    parser.add_argument("--no-library-listing", action="store_true",
                        help="skip the library listing figure (python -m bench.library_listing runs it alone)")
    parser.add_argument("--desktop-seconds", type=float,
                        help="how long the four desktop columns stream (default 60; the goal's RSS figure names 600)")
    parser.add_argument("--compare-asgi", action="store_true",
                        help="also measure ModelDeck without its /v1 data plane: every request through FastAPI (before/after)")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results, notes = asyncio.run(run(
        quick=args.quick, with_nginx=not args.no_nginx, with_litellm=not args.no_litellm and not args.quick,
        use_wrk=not args.no_wrk, with_sampler=not args.no_sampler, with_desktop=not args.no_desktop,
        compare_asgi=args.compare_asgi, desktop_seconds=args.desktop_seconds,
        with_suite_overhead=not args.no_suite_overhead, with_cold_start=not args.no_cold_start,
        with_library_listing=not args.no_library_listing, log=log))
    machine = describe({"LiteLLM": targets.litellm_version()})
    section = report.markdown(results, machine, notes)
    print(section)
    if args.out:
        report.write(args.out, section, PREAMBLE)
        log(f"wrote {args.out}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

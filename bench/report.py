"""The results as a Markdown table (medians, p99, ratio to direct, the goal and whether it is met), and docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:results:begin (written by `python -m bench`; edit outside these markers) -->"
END = "<!-- bench:results:end -->"
STOCK = "ModelDeck (ASGI path)"  # every request through FastAPI, no data plane (before issue 13), with --compare-asgi
PROXIES = ("ModelDeck", STOCK, "nginx", "LiteLLM")
COLUMNS = ("direct", "ModelDeck", STOCK, "nginx", "LiteLLM")


# Issue 13's goals (docs/benchmarks.md's table states them; the "met" column follows them). Rows the issue does not
# name keep the goal of the issue that introduced them (1-stream TTFT, suite runner, cold start, library listing,
# first paint, desktop RSS).
LATENCY_ADDED_MS = (0.3, 1.0)  # non-streamed, 1 client: added p50, p99
THROUGHPUT_VS_DIRECT = 0.5  # non-streamed, 32 connections
TTFT_1_ADDED_MS = (1.0, 3.0)  # earlier goal (issue 13 names none for one stream)
TTFT_64_ADDED_MS = (5.0, 15.0)  # 64 concurrent streams: added TTFT p50, p99
EVENT_DELAY_OVER_NGINX_MS = 0.1  # added event delay p99 ≤ nginx's added p99 + this, same run
MANY_P95_MS = 10.0  # 256 concurrent streams: frame delay p95
MANY_EVENTS_PER_S = 20_000  # relayed through one process (256 streams at 80 tok/s offer 20,480/s)
MANY_CPU_PCT = 100.0  # the backend below one core while relaying them
RPS = 20_000  # GET /v1/models and GET /api/stats
SAMPLER_CPU_PCT = 0.5  # stats sampler with 10 containers, % of one core
STALL_MS, STALL_RUNS = 50.0, 3  # desktop worst GUI-thread stall, in each of three runs
RSS_GROWTH_PCT = 10.0  # backend RSS growth over 10,000 requests


def _f(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _signed(v: float | None, digits: int = 3) -> str:
    """An added figure with its sign (a negative one is noise, and reads as such rather than as "+-0.6")."""
    return "—" if v is None else f"{v:+.{digits}f}"


def _pair(a: float | None, b: float | None, digits: int = 2) -> str:
    return "—" if a is None and b is None else f"{_f(a, digits)} / {_f(b, digits)}"


def _added(r: dict, figure: str, key: str, target: str) -> float | None:
    try:
        return r[target][figure][key] - r["direct"][figure][key]
    except (KeyError, TypeError):
        return None


def _get(r: dict, target: str, figure: str, key: str):
    try:
        return r[target][figure][key]
    except (KeyError, TypeError):
        return None


def _verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _le(v: float | None, limit: float) -> bool | None:
    return None if v is None else v <= limit


def _all(*oks: bool | None) -> bool | None:
    if any(o is None for o in oks):
        return None
    return all(oks)


def figures(r: dict) -> list[dict]:
    """One row per figure of the issue: what each target measured, ModelDeck vs direct, goal and verdict.

    Every row has ``value`` (ModelDeck's figure, None when not measured) for the tests.
    """
    rows: list[dict] = []

    def row(figure: str, goal: str, cells: dict[str, str], vs: str, value, ok: bool | None, key: str) -> None:
        rows.append({"key": key, "figure": figure, "goal": goal, "cells": cells, "vs": vs, "value": value,
                     "verdict": _verdict(ok)})

    # non-streamed, one client
    cells = {t: _pair(_get(r, t, "latency", "p50_ms"), _get(r, t, "latency", "p99_ms"), 3) for t in COLUMNS}
    a50, a99 = _added(r, "latency", "p50_ms", "ModelDeck"), _added(r, "latency", "p99_ms", "ModelDeck")
    vs = {t: f"{t}: {_signed(_added(r, 'latency', 'p50_ms', t))} / {_signed(_added(r, 'latency', 'p99_ms', t))}"
          for t in PROXIES if t in r}
    lim50, lim99 = LATENCY_ADDED_MS
    row("non-streamed chat, 1 client: latency p50 / p99 (ms); added vs direct",
        f"added p50 ≤ {lim50:g} ms, p99 ≤ {lim99:g} ms", cells,
        "<br>".join(vs.values()), None if a50 is None else (a50, a99), _all(_le(a50, lim50), _le(a99, lim99)),
        "latency")

    # non-streamed, 32 concurrent
    rps = {t: _get(r, t, "throughput", "rps") for t in COLUMNS}
    cells = {t: "—" if v is None else f"{v:,.0f} req/s" for t, v in rps.items()}
    ratio = rps["ModelDeck"] / rps["direct"] if rps["ModelDeck"] and rps["direct"] else None
    peer = rps["ModelDeck"] / rps["LiteLLM"] if rps["ModelDeck"] and rps["LiteLLM"] else None
    vs = [f"{t}: {rps[t] / rps['direct']:.2f}× direct" for t in PROXIES if rps.get(t) and rps["direct"]]
    if peer is not None:
        vs.append(f"ModelDeck: {peer:.1f}× LiteLLM")
    row("non-streamed, 32 concurrent: throughput", f"≥ {THROUGHPUT_VS_DIRECT:g}× direct", cells, "<br>".join(vs),
        ratio, None if ratio is None else ratio >= THROUGHPUT_VS_DIRECT, "throughput")

    for conc, figure, (lim50, lim99) in ((1, "ttft_1", TTFT_1_ADDED_MS), (64, "ttft_64", TTFT_64_ADDED_MS)):
        cells = {t: _pair(_get(r, t, figure, "ttft_p50_ms"), _get(r, t, figure, "ttft_p99_ms"), 3) for t in COLUMNS}
        a50, a99 = _added(r, figure, "ttft_p50_ms", "ModelDeck"), _added(r, figure, "ttft_p99_ms", "ModelDeck")
        vs = [f"{t}: {_signed(_added(r, figure, 'ttft_p50_ms', t))} / {_signed(_added(r, figure, 'ttft_p99_ms', t))}"
              for t in PROXIES if t in r]
        row(f"streamed, {conc} concurrent stream{'s' if conc > 1 else ''}: time to first token p50 / p99 (ms); "
            "added vs direct", f"added p50 ≤ {lim50:g} ms, p99 ≤ {lim99:g} ms", cells, "<br>".join(vs),
            None if a50 is None else (a50, a99), _all(_le(a50, lim50), _le(a99, lim99)), figure)

    cells = {t: _pair(_get(r, t, "interchunk", "transit_p50_ms"), _get(r, t, "interchunk", "transit_p99_ms"), 3)
             for t in COLUMNS}
    a99 = _added(r, "interchunk", "transit_p99_ms", "ModelDeck")
    nginx99 = _added(r, "interchunk", "transit_p99_ms", "nginx")
    limit = None if nginx99 is None else nginx99 + EVENT_DELAY_OVER_NGINX_MS
    vs = [f"{t}: {_signed(_added(r, 'interchunk', 'transit_p99_ms', t))} (p99)" for t in PROXIES if t in r]
    slices = _get(r, "ModelDeck", "interchunk", "slices")
    if slices:
        events = _get(r, "ModelDeck", "interchunk", "events")
        vs.append(f"{events:,} events per target" + (f" in {slices} slices, the targets taking turns"
                                                     if slices > 1 else ""))
    row("streamed: event delay upstream → client p50 / p99 (ms); added p99 vs direct",
        f"added p99 ≤ nginx's + {EVENT_DELAY_OVER_NGINX_MS:g} ms "
        + ("(nginx not measured)" if limit is None else f"(this run: ≤ {limit:+.3f} ms)"), cells,
        "<br>".join(vs), a99, _le(a99, limit) if limit is not None else None, "interchunk")

    def fidelity(t: str) -> tuple[int, int] | None:
        if t not in r:
            return None
        runs = [r[t].get(f) for f in ("ttft_1", "ttft_64", "interchunk", "many_streams")]
        if not runs or any(x is None or "error" in x for x in runs):
            return None
        return sum(x["merged"] for x in runs), sum(x["lost"] for x in runs)

    fid = {t: fidelity(t) for t in COLUMNS}
    cells = {t: "—" if v is None else f"{v[0]} / {v[1]}" for t, v in fid.items()}
    total = {t: sum(r[t][f].get("events", 0) for f in ("ttft_1", "ttft_64", "interchunk", "many_streams")
                    if f in r[t]) for t in COLUMNS if t in r}
    row("streamed: events merged / lost (all streamed runs)", "zero", cells,
        "events checked: " + ", ".join(f"{t} {n:,}" for t, n in total.items()), fid["ModelDeck"],
        None if fid["ModelDeck"] is None else fid["ModelDeck"] == (0, 0), "fidelity")

    def many(t: str) -> str:
        m = r.get(t, {}).get("many_streams")
        if not m or "error" in m:
            return "—" if not m else m["error"]
        return f"{m['completed']}/{m['streams']} complete, p95 {_f(m['transit_p95_ms'], 1)} ms"

    m = r.get("ModelDeck", {}).get("many_streams")
    m = None if not m or "error" in m else m
    vs = [f"{t}: p95 {_signed(_added(r, 'many_streams', 'transit_p95_ms', t), 1)} ms vs direct; first event p50 "
          f"{_f(_get(r, t, 'many_streams', 'ttft_p50_ms'), 0)} ms" for t in PROXIES
          if _get(r, t, "many_streams", "transit_p95_ms") is not None]
    if vs and _get(r, "direct", "many_streams", "ttft_p50_ms") is not None:
        vs.append(f"direct: first event p50 {_f(_get(r, 'direct', 'many_streams', 'ttft_p50_ms'), 0)} ms")
    row("256 concurrent streams through one process: completed; frame delay p95",
        f"all complete; p95 ≤ {MANY_P95_MS:g} ms", {t: many(t) for t in COLUMNS}, "<br>".join(vs),
        None if not m else (m["completed"], m["transit_p95_ms"]),
        None if not m else (m["completed"] == m["streams"] and _le(m["transit_p95_ms"], MANY_P95_MS) is True),
        "many_streams")

    def relay(t: str) -> str:
        m = r.get(t, {}).get("many_streams")
        if not m or "error" in m or m.get("events_per_s") is None:
            return "—"
        cpu, procs = (m.get("cpu_pct") or {}).get("target"), (m.get("processes") or {}).get("target", 1)
        return (f"{m['events_per_s']:,.0f} events/s; CPU {_f(cpu, 0)}% of a core"
                + (f" ({procs} processes)" if procs > 1 else ""))

    def helpers(t: str) -> str | None:
        m = r.get(t, {}).get("many_streams")
        if not m or "error" in m or m.get("events_per_s") is None:
            return None
        up = (m.get("cpu_pct") or {}).get("upstream")
        return (f"{t}: upstream {_f(up, 0)}%, " if up is not None else f"{t}: ") \
            + f"client {_f(m['client_cpu_pct'], 0)}%"

    offered = (m or {}).get("offered_events_per_s")
    rate, cpu = (m or {}).get("events_per_s"), ((m or {}).get("cpu_pct") or {}).get("target")
    row(f"the same 256 streams at {offered / m['streams'] if offered else 80:g} tok/s ({offered or 20480:,.0f} events/s "
        "offered): events/s relayed while all were live; CPU of the process (tree) over the run, % of one core",
        f"≥ {MANY_EVENTS_PER_S:,} events/s; backend < {MANY_CPU_PCT:g}% of one core", {t: relay(t) for t in COLUMNS},
        "CPU beside it: " + "; ".join(h for h in map(helpers, COLUMNS) if h) if m else "",
        None if rate is None or cpu is None else (rate, cpu),
        None if rate is None or cpu is None else (rate >= MANY_EVENTS_PER_S and cpu < MANY_CPU_PCT),
        "many_streams_relay")

    for path, key in (("/v1/models", "rps_models"), ("/api/stats", "rps_stats")):
        vals = {t: _get(r, t, key, "rps") for t in COLUMNS}
        tools = {_get(r, t, key, "tool") for t in COLUMNS} - {None}
        cells = {t: "—" if v is None else f"{v:,.0f} req/s" for t, v in vals.items()}
        row(f"`GET {path}` requests/s, 32 connections ({', '.join(sorted(tools)) or '—'})", f"≥ {RPS:,}",
            cells, "", vals["ModelDeck"], None if vals["ModelDeck"] is None else vals["ModelDeck"] >= RPS, key)

    s = r.get("sampler") or {}
    cpu, dd = s.get("sampler_cpu_pct"), s.get("dockerd_cpu_pct_delta")
    row(f"stats sampler at 1 Hz, {s.get('containers', 10)} running containers: CPU (% of one core); "
        "dockerd CPU delta", f"≤ {SAMPLER_CPU_PCT:g}% of one core",
        {"ModelDeck": "—" if cpu is None else f"{cpu:.2f}%; dockerd {dd:+.2f}%" if dd is not None
         else f"{cpu:.2f}%; dockerd not found"},
        "" if not s else f"dockerd baseline {_f(s.get('dockerd_cpu_pct_baseline'))}%, during "
        f"{_f(s.get('dockerd_cpu_pct_during'))}%", None if cpu is None else (cpu, dd),
        _le(cpu, SAMPLER_CPU_PCT), "sampler")

    rs = r.get("rss") or {}
    idle, after = rs.get("idle_mb"), rs.get("after_mb")
    growth = (after - idle) / idle * 100 if idle and after else None
    row(f"backend RSS idle / after {rs.get('requests', 10000):,} proxied requests (MB); growth",
        f"growth ≤ {RSS_GROWTH_PCT:g}%",
        {"ModelDeck": "—" if idle is None else f"{idle:.1f} / {_f(after, 1)} ({_signed(growth, 1)}%)",
         **{t: "—" if rs.get(f"{t}_mb") is None else f"{rs[f'{t}_mb']:.1f} (after the run)"
            for t in ("direct", "nginx", "LiteLLM")}},
        "", None if idle is None else (idle, after),
        _le(growth, RSS_GROWTH_PCT), "rss")

    so = r.get("suite_overhead") or {}
    ratio = so.get("ratio")
    row(f"a suite of {so.get('cases', 200)} cases on one deployment: suite runner vs. the same requests sent by "
        "a client, total time ratio", "≤ 1.05",
        {"ModelDeck": "—" if ratio is None else f"{ratio:.3f}×"},
        so.get("error", "") if ratio is None else
        (f"concurrency {so['concurrency']}, {so['max_tokens']} tokens × {so['delay_ms']:g} ms each (ideal "
         f"{so['ideal_s']:.2f} s); runner {', '.join(f'{x:.2f}' for x in so['runner_s'])} s, client "
         f"{', '.join(f'{x:.2f}' for x in so['client_s'])} s"
         + (f"; problems: {'; '.join(so['problems'])}" if so.get("problems") else "")),
        ratio, _le(ratio, 1.05) if not so.get("problems") else False, "suite_overhead")

    from bench.cold_start import GOAL_MS, row_cells
    cs = r.get("cold_start") or {}
    cell, details, value, ok = row_cells(cs)
    row(f"cold-start overhead: request → first byte through ModelDeck for an unloaded model, minus the container's "
        f"own start → ready (median of {cs.get('repetitions', 10)}, ms)", f"≤ {GOAL_MS:g} ms",
        {"ModelDeck": cell}, details, value, ok, "cold_start")

    ll = r.get("library_listing") or {}
    med = ll.get("median_s")
    row(f"`GET /api/library` with a {ll.get('gib', 8):g} GiB sparse GGUF in a model folder: median (s)", "≤ 0.5 s",
        {"ModelDeck": "—" if med is None else f"{med:.3f}"},
        ll.get("error", "") if med is None else
        (f"{ll['runs']} runs: {', '.join(f'{x * 1000:.0f}' for x in ll['times_s'])} ms; backend scan "
         f"{_f(ll.get('scanned_ms_median'), 1)} ms; {ll['on_disk_bytes'] // 1024} KiB on disk"
         + (f"; problems: {'; '.join(ll['problems'])}" if ll.get("problems") else "")),
        med, _le(med, 0.5) if not ll.get("problems") else False, "library_listing")

    d = r.get("desktop") or {}
    for key, figure, goal, limit in (
        ("first_paint_attach_s", "desktop: launch to first painted window, backend already running (s)", "≤ 1.5 s", 1.5),
        ("first_paint_spawn_s", "desktop: launch to first painted window, spawning the backend (s)", "≤ 3 s", 3.0),
        ("worst_stall_ms", "desktop: worst GUI-thread stall, 4 compare columns at 50 tok/s + stats at 1 Hz (ms)",
         f"≤ {STALL_MS:g} ms in each of {STALL_RUNS} runs", STALL_MS),
        ("rss_mb", "desktop RSS after that run (MB)", "≤ 250 MB", 250.0),
        ("suites_worst_stall_ms", "desktop: worst GUI-thread stall while 400 suite cells stream into the Suites "
         "grid (ms)", f"≤ {STALL_MS:g} ms", STALL_MS),
    ):
        v = d.get(key)
        cell = _f(v, 3 if key.endswith("_s") else 1) if v is not None else d.get("why", "not measured")
        ok = _le(v, limit)
        runs = d.get("worst_stall_runs_ms") if key == "worst_stall_ms" else None
        if runs:
            cell = f"{cell} (runs: {', '.join(_f(x, 1) for x in runs)})"
            measured = [x for x in runs if x is not None]
            if any(x > limit for x in measured):
                ok = False
            elif len(measured) < STALL_RUNS:
                ok = None  # not yet three runs (quick mode): no verdict on a goal about three
            else:
                ok = True
        row(figure, goal, {"ModelDeck": cell}, d.get(f"{key}_note", ""), v, ok, f"desktop_{key}")
    return rows


def markdown(r: dict, machine: dict[str, str], notes: list[str]) -> str:
    """The results section: machine, table, notes."""
    present = [t for t in COLUMNS if t in r or t == "ModelDeck"]
    lines = ["## Results", "", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + ".", ""]
    head = ["figure", "goal", *present, "proxies vs direct", "ModelDeck"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in figures(r):
        cells = [row["cells"].get(t, "—") for t in present]
        lines.append("| " + " | ".join([row["figure"], row["goal"], *cells, row["vs"] or "", row["verdict"]]) + " |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(path: Path, section: str, preamble: str) -> None:
    """Put ``section`` between the markers in ``path``, keeping what is outside them (profiling notes)."""
    block = f"{BEGIN}\n{section}{END}"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            path.write_text(before + block + after, encoding="utf-8")
            return
        path.write_text(text.rstrip() + "\n\n" + block + "\n", encoding="utf-8")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(preamble + "\n" + block + "\n", encoding="utf-8")

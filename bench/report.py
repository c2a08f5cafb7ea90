"""The results as a Markdown table (medians, p99, ratio to direct, the goal and whether it is met), and docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench:results:begin (written by `python -m bench`; edit outside these markers) -->"
END = "<!-- bench:results:end -->"
STOCK = "ModelDeck (httpcore pool)"  # the state before backend/upstream_pool.py, with --compare-stock-pool
PROXIES = ("ModelDeck", STOCK, "nginx", "LiteLLM")
COLUMNS = ("direct", "ModelDeck", STOCK, "nginx", "LiteLLM")


def _f(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


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
    vs = {t: f"{t}: +{_f(_added(r, 'latency', 'p50_ms', t), 3)} / +{_f(_added(r, 'latency', 'p99_ms', t), 3)}"
          for t in PROXIES if t in r}
    row("non-streamed chat, 1 client: latency p50 / p99 (ms); added vs direct", "added ≤ 0.5 / ≤ 2 ms", cells,
        "<br>".join(vs.values()), None if a50 is None else (a50, a99), _all(_le(a50, 0.5), _le(a99, 2.0)),
        "latency")

    # non-streamed, 32 concurrent
    rps = {t: _get(r, t, "throughput", "rps") for t in COLUMNS}
    cells = {t: "—" if v is None else f"{v:,.0f} req/s" for t, v in rps.items()}
    ratio = rps["ModelDeck"] / rps["direct"] if rps["ModelDeck"] and rps["direct"] else None
    peer = rps["ModelDeck"] / rps["LiteLLM"] if rps["ModelDeck"] and rps["LiteLLM"] else None
    vs = [f"{t}: {rps[t] / rps['direct']:.2f}× direct" for t in PROXIES if rps.get(t) and rps["direct"]]
    if peer is not None:
        vs.append(f"ModelDeck: {peer:.1f}× LiteLLM")
    row("non-streamed, 32 concurrent: throughput", "≥ 0.8× direct; ≥ 3× the peer", cells, "<br>".join(vs),
        ratio, _all(None if ratio is None else ratio >= 0.8, None if peer is None else peer >= 3.0)
        if peer is not None else (None if ratio is None else ratio >= 0.8), "throughput")

    for conc, figure in ((1, "ttft_1"), (64, "ttft_64")):
        cells = {t: _pair(_get(r, t, figure, "ttft_p50_ms"), _get(r, t, figure, "ttft_p99_ms"), 3) for t in COLUMNS}
        a50, a99 = _added(r, figure, "ttft_p50_ms", "ModelDeck"), _added(r, figure, "ttft_p99_ms", "ModelDeck")
        vs = [f"{t}: +{_f(_added(r, figure, 'ttft_p50_ms', t), 3)} / +{_f(_added(r, figure, 'ttft_p99_ms', t), 3)}"
              for t in PROXIES if t in r]
        row(f"streamed, {conc} concurrent stream{'s' if conc > 1 else ''}: time to first token p50 / p99 (ms); "
            "added vs direct", "added ≤ 1 / ≤ 3 ms", cells, "<br>".join(vs),
            None if a50 is None else (a50, a99), _all(_le(a50, 1.0), _le(a99, 3.0)), figure)

    cells = {t: _pair(_get(r, t, "interchunk", "transit_p50_ms"), _get(r, t, "interchunk", "transit_p99_ms"), 3)
             for t in COLUMNS}
    a99 = _added(r, "interchunk", "transit_p99_ms", "ModelDeck")
    vs = [f"{t}: +{_f(_added(r, 'interchunk', 'transit_p99_ms', t), 3)} (p99)" for t in PROXIES if t in r]
    row("streamed: event delay upstream → client p50 / p99 (ms); added p99 vs direct", "added p99 ≤ 1 ms", cells,
        "<br>".join(vs), a99, _le(a99, 1.0), "interchunk")

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
        if not m:
            return "—"
        return f"{m['completed']}/{m['streams']} complete, p95 {_f(m['transit_p95_ms'], 1)} ms"

    m = r.get("ModelDeck", {}).get("many_streams")
    row("256 concurrent streams through one process: completed; frame delay p95", "all complete; p95 ≤ 25 ms",
        {t: many(t) for t in COLUMNS}, "", None if not m else (m["completed"], m["transit_p95_ms"]),
        None if not m else (m["completed"] == m["streams"] and m["transit_p95_ms"] is not None
                            and m["transit_p95_ms"] <= 25), "many_streams")

    for path, key in (("/v1/models", "rps_models"), ("/api/stats", "rps_stats")):
        vals = {t: _get(r, t, key, "rps") for t in COLUMNS}
        tools = {_get(r, t, key, "tool") for t in COLUMNS} - {None}
        cells = {t: "—" if v is None else f"{v:,.0f} req/s" for t, v in vals.items()}
        row(f"`GET {path}` requests/s, 32 connections ({', '.join(sorted(tools)) or '—'})", "≥ 5,000",
            cells, "", vals["ModelDeck"], None if vals["ModelDeck"] is None else vals["ModelDeck"] >= 5000, key)

    s = r.get("sampler") or {}
    cpu, dd = s.get("sampler_cpu_pct"), s.get("dockerd_cpu_pct_delta")
    row(f"stats sampler at 1 Hz, {s.get('containers', 10)} running containers: CPU (% of one core); "
        "dockerd CPU delta", "≤ 1%; dockerd +≤ 5%",
        {"ModelDeck": "—" if cpu is None else f"{cpu:.2f}%; dockerd {dd:+.2f}%" if dd is not None
         else f"{cpu:.2f}%; dockerd not found"},
        "" if not s else f"dockerd baseline {_f(s.get('dockerd_cpu_pct_baseline'))}%, during "
        f"{_f(s.get('dockerd_cpu_pct_during'))}%", None if cpu is None else (cpu, dd),
        None if cpu is None or dd is None else (cpu <= 1.0 and dd <= 5.0), "sampler")

    rs = r.get("rss") or {}
    idle, after = rs.get("idle_mb"), rs.get("after_mb")
    growth = (after - idle) / idle * 100 if idle and after else None
    row(f"backend RSS idle / after {rs.get('requests', 10000):,} proxied requests (MB); growth",
        "≤ 120 MB; growth ≤ 10%",
        {"ModelDeck": "—" if idle is None else f"{idle:.1f} / {_f(after, 1)} (+{_f(growth, 1)}%)",
         **{t: "—" if rs.get(f"{t}_mb") is None else f"{rs[f'{t}_mb']:.1f} (after the run)"
            for t in ("direct", "nginx", "LiteLLM")}},
        "", None if idle is None else (idle, after),
        None if growth is None else (idle <= 120 and growth <= 10), "rss")

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
         "≤ 50 ms", 50.0),
        ("rss_mb", "desktop RSS after that run (MB)", "≤ 250 MB", 250.0),
        ("suites_worst_stall_ms", "desktop: worst GUI-thread stall while 400 suite cells stream into the Suites "
         "grid (ms)", "≤ 50 ms", 50.0),
    ):
        v = d.get(key)
        row(figure, goal, {"ModelDeck": _f(v, 3 if key.endswith("_s") else 1) if v is not None
                           else d.get("why", "not measured")},
            d.get(f"{key}_note", ""), v, _le(v, limit), f"desktop_{key}")
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

"""One run's results as a grid: cases (× repetitions) down, deployment × parameter set across; filters and summaries."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass

PREVIEW_CHARS = 80


@dataclass(frozen=True)
class Column:
    """One column of the grid: a deployment with one parameter set (of one run, when comparing two)."""

    key: str  # the run's column key "<deployment>|<label>", prefixed "A:"/"B:" when two runs are merged
    deployment: str
    label: str
    run: str = ""  # "" for a single run, "A"/"B" in a comparison

    @property
    def title(self) -> str:
        head = f"{self.run}: " if self.run else ""
        return f"{head}{self.deployment}\n{self.label}"


@dataclass(frozen=True)
class Row:
    case_id: str
    repetition: int
    preview: str



@dataclass(frozen=True)
class Filter:
    """Which rows show: only failed checks, only errors, and/or only one deployment's columns ('' all)."""

    failed: bool = False
    errors: bool = False
    model: str = ""


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0..100), as the backend's run summary computes it; None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(1, math.ceil(len(s) * q / 100)) - 1]


class RunResults:
    """The cells of one run (or two merged), addressable by grid position; updated cell by cell.

    ``apply_cell`` stores a Cell JSON and returns its (row, column) index, so a view repaints
    one cell instead of the grid.
    """

    def __init__(self, detail: dict | None = None, run_tag: str = ""):
        self.run: dict = {}
        self.provenance: dict = {}
        self.columns: list[Column] = []
        self.rows: list[Row] = []
        self._server: dict[str, dict] = {}  # column key (tagged) → the backend's ColumnSummary
        self._col_index: dict[str, int] = {}
        self._row_index: dict[tuple[str, int], int] = {}
        self._cells: dict[tuple[int, int], dict] = {}
        self._by_id: dict[tuple[str, int], tuple[int, int]] = {}
        self._previews: dict[str, str] = {}
        self._reps: set[int] = set()
        if detail:
            self.load(detail, run_tag)

    # -- building ---------------------------------------------------------------------

    def load(self, detail: dict, run_tag: str = "") -> None:
        """Add a GET /api/runs/{id} answer (``run_tag`` "A"/"B" when comparing two runs)."""
        if not self.run:
            self.run = detail.get("run") or {}
            self.provenance = detail.get("provenance") or {}
        self.set_server_summary(detail.get("summary") or {}, run_tag)
        for col in detail.get("columns") or []:
            ps = col.get("parameter_set") or {}
            key = f"{run_tag}:{col['key']}" if run_tag else col["key"]
            if key not in self._col_index:
                self._col_index[key] = len(self.columns)
                self.columns.append(Column(key, col.get("deployment") or col["key"].split("|")[0],
                                           ps.get("label") or col["key"].split("|")[-1], run_tag))
        # Every cell of a run is listed from its start (pending ones too): the repetitions are those seen,
        # numbered as the backend numbers them; a run without cells yet gets one row per case.
        reps = sorted({int(c.get("repetition") or 0) for c in detail.get("cells") or []})
        self._reps.update(reps)
        for case in detail.get("cases") or []:
            self._previews.setdefault(case["id"], case.get("preview") or "")
            for rep in reps or [min(self._reps, default=1)]:
                self._ensure_row(case["id"], rep)
        for cell in detail.get("cells") or []:
            self.apply_cell(cell, run_tag)

    def _ensure_row(self, case_id: str, rep: int) -> int:
        key = (case_id, rep)
        if key not in self._row_index:
            self._row_index[key] = len(self.rows)
            self.rows.append(Row(case_id, rep, self._previews.get(case_id, "")))
        return self._row_index[key]

    def apply_cell(self, cell: dict, run_tag: str = "") -> tuple[int, int] | None:
        """Store one Cell JSON (new or updated); its (row, column), or None for an unknown column."""
        key = f"{run_tag}:{cell.get('column')}" if run_tag else cell.get("column")
        col = self._col_index.get(key)
        if col is None:
            return None
        rep = int(cell.get("repetition") or 0)
        self._reps.add(rep)
        row = self._ensure_row(cell.get("case_id", ""), rep)
        stored = {**cell, "_run": run_tag}
        self._cells[(row, col)] = stored
        if cell.get("id") is not None:
            self._by_id[(run_tag, cell["id"])] = (row, col)
        return row, col

    def set_server_summary(self, summary: dict, run_tag: str = "") -> None:
        """The backend's per-column summaries (GET /api/runs/{id}'s ``summary``)."""
        for key, value in summary.items():
            if isinstance(value, dict):
                self._server[f"{run_tag}:{key}" if run_tag else key] = value

    def update_run(self, summary: dict) -> None:
        """A RunSummary from a progress or end event."""
        if summary.get("id") == self.run.get("id") or not self.run:
            self.run = summary

    # -- reading ----------------------------------------------------------------------

    def row_title(self, row: int) -> str:
        """The case id, and the repetition's number when the run repeats cases."""
        r = self.rows[row]
        return f"{r.case_id} #{r.repetition}" if len(self._reps) > 1 else r.case_id

    def cell(self, row: int, col: int) -> dict | None:
        return self._cells.get((row, col))

    def position(self, cell_id: int, run_tag: str = "") -> tuple[int, int] | None:
        return self._by_id.get((run_tag, cell_id))

    def finished_count(self) -> int:
        return sum(1 for c in self._cells.values() if c.get("status") in ("done", "error", "cancelled"))

    def models(self) -> list[str]:
        return sorted({c.deployment for c in self.columns})

    def visible_columns(self, flt: Filter) -> list[int]:
        return [i for i, c in enumerate(self.columns) if not flt.model or c.deployment == flt.model]

    def visible_rows(self, flt: Filter) -> list[int]:
        """Rows with at least one shown cell that fails its checks / has an error, as the filter asks."""
        if not (flt.failed or flt.errors):
            return list(range(len(self.rows)))
        cols = self.visible_columns(flt)
        shown = []
        for r in range(len(self.rows)):
            for c in cols:
                cell = self._cells.get((r, c))
                if cell is None:
                    continue
                if (flt.failed and cell.get("passed") is False) or (flt.errors and cell.get("status") == "error"):
                    shown.append(r)
                    break
        return shown

    def column_cells(self, col: int) -> list[dict]:
        return [cell for (r, c), cell in self._cells.items() if c == col]

    def summary(self, col: int) -> dict:
        """A ColumnSummary for one column: the backend's while it covers every finished cell held, else
        computed from the cells held now (live while a run streams), with the backend's last total time
        (a wall-clock span the cells alone do not tell)."""
        local = self._local_summary(col)
        server = self._server.get(self.columns[col].key)
        if server and server.get("done") == local["done"] and server.get("errors") == local["errors"]:
            return {**local, **server}
        local["total_s"] = server.get("total_s") if server else None
        return local

    def _local_summary(self, col: int) -> dict:
        cells = self.column_cells(col)
        done = [c for c in cells if c.get("status") == "done"]
        results = [r for c in done for r in (c.get("checks") or [])]
        passed = sum(1 for r in results if r.get("passed"))
        ttft = [v for c in done if (v := _num(c.get("ttft_s"))) is not None]
        latency = [v for c in done if (v := _num(c.get("duration_s"))) is not None]
        tps = [v for c in done if (v := _num(c.get("tokens_per_s"))) is not None]
        return {"cells": len(self.rows), "done": len(done),
                "errors": sum(1 for c in cells if c.get("status") == "error"),
                "checks_passed": passed, "checks_total": len(results),
                "pass_rate": passed / len(results) if results else None,
                "ttft_p50": statistics.median(ttft) if ttft else None, "ttft_p95": percentile(ttft, 95),
                "latency_p50": statistics.median(latency) if latency else None,
                "latency_p95": percentile(latency, 95),
                "tokens_per_s_median": statistics.median(tps) if tps else None, "total_s": None}

    # -- charts -----------------------------------------------------------------------

    def per_model(self, field: str, summary: Callable[[int], dict] | None = None) -> list[tuple[str, float]]:
        """Median of a summary field ('tokens_per_s_median', 'latency_p50') per deployment, over its columns.

        ``summary`` gives a column's summary (a cache of ``self.summary``, say).
        """
        summary = summary or self.summary
        out = []
        for model in self.models():
            values = [v for i, c in enumerate(self.columns) if c.deployment == model
                      if (v := summary(i).get(field)) is not None]
            if values:
                out.append((model, statistics.median(values)))
        return out

    def pass_rate_per_parameter_set(self, summary: Callable[[int], dict] | None = None) -> list[tuple[str, float]]:
        """Share of passed checks per parameter-set label, over every deployment."""
        summary = summary or self.summary
        totals: dict[str, list[int]] = {}
        for i, col in enumerate(self.columns):
            s = summary(i)
            t = totals.setdefault(f"{col.run + ': ' if col.run else ''}{col.label}", [0, 0])
            t[0] += s["checks_passed"]
            t[1] += s["checks_total"]
        return [(label, p / n) for label, (p, n) in totals.items() if n]


def merge_runs(first: dict, second: dict) -> RunResults:
    """Two runs of one suite side by side: the columns of the first ("A") then of the second ("B")."""
    results = RunResults()
    results.load(first, "A")
    results.load(second, "B")
    return results


# -- text -------------------------------------------------------------------------------

_MARKUP = re.compile(r"\*\*|__|`+|^\s{0,3}#{1,6}\s+", re.MULTILINE)


def preview(text: str | None, limit: int = PREVIEW_CHARS) -> str:
    """The start of an answer on one line, without Markdown's emphasis, code and heading marks."""
    flat = " ".join(_MARKUP.sub("", text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def fmt_s(v) -> str:
    v = _num(v)
    if v is None:
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def figures(cell: dict, compact: bool = False) -> str:
    """'TTFT 120 ms · 42 tok · 35.1 tok/s' for a finished cell ('35 tok/s' when ``compact``)."""
    parts = [f"TTFT {fmt_s(cell.get('ttft_s'))}"]
    if (n := cell.get("completion_tokens")) is not None:
        parts.append(f"{n} tok")
    if (tps := _num(cell.get("tokens_per_s"))) is not None:
        parts.append(f"{tps:.0f} tok/s" if compact and tps >= 10 else f"{tps:.1f} tok/s")
    return " · ".join(parts)


def mark(cell: dict | None) -> str:
    """The cell's verdict: 'pending', 'error', 'cancelled', 'pass', 'fail' or 'done' (no checks)."""
    if cell is None or cell.get("status") in (None, "pending"):
        return "pending"
    if cell.get("status") in ("error", "cancelled"):
        return cell["status"]
    passed = cell.get("passed")
    return "done" if passed is None else ("pass" if passed else "fail")


MARK_SYMBOL = {"pass": "✓", "fail": "✗", "error": "⚠", "cancelled": "–", "pending": "…", "done": ""}


def cell_text(cell: dict | None) -> str:
    """What a grid cell shows: the verdict and figures on the first line, then the start of the answer."""
    m = mark(cell)
    if m == "pending":
        return "…"
    if m == "error":
        return f"⚠ error\n{preview(cell.get('error') or 'unknown', 120)}"
    if m == "cancelled":
        return "– cancelled"
    results = cell.get("checks") or []
    head = MARK_SYMBOL[m]
    if results:
        head += f"{sum(1 for r in results if r.get('passed'))}/{len(results)}  "
    stars = f" · ★{cell['rating']}" if cell.get("rating") else ""
    return f"{head}{figures(cell, compact=True)}{stars}\n{preview(cell.get('text'), 120)}"


def summary_text(s: dict) -> str:
    """A column summary in four short lines (pass rate, TTFT, latency, throughput/total/errors)."""
    rate = s.get("pass_rate")
    rate_text = f"{rate * 100:.0f} % ({s.get('checks_passed', 0)}/{s.get('checks_total', 0)})" if rate is not None \
        else "no checks"
    tps = _num(s.get("tokens_per_s_median"))
    return (f"pass {rate_text}\n"
            f"TTFT p50 {fmt_s(s.get('ttft_p50'))} · p95 {fmt_s(s.get('ttft_p95'))}\n"
            f"latency p50 {fmt_s(s.get('latency_p50'))} · p95 {fmt_s(s.get('latency_p95'))}\n"
            f"{'–' if tps is None else f'{tps:.1f}'} tok/s · total {fmt_s(s.get('total_s'))} · "
            f"{s.get('errors', 0)} err")


def checks_markdown(cell: dict) -> str:
    """The check results of a cell as a Markdown list."""
    lines = []
    for r in cell.get("checks") or []:
        sym = "✓" if r.get("passed") else "✗"
        detail = f" — {r['detail']}" if r.get("detail") else ""
        lines.append(f"- {sym} **{r.get('kind', '?')}**{detail}")
    return "\n".join(lines) if lines else "_No checks for this case._"

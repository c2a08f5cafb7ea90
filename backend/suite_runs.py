"""Runs of prompt suites: the request, cells and summaries, and their SQLite store (``<home>/suites.db``).

A run is every (case, column, repetition) of one suite, where a column is one deployment with one
parameter set. All cells are written as ``pending`` when the run is made, and each is written again
the moment it finishes, so a backend killed mid-run loses only the answers in flight; the runner
(``backend/suite_runner.py``) resumes the pending ones on the next start.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import sqlite3
import statistics
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from backend.errors import ModelDeckError
from backend.suites import Case

RunStatus = Literal["queued", "running", "completed", "cancelled", "failed", "interrupted"]
CellStatus = Literal["pending", "done", "error", "cancelled"]
#: Statuses of a run that still has work: resumed when the backend starts.
UNFINISHED = ("queued", "running", "interrupted")
FINISHED_CELLS = ("done", "error", "cancelled")
#: The most cells one run may have (cases × deployments × parameter sets × repetitions).
MAX_CELLS = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id          TEXT PRIMARY KEY,
    suite_id    TEXT NOT NULL,
    suite_name  TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    finished_at TEXT,
    rerun_of    TEXT,
    request     TEXT NOT NULL,   -- JSON: the RunRequest
    suite       TEXT NOT NULL,   -- JSON: the suite as it was when the run was made (cases, checks)
    provenance  TEXT NOT NULL    -- JSON: what produced the answers
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite_id, created_at);
CREATE TABLE IF NOT EXISTS run_columns (
    run_id        TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    key           TEXT NOT NULL,
    deployment    TEXT NOT NULL,
    parameter_set TEXT NOT NULL,  -- JSON: the ParameterSet
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS cells (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    case_id           TEXT NOT NULL,
    case_position     INTEGER NOT NULL,
    column_key        TEXT NOT NULL,
    repetition        INTEGER NOT NULL,
    status            TEXT NOT NULL,
    text              TEXT NOT NULL DEFAULT '',
    ttft_s            REAL,
    duration_s        REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    tokens_per_s      REAL,
    finish_reason     TEXT,
    error             TEXT,
    checks            TEXT NOT NULL DEFAULT '[]',
    passed            INTEGER,
    rating            INTEGER,
    note              TEXT NOT NULL DEFAULT '',
    started_at        REAL,
    finished_at       REAL
);
CREATE INDEX IF NOT EXISTS cells_by_run ON cells (run_id, status);
CREATE TABLE IF NOT EXISTS file_digests (
    path     TEXT PRIMARY KEY,
    mtime_ns INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    sha256   TEXT NOT NULL
);
"""


class RunNotFound(ModelDeckError):
    """No run has this id (deleted, or never made)."""

    status = 404
    code = "run_not_found"


class CellNotFound(ModelDeckError):
    status = 404
    code = "cell_not_found"


class InvalidRun(ModelDeckError):
    """A run request names something that cannot run (a deployment twice, two parameter sets with one label)."""

    status = 422
    code = "invalid_run"


# --------------------------------------------------------------------------- request and answers


class ParameterSet(BaseModel):
    """The sampling parameters of one column; a field left empty is the model server's default."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[^|\n]+$",
                       description="Names the column (with the deployment); no '|'.")
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=131072)
    seed: int | None = None

    def body(self) -> dict[str, Any]:
        """The request fields this set adds to a chat completion."""
        return {k: v for k, v in self.model_dump(exclude={"label"}).items() if v is not None}


class RunRequest(BaseModel):
    """What to run a suite on: deployments × parameter sets, each case ``repetitions`` times."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[str] = Field(min_length=1, max_length=8, examples=[["demo"]],
                                   description="Served model names (what /v1/models lists).")
    parameter_sets: list[ParameterSet] = Field(default_factory=lambda: [ParameterSet()], min_length=1, max_length=8)
    repetitions: int = Field(default=1, ge=1, le=20)
    concurrency: int = Field(default=2, ge=1, le=16, description="Requests in flight per deployment at most.")

    @field_validator("deployments")
    @classmethod
    def _distinct_deployments(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or "|" in name or len(name) > 256:
                raise ValueError(f"{name!r} is not a served model name")
        if len(set(v)) != len(v):
            raise ValueError("a deployment is named twice; name each once")
        return v

    @field_validator("parameter_sets")
    @classmethod
    def _distinct_labels(cls, v: list[ParameterSet]) -> list[ParameterSet]:
        labels = [p.label for p in v]
        if len(set(labels)) != len(labels):
            raise ValueError("two parameter sets have the same label; give each its own")
        return v

    def columns(self) -> list[tuple[str, str, ParameterSet]]:
        """(key, deployment, parameter set) of every column, deployments first."""
        return [(f"{d}|{p.label}", d, p) for d in self.deployments for p in self.parameter_sets]


class RunSummary(BaseModel):
    id: str
    suite_id: str
    suite_name: str
    status: RunStatus
    created_at: str
    finished_at: str | None = None
    total: int
    done: int
    errors: int
    rerun_of: str | None = None


class CheckOutcome(BaseModel):
    """A check's result as stored with a cell (``backend.checks.CheckResult``'s fields)."""

    kind: str
    passed: bool
    detail: str = ""


class Cell(BaseModel):
    id: int
    case_id: str
    column: str
    repetition: int
    status: CellStatus
    text: str = ""
    ttft_s: float | None = None
    duration_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    checks: list[CheckOutcome] = Field(default_factory=list)
    passed: bool | None = None
    rating: int | None = None
    note: str = ""


class CellResult(BaseModel):
    """What the runner writes for a finished cell."""

    status: CellStatus
    text: str = ""
    ttft_s: float | None = None
    duration_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    checks: list[CheckOutcome] = Field(default_factory=list)
    passed: bool | None = None
    started_at: float | None = None
    finished_at: float | None = None


class CellEdit(BaseModel):
    """A person's rating (1–5, or null to clear) and note on a cell; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    rating: int | None = Field(default=None, ge=1, le=5)
    note: str | None = Field(default=None, max_length=20000)


class ColumnSummary(BaseModel):
    cells: int
    done: int
    errors: int
    checks_passed: int
    checks_total: int
    pass_rate: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    latency_p50: float | None
    latency_p95: float | None
    tokens_per_s_median: float | None
    total_s: float | None


class Column(BaseModel):
    key: str
    deployment: str
    parameter_set: ParameterSet


class CasePreview(BaseModel):
    id: str
    preview: str


class RunDetail(BaseModel):
    run: RunSummary
    provenance: dict[str, Any]
    columns: list[Column]
    cases: list[CasePreview]
    cells: list[Cell]
    summary: dict[str, ColumnSummary]


class PendingCell(BaseModel):
    """A cell the runner still has to answer."""

    id: int
    case_id: str
    case_position: int
    column: str
    repetition: int


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile (``pct`` in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil
    return ordered[int(rank) - 1]


def summarise(cells: list[Cell], times: dict[int, tuple[float | None, float | None]]) -> ColumnSummary:
    """The figures of one column over its cells.

    Args:
        cells: the column's cells.
        times: cell id → (started_at, finished_at), wall clock; total_s spans the first start to the last finish.
    """
    done = [c for c in cells if c.status == "done"]
    checks = [r for c in done for r in c.checks]
    passed = sum(r.passed for r in checks)
    starts = [times[c.id][0] for c in cells if c.id in times and times[c.id][0] is not None]
    ends = [times[c.id][1] for c in cells if c.id in times and times[c.id][1] is not None]
    ttfts = [c.ttft_s for c in done if c.ttft_s is not None]
    latencies = [c.duration_s for c in done if c.duration_s is not None]
    rates = [c.tokens_per_s for c in done if c.tokens_per_s is not None]
    return ColumnSummary(
        cells=len(cells), done=len(done), errors=sum(c.status == "error" for c in cells),
        checks_passed=passed, checks_total=len(checks), pass_rate=passed / len(checks) if checks else None,
        ttft_p50=statistics.median(ttfts) if ttfts else None, ttft_p95=_percentile(ttfts, 95),
        latency_p50=statistics.median(latencies) if latencies else None, latency_p95=_percentile(latencies, 95),
        tokens_per_s_median=statistics.median(rates) if rates else None,
        total_s=max(ends) - min(starts) if starts and ends else None)


# --------------------------------------------------------------------------- the store

_CELL_COLUMNS = ("id, case_id, column_key, repetition, status, text, ttft_s, duration_s, prompt_tokens, "
                 "completion_tokens, tokens_per_s, finish_reason, error, checks, passed, rating, note")


def _cell(row: sqlite3.Row) -> Cell:
    return Cell(id=row["id"], case_id=row["case_id"], column=row["column_key"], repetition=row["repetition"],
                status=row["status"], text=row["text"], ttft_s=row["ttft_s"], duration_s=row["duration_s"],
                prompt_tokens=row["prompt_tokens"], completion_tokens=row["completion_tokens"],
                tokens_per_s=row["tokens_per_s"], finish_reason=row["finish_reason"], error=row["error"],
                checks=json.loads(row["checks"]), passed=None if row["passed"] is None else bool(row["passed"]),
                rating=row["rating"], note=row["note"])


class RunStore:
    """Runs, their columns and cells in ``suites.db`` (the file ``backend.suites.SuiteStore`` opens too).

    Thread-safe: one connection behind a lock; every method blocks, so async code calls it in a thread.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():  # prompts and answers are private: owner-only
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- making and reading runs --------------------------------------------------------

    def create(self, suite: dict, request: RunRequest, provenance: dict, rerun_of: str | None = None) -> RunSummary:
        """Store a new run (status ``queued``) with every cell ``pending``.

        Args:
            suite: the suite as a dict (``Suite.model_dump()``), kept with the run so that it runs,
                resumes and reruns the cases it was made with.

        Raises:
            InvalidRun: the run would have more than MAX_CELLS cells.
        """
        columns = request.columns()
        cells = len(suite["cases"]) * len(columns) * request.repetitions
        if cells > MAX_CELLS:
            raise InvalidRun(f"This run would have {cells} cells ({len(suite['cases'])} cases × {len(columns)} columns × "
                             f"{request.repetitions} repetitions); a run has at most {MAX_CELLS}.",
                             hint="Use fewer repetitions, parameter sets or deployments, or split the suite.")
        run_id = f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        created = now_iso()
        rows = [(run_id, case["id"], position, key, rep)
                for position, case in enumerate(suite["cases"]) for key, _, _ in columns
                for rep in range(1, request.repetitions + 1)]
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.execute(
                    "INSERT INTO runs (id, suite_id, suite_name, status, created_at, rerun_of, request, suite, "
                    "provenance) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (run_id, suite["id"], suite["name"], created, rerun_of, request.model_dump_json(),
                     json.dumps(suite), json.dumps(provenance)))
                self._conn.executemany(
                    "INSERT INTO run_columns (run_id, position, key, deployment, parameter_set) VALUES (?, ?, ?, ?, ?)",
                    [(run_id, i, key, dep, p.model_dump_json()) for i, (key, dep, p) in enumerate(columns)])
                self._conn.executemany(
                    "INSERT INTO cells (run_id, case_id, case_position, column_key, repetition, status) "
                    "VALUES (?, ?, ?, ?, ?, 'pending')", rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return self.summary(run_id)

    def _run_row(self, run_id: str) -> sqlite3.Row:
        row = self._conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"No run '{run_id}'.", hint="GET /api/runs lists the runs there are.")
        return row

    def _summary(self, row: sqlite3.Row) -> RunSummary:
        counts = dict(self._conn.execute("SELECT status, count(*) FROM cells WHERE run_id = ? GROUP BY status",
                                         (row["id"],)).fetchall())
        return RunSummary(id=row["id"], suite_id=row["suite_id"], suite_name=row["suite_name"], status=row["status"],
                          created_at=row["created_at"], finished_at=row["finished_at"], total=sum(counts.values()),
                          done=sum(counts.get(s, 0) for s in FINISHED_CELLS), errors=counts.get("error", 0),
                          rerun_of=row["rerun_of"])

    def summary(self, run_id: str) -> RunSummary:
        with self._lock:
            return self._summary(self._run_row(run_id))

    def list(self, suite_id: str | None = None) -> list[RunSummary]:
        """Runs, newest first (of one suite when ``suite_id`` is given)."""
        with self._lock:
            if suite_id is None:
                rows = self._conn.execute("SELECT * FROM runs ORDER BY created_at DESC, rowid DESC").fetchall()
            else:
                rows = self._conn.execute("SELECT * FROM runs WHERE suite_id = ? ORDER BY created_at DESC, rowid DESC",
                                          (suite_id,)).fetchall()
            return [self._summary(r) for r in rows]

    def unfinished(self) -> list[str]:
        """Ids of runs a stopped backend left with work to do, oldest first."""
        with self._lock:
            marks = ",".join("?" * len(UNFINISHED))
            return [r[0] for r in self._conn.execute(
                f"SELECT id FROM runs WHERE status IN ({marks}) ORDER BY created_at, rowid", UNFINISHED)]

    def running_suite_ids(self) -> set[str]:
        with self._lock:
            marks = ",".join("?" * len(UNFINISHED))
            return {r[0] for r in self._conn.execute(f"SELECT suite_id FROM runs WHERE status IN ({marks})", UNFINISHED)}

    def config(self, run_id: str) -> tuple[dict, RunRequest, dict]:
        """(suite, request, provenance) the run was made with."""
        with self._lock:
            row = self._run_row(run_id)
        return json.loads(row["suite"]), RunRequest.model_validate_json(row["request"]), json.loads(row["provenance"])

    def columns(self, run_id: str) -> list[Column]:
        with self._lock:
            rows = self._conn.execute("SELECT key, deployment, parameter_set FROM run_columns WHERE run_id = ? "
                                      "ORDER BY position", (run_id,)).fetchall()
        return [Column(key=r["key"], deployment=r["deployment"], parameter_set=ParameterSet.model_validate_json(
            r["parameter_set"])) for r in rows]

    def pending(self, run_id: str) -> list[PendingCell]:
        """The cells still to answer, in case order."""
        with self._lock:
            rows = self._conn.execute("SELECT id, case_id, case_position, column_key, repetition FROM cells "
                                      "WHERE run_id = ? AND status = 'pending' ORDER BY case_position, id",
                                      (run_id,)).fetchall()
        return [PendingCell(id=r["id"], case_id=r["case_id"], case_position=r["case_position"], column=r["column_key"],
                            repetition=r["repetition"]) for r in rows]

    def cells(self, run_id: str) -> tuple[list[Cell], dict[int, tuple[float | None, float | None]]]:
        """Every cell of the run in case order, and each one's (started_at, finished_at)."""
        with self._lock:
            self._run_row(run_id)
            rows = self._conn.execute(f"SELECT {_CELL_COLUMNS}, started_at, finished_at FROM cells WHERE run_id = ? "
                                      "ORDER BY case_position, id", (run_id,)).fetchall()
        return [_cell(r) for r in rows], {r["id"]: (r["started_at"], r["finished_at"]) for r in rows}

    def detail(self, run_id: str) -> RunDetail:
        """Everything about a run: summary, provenance, columns, cases, cells and per-column figures."""
        suite, _, provenance = self.config(run_id)
        summary = self.summary(run_id)
        columns = self.columns(run_id)
        cells, times = self.cells(run_id)
        by_column: dict[str, list[Cell]] = {c.key: [] for c in columns}
        for cell in cells:
            by_column.setdefault(cell.column, []).append(cell)
        cases = [CasePreview(id=c["id"], preview=Case.model_validate(c).preview()) for c in suite["cases"]]
        return RunDetail(run=summary, provenance=provenance, columns=columns, cases=cases, cells=cells,
                         summary={k: summarise(v, times) for k, v in by_column.items()})

    # -- changing runs ---------------------------------------------------------------------

    def set_status(self, run_id: str, status: RunStatus, *, finished: bool = False) -> RunSummary:
        with self._lock:
            self._run_row(run_id)
            self._conn.execute("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?",
                               (status, now_iso() if finished else None, run_id))
            return self._summary(self._run_row(run_id))

    def finish_cell(self, run_id: str, cell_id: int, result: CellResult) -> Cell:
        """Write a finished cell (one small transaction: a kill loses nothing written before it)."""
        with self._lock:
            self._conn.execute(
                "UPDATE cells SET status = ?, text = ?, ttft_s = ?, duration_s = ?, prompt_tokens = ?, "
                "completion_tokens = ?, tokens_per_s = ?, finish_reason = ?, error = ?, checks = ?, passed = ?, "
                "started_at = ?, finished_at = ? WHERE id = ? AND run_id = ?",
                (result.status, result.text, result.ttft_s, result.duration_s, result.prompt_tokens,
                 result.completion_tokens, result.tokens_per_s, result.finish_reason, result.error,
                 json.dumps([c.model_dump() for c in result.checks]),
                 None if result.passed is None else int(result.passed), result.started_at, result.finished_at,
                 cell_id, run_id))
            return self._get_cell(run_id, cell_id)

    def cancel_pending(self, run_id: str) -> int:
        """Mark every pending cell cancelled; how many there were."""
        with self._lock:
            return self._conn.execute("UPDATE cells SET status = 'cancelled', finished_at = ? "
                                      "WHERE run_id = ? AND status = 'pending'", (time.time(), run_id)).rowcount

    def _get_cell(self, run_id: str, cell_id: int) -> Cell:
        row = self._conn.execute(f"SELECT {_CELL_COLUMNS} FROM cells WHERE id = ? AND run_id = ?",
                                 (cell_id, run_id)).fetchone()
        if row is None:
            self._run_row(run_id)
            raise CellNotFound(f"Run '{run_id}' has no cell {cell_id}.", hint="GET /api/runs/{id} lists its cells.")
        return _cell(row)

    def edit_cell(self, run_id: str, cell_id: int, edit: CellEdit) -> Cell:
        """Set the rating and/or note a person gave a cell (fields the edit leaves out stay)."""
        fields = edit.model_dump(exclude_unset=True)
        with self._lock:
            self._get_cell(run_id, cell_id)
            if "rating" in fields:
                self._conn.execute("UPDATE cells SET rating = ? WHERE id = ?", (fields["rating"], cell_id))
            if fields.get("note") is not None:
                self._conn.execute("UPDATE cells SET note = ? WHERE id = ?", (fields["note"], cell_id))
            return self._get_cell(run_id, cell_id)

    def delete(self, run_id: str) -> None:
        with self._lock:
            self._run_row(run_id)
            self._conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- digests of local model files ------------------------------------------------------

    def cached_digest(self, path: str, mtime_ns: int, size: int) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT sha256 FROM file_digests WHERE path = ? AND mtime_ns = ? AND size = ?",
                                     (path, mtime_ns, size)).fetchone()
        return row[0] if row else None

    def store_digest(self, path: str, mtime_ns: int, size: int, sha256: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO file_digests (path, mtime_ns, size, sha256) VALUES (?, ?, ?, ?)",
                               (path, mtime_ns, size, sha256))


# --------------------------------------------------------------------------- export

EXPORT_FIELDS = ("case_id", "deployment", "parameter_set", "repetition", "status", "text", "ttft_s", "duration_s",
                 "prompt_tokens", "completion_tokens", "tokens_per_s", "finish_reason", "error", "passed", "checks",
                 "rating", "note", "cell_id")


def _rows(detail: RunDetail) -> list[dict[str, Any]]:
    columns = {c.key: c for c in detail.columns}
    rows = []
    for cell in detail.cells:
        col = columns.get(cell.column)
        rows.append({"case_id": cell.case_id, "deployment": col.deployment if col else cell.column.split("|")[0],
                     "parameter_set": col.parameter_set.label if col else cell.column.split("|")[-1],
                     "repetition": cell.repetition, "status": cell.status, "text": cell.text, "ttft_s": cell.ttft_s,
                     "duration_s": cell.duration_s, "prompt_tokens": cell.prompt_tokens,
                     "completion_tokens": cell.completion_tokens, "tokens_per_s": cell.tokens_per_s,
                     "finish_reason": cell.finish_reason, "error": cell.error, "passed": cell.passed,
                     "checks": [c.model_dump() for c in cell.checks], "rating": cell.rating, "note": cell.note,
                     "cell_id": cell.id})
    return rows


def export_csv(detail: RunDetail) -> str:
    """One line per cell; ``checks`` is a JSON array, empty fields are empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in _rows(detail):
        writer.writerow({k: json.dumps(v) if k == "checks" else ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def export_jsonl(detail: RunDetail) -> str:
    """One JSON object per cell, with the column's parameter set whole."""
    columns = {c.key: c for c in detail.columns}
    lines = []
    for row in _rows(detail):
        col = columns.get(f"{row['deployment']}|{row['parameter_set']}")
        lines.append(json.dumps({**row, "run_id": detail.run.id,
                                 "parameters": col.parameter_set.model_dump() if col else None}, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def _md(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def export_md(detail: RunDetail) -> str:
    """A Markdown report: the run, what produced it, each column's figures, then every cell."""
    run = detail.run
    lines = [f"# {run.suite_name}: run {run.id}", "",
             f"Status {run.status}; {run.done}/{run.total} cells, {run.errors} errors; made {run.created_at}"
             + (f", finished {run.finished_at}" if run.finished_at else "")
             + (f"; a rerun of {run.rerun_of}" if run.rerun_of else "") + ".", "",
             "## Columns", "",
             "| column | pass rate | TTFT p50 | TTFT p95 | latency p50 | latency p95 | tok/s median | total s | errors |",
             "|---|---|---|---|---|---|---|---|---|"]
    for col in detail.columns:
        s = detail.summary.get(col.key)
        if s is None:
            continue
        rate = f"{s.pass_rate:.0%} ({s.checks_passed}/{s.checks_total})" if s.pass_rate is not None else ""
        lines.append("| " + " | ".join([_md(col.key), rate, _md(s.ttft_p50), _md(s.ttft_p95), _md(s.latency_p50),
                                        _md(s.latency_p95), _md(s.tokens_per_s_median), _md(s.total_s),
                                        str(s.errors)]) + " |")
    lines += ["", "## Provenance", "", "```json", json.dumps(detail.provenance, indent=2, sort_keys=True), "```", "",
              "## Cells", "",
              "| case | column | rep | status | passed | TTFT s | duration s | tokens | tok/s | finish | rating | note | answer |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cell in detail.cells:
        answer = cell.text if cell.status != "error" else f"error: {cell.error}"
        lines.append("| " + " | ".join([
            _md(cell.case_id), _md(cell.column), str(cell.repetition), cell.status,
            "" if cell.passed is None else ("yes" if cell.passed else "no"), _md(cell.ttft_s), _md(cell.duration_s),
            _md(cell.completion_tokens), _md(cell.tokens_per_s), _md(cell.finish_reason), _md(cell.rating),
            _md(cell.note), _md(answer)]) + " |")
    return "\n".join(lines) + "\n"


EXPORTERS = {"csv": (export_csv, "text/csv"), "jsonl": (export_jsonl, "application/x-ndjson"),
             "md": (export_md, "text/markdown")}

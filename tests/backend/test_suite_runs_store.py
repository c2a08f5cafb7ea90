"""The run store, column figures, exports and rerun differences, without a model (backend/suite_runs.py)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from backend.settings import Settings
from backend.suite_runner import SuiteRunner, differences
from backend.suite_runs import (
    CellEdit,
    CellNotFound,
    CellResult,
    CheckOutcome,
    InvalidRun,
    RunNotFound,
    RunRequest,
    RunStore,
    export_csv,
    export_jsonl,
    export_md,
)
from backend.suites import Suite, SuiteStore

SUITE = Suite(id="s1", name="Fables", checks=[{"kind": "max_length", "value": 1000}],
              cases=[{"prompt": "Tell me about the {{animal}}", "variables": {"animal": a}} for a in ("fox", "crow", "owl")])


def _store(tmp_path) -> RunStore:
    SuiteStore(tmp_path / "suites.db").close()  # the suites' tables beside the runs', as in the app
    return RunStore(tmp_path / "suites.db")


def _request(**more) -> RunRequest:
    return RunRequest(deployments=["a", "b"], parameter_sets=[{"label": "cold", "temperature": 0, "seed": 1},
                                                              {"label": "warm", "temperature": 0.7}], **more)


def test_a_run_is_stored_with_every_cell_pending(tmp_path) -> None:
    store = _store(tmp_path)
    summary = store.create(SUITE.model_dump(mode="json"), _request(repetitions=2), {"deployments": {}})
    assert (summary.status, summary.total, summary.done, summary.errors) == ("queued", 3 * 4 * 2, 0, 0)
    pending = store.pending(summary.id)
    assert len(pending) == 24 and [p.case_id for p in pending[:8]] == ["case-1"] * 8
    assert {p.column for p in pending} == {"a|cold", "a|warm", "b|cold", "b|warm"}
    assert [c.key for c in store.columns(summary.id)] == ["a|cold", "a|warm", "b|cold", "b|warm"]
    assert store.unfinished() == [summary.id]
    # Reopened (a restarted backend), the run and its cells are there.
    store.close()
    again = RunStore(tmp_path / "suites.db")
    assert again.summary(summary.id) == summary and len(again.pending(summary.id)) == 24


def test_finished_cells_figures_and_edits(tmp_path) -> None:
    store = _store(tmp_path)
    run_id = store.create(SUITE.model_dump(mode="json"), _request(), {"deployments": {}}).id
    pending = store.pending(run_id)
    for n, p in enumerate(pending):
        if p.column != "a|cold":
            continue
        store.finish_cell(run_id, p.id, CellResult(
            status="done", text=f"answer {n}", ttft_s=0.1 * (n + 1), duration_s=1.0 + n, completion_tokens=10,
            prompt_tokens=5, tokens_per_s=20.0 + n, finish_reason="stop", started_at=100.0 + n, finished_at=101.0 + 2 * n,
            checks=[CheckOutcome(kind="max_length", passed=n != 0, detail="")], passed=n != 0))
    errored = next(p for p in pending if p.column == "b|warm")
    store.finish_cell(run_id, errored.id, CellResult(status="error", error="HTTP 404: no model", duration_s=0.01,
                                                     started_at=100.0, finished_at=100.01))
    detail = store.detail(run_id)
    assert detail.run.done == 4 and detail.run.errors == 1
    a = detail.summary["a|cold"]
    assert (a.cells, a.done, a.errors, a.checks_total, a.checks_passed) == (3, 3, 0, 3, 2)
    assert a.pass_rate == pytest.approx(2 / 3)
    cold = [c for c in detail.cells if c.column == "a|cold"]
    ttfts = sorted(c.ttft_s for c in cold)
    assert a.ttft_p50 == pytest.approx(ttfts[1]) and a.ttft_p95 == pytest.approx(ttfts[2])
    assert a.total_s == pytest.approx(max(101.0 + 2 * n for n, p in enumerate(pending) if p.column == "a|cold") - 100.0)
    assert detail.summary["b|warm"].errors == 1 and detail.summary["b|warm"].pass_rate is None
    assert [c.preview for c in detail.cases] == ["Tell me about the fox", "Tell me about the crow", "Tell me about the owl"]

    cell = detail.cells[0]
    rated = store.edit_cell(run_id, cell.id, CellEdit(rating=4, note="clear"))
    assert (rated.rating, rated.note) == (4, "clear")
    assert store.edit_cell(run_id, cell.id, CellEdit.model_validate({"note": "clearer"})).rating == 4  # left out: kept
    assert store.edit_cell(run_id, cell.id, CellEdit.model_validate({"rating": None})).rating is None  # null clears
    with pytest.raises(CellNotFound):
        store.edit_cell(run_id, 10**9, CellEdit(rating=1))
    with pytest.raises(ValidationError):
        CellEdit(rating=6)

    assert store.cancel_pending(run_id) == 12 - 4
    assert store.detail(run_id).run.done == 12
    store.delete(run_id)
    with pytest.raises(RunNotFound):
        store.summary(run_id)
    with pytest.raises(RunNotFound):
        store.delete(run_id)


def test_exports_carry_every_cell(tmp_path) -> None:
    store = _store(tmp_path)
    run_id = store.create(SUITE.model_dump(mode="json"), _request(), {"deployments": {"a": {"image_digest": "sha256:1"}}}).id
    first = store.pending(run_id)[0]
    store.finish_cell(run_id, first.id, CellResult(status="done", text="a | b\nc", ttft_s=0.5, duration_s=1.5,
                                                   completion_tokens=3, tokens_per_s=2.0, finish_reason="stop",
                                                   checks=[CheckOutcome(kind="max_length", passed=True)], passed=True))
    store.edit_cell(run_id, first.id, CellEdit(rating=5, note="best"))
    detail = store.detail(run_id)
    rows = list(csv.DictReader(io.StringIO(export_csv(detail))))
    assert len(rows) == 12
    row = next(r for r in rows if r["cell_id"] == str(first.id))
    assert (row["text"], row["ttft_s"], row["rating"], row["note"], row["passed"]) == ("a | b\nc", "0.5", "5", "best", "True")
    assert json.loads(row["checks"]) == [{"kind": "max_length", "passed": True, "detail": ""}]
    assert (row["deployment"], row["parameter_set"]) == ("a", "cold")
    lines = [json.loads(line) for line in export_jsonl(detail).splitlines()]
    assert len(lines) == 12 and lines[0]["parameters"]["seed"] == 1 and lines[0]["run_id"] == run_id
    md = export_md(detail)
    assert "| a\\|cold |" in md and "a \\| b<br>c" in md and "sha256:1" in md
    assert md.count("\n| case-") == 12


def test_run_requests_refuse_what_cannot_run() -> None:
    with pytest.raises(ValidationError, match="named twice"):
        RunRequest(deployments=["a", "a"])
    with pytest.raises(ValidationError, match="same label"):
        RunRequest(deployments=["a"], parameter_sets=[{"label": "x"}, {"label": "x", "seed": 2}])
    with pytest.raises(ValidationError):
        RunRequest(deployments=["a"] * 0)
    with pytest.raises(ValidationError):
        RunRequest(deployments=[f"d{i}" for i in range(9)])
    with pytest.raises(ValidationError):
        RunRequest(deployments=["a"], repetitions=21)
    assert RunRequest(deployments=["a"]).parameter_sets[0].label == "default"


def test_differences_name_what_no_longer_matches() -> None:
    dep = {"recipe": "demo", "image": "x:1", "image_digest": "sha256:aaa", "model": "m", "revision": None,
           "args": ["--port", "8000"]}
    before = {"modeldeck_version": "0.1.0", "gpus": [], "deployments": {"a": dep, "b": dep, "c": {"missing": True}}}
    assert differences(before, before) == []
    now = {"modeldeck_version": "0.1.0", "gpus": [],
           "deployments": {"a": {**dep, "image_digest": "sha256:bbb", "revision": "sha256:r"}, "b": {"missing": True},
                           "c": dep}}
    assert differences(before, now) == ["a: image digest sha256:aaa → sha256:bbb", "a: revision (none) → sha256:r",
                                        "b: no longer deployed (launch it again, or its cells fail)",
                                        "c: was not deployed when the run was made, and is now"]


def test_revisions_come_from_the_hub_cache_or_the_file_itself(tmp_path) -> None:
    hf = tmp_path / "hf"
    refs = hf / "hub" / "models--Qwen--Qwen2.5-0.5B-Instruct" / "refs"
    refs.mkdir(parents=True)
    commit = "7ae557604adf67be50417f59c2c2f167def9a775"
    (refs / "main").write_text(commit)
    runner = SuiteRunner(_store(tmp_path), SimpleNamespace(settings=Settings(home=tmp_path, cache_dirs={
        "huggingface": hf})), "token", "127.0.0.1", 8765)
    assert runner._hub_revision("Qwen/Qwen2.5-0.5B-Instruct") == commit
    assert runner._hub_revision("Qwen/Other") is None and runner._hub_revision("/models/x.gguf") is None

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 100)
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert runner._file_digest(str(gguf)) == digest
    # Kept by path, modification time and size: a new runner (a restarted backend) reads it back.
    again = SuiteRunner(RunStore(tmp_path / "suites.db"), runner.deployments, "token", "127.0.0.1", 8765)
    assert again.store.cached_digest(str(gguf), gguf.stat().st_mtime_ns, gguf.stat().st_size) == digest
    gguf.write_bytes(b"GGUF changed")
    assert again._file_digest(str(gguf)) == "sha256:" + hashlib.sha256(b"GGUF changed").hexdigest()
    assert runner._file_digest("relative.gguf") is None and runner._file_digest(str(tmp_path / "none.gguf")) is None


def test_a_run_has_at_most_max_cells(tmp_path) -> None:
    store = _store(tmp_path)
    suite = Suite(name="big", cases=[{"prompt": f"p{i}"} for i in range(10000)]).model_dump(mode="json")
    request = RunRequest(deployments=[f"d{i}" for i in range(8)], parameter_sets=[{"label": "a"}, {"label": "b"}],
                         repetitions=1)
    with pytest.raises(InvalidRun, match="160000 cells .* at most 100000"):
        store.create(suite, request, {})
    assert store.list() == []  # nothing stored

"""The Suites page's Qt-free logic against the contract's JSON: case rows, run grids, filters, summaries, diffs."""

from __future__ import annotations

import pytest

from desktop.suites.cases import CaseRow, case_to_row, import_format, row_to_case, suite_body
from desktop.suites.diff import diff_html, diff_ops, similarity, tokens
from desktop.suites.results import (Filter, RunResults, cell_text, figures, mark, merge_runs, percentile, preview,
                                    summary_text)


def test_case_round_trip_prompt_and_messages():
    case = {"id": "capital", "prompt": "Capital of {{country}}?", "messages": None,
            "variables": {"country": "France"}, "system_prompt": None, "expected": "Paris",
            "checks": [{"kind": "contains", "value": "Paris", "ignore_case": True}]}
    back = row_to_case(case_to_row(case), 1)
    assert back == case
    chat = {"id": "chat", "prompt": None, "messages": [{"role": "user", "content": "Hi"}], "variables": {},
            "system_prompt": "Be brief", "expected": None, "checks": []}
    assert row_to_case(case_to_row(chat), 2) == chat


@pytest.mark.parametrize("row,needle", [
    (CaseRow(prompt=""), "prompt is empty"),
    (CaseRow(prompt="[{bad"), "messages are not JSON"),
    (CaseRow(prompt="x", variables="city=Paris"), "variables are not JSON"),
    (CaseRow(prompt="x", variables="[1]"), "must be a JSON object"),
    (CaseRow(prompt="x", checks='[{"kind": "sounds_right"}]'), "unknown check kind 'sounds_right'"),
    (CaseRow(prompt="x", checks="contains Paris"), "checks are not JSON"),
])
def test_bad_cells_are_named(row, needle):
    with pytest.raises(ValueError, match=needle) as info:
        row_to_case(row, 3)
    assert "case 3" in str(info.value)


def test_suite_body_and_import_format():
    body = suite_body(" S ", "d", "", '[{"kind": "max_length", "value": 50}]', [CaseRow(prompt="hi")])
    assert body["name"] == "S" and body["system_prompt"] is None
    assert body["checks"] == [{"kind": "max_length", "value": 50}]
    assert body["cases"][0]["prompt"] == "hi" and "id" not in body["cases"][0]
    with pytest.raises(ValueError, match="no name"):
        suite_body("", "", "", "", [CaseRow(prompt="hi")])
    with pytest.raises(ValueError, match="no case"):
        suite_body("x", "", "", "", [])
    assert import_format("a.JSONL") == "jsonl" and import_format("b.csv") == "csv"
    with pytest.raises(ValueError, match=".jsonl"):
        import_format("c.txt")


def _cell(i, case, column, *, rep=0, status="done", text="answer", passed=True, checks=None, ttft=0.1,
          dur=1.0, tps=20.0, error=None):
    return {"id": i, "case_id": case, "column": column, "repetition": rep, "status": status, "text": text,
            "ttft_s": ttft, "duration_s": dur, "prompt_tokens": 5, "completion_tokens": 12, "tokens_per_s": tps,
            "finish_reason": "stop", "error": error, "checks": checks or [], "passed": passed, "rating": None,
            "note": ""}


def _detail(run_id="r1", cells=(), reps=1):
    cells = list(cells) or [_cell(100 + i, case, col, rep=rep, status="pending", passed=None)
                            for i, (case, col, rep) in enumerate((c, k, r) for c in ("c1", "c2")
                                                                 for k in ("m1|t0", "m1|t1", "m2|t0", "m2|t1")
                                                                 for r in range(1, reps + 1))]
    cols = [{"key": f"{d}|{lab}", "deployment": d, "parameter_set": {"label": lab}}
            for d in ("m1", "m2") for lab in ("t0", "t1")]
    return {"run": {"id": run_id, "status": "running", "total": 8 * reps, "done": 0},
            "provenance": {"repetitions": reps}, "columns": cols,
            "cases": [{"id": "c1", "preview": "first"}, {"id": "c2", "preview": "second"}],
            "cells": list(cells), "summary": {}}


def test_grid_positions_and_single_cell_updates():
    res = RunResults(_detail(reps=2))
    assert [c.key for c in res.columns] == ["m1|t0", "m1|t1", "m2|t0", "m2|t1"]
    assert [(r.case_id, r.repetition) for r in res.rows] == [("c1", 1), ("c1", 2), ("c2", 1), ("c2", 2)]
    assert res.row_title(1) == "c1 #2"
    assert res.finished_count() == 0
    assert res.apply_cell(_cell(7, "c2", "m2|t1", rep=2)) == (3, 3)
    assert res.position(7) == (3, 3)
    assert res.apply_cell(_cell(8, "c1", "nope|x")) is None
    assert res.finished_count() == 1
    res.apply_cell({**_cell(7, "c2", "m2|t1", rep=2), "rating": 4})
    assert res.cell(3, 3)["rating"] == 4 and res.finished_count() == 1


def test_filters_failed_errors_and_model():
    cells = [_cell(1, "c1", "m1|t0", passed=False, checks=[{"kind": "contains", "passed": False, "detail": "x"}]),
             _cell(2, "c2", "m2|t0", status="error", error="boom", passed=None)]
    res = RunResults(_detail(cells=cells))
    assert res.visible_rows(Filter()) == [0, 1]
    assert res.visible_rows(Filter(failed=True)) == [0]
    assert res.visible_rows(Filter(errors=True)) == [1]
    assert res.visible_rows(Filter(failed=True, model="m2")) == []
    assert res.visible_columns(Filter(model="m2")) == [2, 3]
    assert res.models() == ["m1", "m2"]


def test_summary_and_charts():
    checks_ok = [{"kind": "contains", "passed": True, "detail": ""}]
    checks_bad = [{"kind": "contains", "passed": False, "detail": ""}]
    res = RunResults(_detail(cells=[
        _cell(1, "c1", "m1|t0", checks=checks_ok, ttft=0.1, dur=1.0, tps=10),
        _cell(2, "c2", "m1|t0", checks=checks_bad, passed=False, ttft=0.3, dur=3.0, tps=30),
        _cell(3, "c1", "m2|t0", status="error", error="x", passed=None)]))
    s = res.summary(0)
    assert s["done"] == 2 and s["checks_passed"] == 1 and s["checks_total"] == 2 and s["pass_rate"] == 0.5
    assert s["ttft_p50"] == pytest.approx(0.2) and s["latency_p95"] == 3.0
    assert s["tokens_per_s_median"] == 20 and s["total_s"] is None  # a wall-clock span only the backend knows
    server = {"done": 2, "errors": 0, "total_s": 3.5, "ttft_p50": 0.25}
    res.set_server_summary({"m1|t0": server})
    assert res.summary(0)["total_s"] == 3.5 and res.summary(0)["ttft_p50"] == 0.25  # the backend's, all of it
    res.apply_cell(_cell(9, "c2", "m1|t0", rep=0, status="error", error="x", passed=None))
    newer = res.summary(0)  # a cell newer than the backend's summary: computed here, the backend's total kept
    assert newer["total_s"] == 3.5 and newer["ttft_p50"] == pytest.approx(0.1) and newer["errors"] == 1
    assert res.summary(2)["errors"] == 1 and res.summary(2)["pass_rate"] is None
    text = summary_text(s)
    assert "pass 50 % (1/2)" in text and "TTFT p50 200 ms" in text and "1 err" not in text and "total –" in text
    assert res.per_model("tokens_per_s_median") == [("m1", 10)]  # c2's answer became an error above
    assert res.pass_rate_per_parameter_set() == [("t0", 1.0)]


def test_cell_texts():
    assert mark(None) == "pending" and cell_text(None) == "…"
    done = _cell(1, "c1", "m1|t0", text="Paris is the capital", checks=[{"kind": "contains", "passed": True}])
    assert cell_text(done) == "✓1/1  TTFT 100 ms · 12 tok · 20 tok/s\nParis is the capital"
    rated = {**done, "passed": None, "checks": [], "rating": 5}
    assert cell_text(rated).startswith("TTFT 100 ms · 12 tok · 20 tok/s · ★5\n")
    failed = _cell(2, "c1", "m1|t0", status="error", error="upstream 500", passed=None)
    assert cell_text(failed) == "⚠ error\nupstream 500"
    assert "1.50 s" in figures({"ttft_s": 1.5})
    assert preview("a\n b " * 40, 10) == "a b a b a…"
    assert percentile([], 50) is None and percentile([1, 2, 3, 4], 50) == 2 and percentile([1, 2, 3, 4], 95) == 4


def test_merge_two_runs():
    a = _detail("ra", cells=[_cell(1, "c1", "m1|t0", text="one")])
    b = _detail("rb", cells=[_cell(1, "c1", "m1|t0", text="two")])
    res = merge_runs(a, b)
    assert len(res.columns) == 8 and res.columns[4].key == "B:m1|t0" and res.columns[4].title.startswith("B: m1")
    assert res.cell(0, 0)["text"] == "one" and res.cell(0, 4)["text"] == "two"
    assert res.position(1, "B") == (0, 4) and res.position(1, "A") == (0, 0)
    assert res.run["id"] == "ra"


def test_diff():
    assert "".join(tokens("Hi, there!\n ok")) == "Hi, there!\n ok"
    ops = diff_ops("The cat sat.", "The dog sat.")
    assert ("replace", "cat", "dog") in ops
    left, right = diff_html("a <b> c", "a <x> c", "#f00", "#0f0")
    assert '<span style="background:#f00">b</span>' in left and "&lt;" in left
    assert '<span style="background:#0f0">x</span>' in right
    assert similarity("same", "same") == 1.0 and similarity("a b", "c d") < 0.5


def test_run_body_and_parameter_sets():
    from desktop.suites.runs import export_format, parameter_set, run_body, run_label

    ps = parameter_set(1, "", "0.7", "64", "42", "")
    assert ps == {"label": "set-1", "temperature": 0.7, "max_tokens": 64, "seed": 42, "top_p": None}
    with pytest.raises(ValueError, match="parameter set 2: temperature 'hot' is not a number"):
        parameter_set(2, "x", "hot", "", "", "")
    with pytest.raises(ValueError, match="top p must be between 0 and 1"):
        parameter_set(2, "x", "", "", "", "1.5")
    body = run_body(["a", "b"], [ps], 2, 4)
    assert body == {"deployments": ["a", "b"], "parameter_sets": [ps], "repetitions": 2, "concurrency": 4}
    with pytest.raises(ValueError, match="at least one"):
        run_body([], [ps], 1, 1)
    with pytest.raises(ValueError, match="at most 8"):
        run_body([str(i) for i in range(9)], [ps], 1, 1)
    with pytest.raises(ValueError, match="same label"):
        run_body(["a"], [ps, ps], 1, 1)
    assert run_label({"created_at": "2026-12-02T09:51:00Z", "status": "completed", "done": 4, "total": 4}) \
        == "2026-12-02 09:51 · completed · 4/4"
    assert export_format("out.MD") == "md" and export_format("out", "JSON Lines (*.jsonl)") == "jsonl"
    assert export_format("out") == "csv"


def test_preview_drops_markdown_marks():
    assert preview("# Title\nThe **answer** is `42`") == "Title The answer is 42"


def test_checks_shown_without_their_defaults():
    from desktop.suites.cases import checks_text

    stored = [{"kind": "json", "value": None, "ignore_case": False},
              {"kind": "contains", "value": "a", "ignore_case": True}]
    assert checks_text(stored) == '[{"kind": "json"}, {"kind": "contains", "value": "a", "ignore_case": true}]'
    assert checks_text([]) == ""

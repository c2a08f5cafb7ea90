"""The Suites page on a real X display against a real backend and the demo model: import, edit, run, rate, filter,
compare, re-run, cancel, export."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest
from PySide6.QtCore import QItemSelectionModel, Qt, QTimer
from PySide6.QtWidgets import QApplication

from backend.app import create_app
from backend.settings import Settings
from desktop import theme
from desktop.widgets.suite_results import DiffDialog
from desktop.widgets.suite_run_dialog import RunDialog
from tests.conftest import RUN_ID, RUN_LABEL
from tests.desktop.conftest import SHOTS, TOKEN
from tests.support.deployments import wait_served
from tests.support.live_server import free_port, serve

pytestmark = pytest.mark.gui

CASES = 100
RUN_WAIT_MS = 240000


@pytest.fixture(scope="module")
def suites_backend(engine, demo_image, demo_base_image, tmp_path_factory, demo_model):
    """A backend of its own whose settings know the port it listens on (suite runs call its own /v1)."""
    port = free_port()
    settings = Settings(home=tmp_path_factory.mktemp("suites-home"), token=TOKEN, port=port,
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine), port=port) as url:
        wait_served(url, TOKEN, demo_model, timeout=30)
        yield url


def _suite_file(tmp_path) -> str:
    """100 cases: the odd ones carry a check no answer passes (max_length 1), the even ones one every answer does."""
    lines = []
    for i in range(1, CASES + 1):
        check = {"kind": "max_length", "value": 1 if i % 2 else 100000}
        lines.append(json.dumps({"id": f"q{i:03d}", "prompt": "Say something about {{topic}}.",
                                 "variables": {"topic": f"topic {i}"}, "checks": [check]}))
    path = tmp_path / "Research prompts.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


class GapMeter:
    """The longest the GUI event loop went without running a 5 ms timer (the stall a person would feel)."""

    def __init__(self):
        self.worst_ms = 0.0
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        self.worst_ms = max(self.worst_ms, (now - self._last) * 1000)
        self._last = now

    def start(self):
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self):
        self._timer.stop()


def test_suite_import_edit_run_rate_filter_export(make_main_window, qtbot, suites_backend, demo_model, tmp_path):
    window = make_main_window(url=suites_backend, token=TOKEN)
    window.show_page(window.pages.index(window.suites))
    page = window.suites
    h = {"Authorization": f"Bearer {TOKEN}"}

    # import a JSONL file: a suite named after the file, all 100 cases
    before = len(httpx.get(f"{suites_backend}/api/suites", headers=h).json())
    with qtbot.waitSignal(page.suite_loaded, timeout=20000) as loaded:
        page.import_file(_suite_file(tmp_path))
    suite = loaded.args[0]
    assert suite["name"] == "Research prompts" and len(suite["cases"]) == CASES
    qtbot.waitUntil(lambda: page.suite_list.count() >= 1 and page.cases_table.rowCount() == CASES, timeout=10000)

    # a file that is not JSONL is refused with its line number; nothing is added
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{not json\n', encoding="utf-8")
    with qtbot.waitSignal(page.message, timeout=10000) as said:
        page.import_file(str(bad))
    assert said.args[1] is True and "line 2" in said.args[0]
    assert len(httpx.get(f"{suites_backend}/api/suites", headers=h).json()) == before + 1

    # edits: an unreadable cell is named before anything is sent; the API's refusal shows inline with its hint
    page.cases_table.item(0, 5).setText("contains Paris")
    page.save_suite()
    assert page.editor_error.isVisible() and "case 1 (q001): checks are not JSON" in page.editor_error.text()
    page.cases_table.item(0, 5).setText('[{"kind": "regex", "value": "(unclosed"}]')
    page.save_suite()
    qtbot.waitUntil(lambda: page.editor_error.isVisible() and "invalid regular expression" in page.editor_error.text(),
                    timeout=10000)
    assert "Fix the named fields" in page.editor_error.text()  # the API's hint, beside its message
    page.cases_table.item(0, 5).setText('[{"kind": "max_length", "value": 1}]')
    page.description_edit.setText("edited in the desktop")
    with qtbot.waitSignal(page.suite_loaded, timeout=10000) as saved:
        page.save_suite()
    assert saved.args[0]["description"] == "edited in the desktop" and not page.editor_error.isVisible()

    # run: one deployment × two parameter sets × two repetitions = 400 cells, as the Run dialog builds it
    qtbot.waitUntil(lambda: demo_model in page.models, timeout=10000)
    dialog = RunDialog(suite["name"], page.models, page)
    dialog.set_checked([demo_model])
    for row in range(dialog.params.rowCount()):
        dialog.params.item(row, 2).setText("6")
    dialog.repetitions.setValue(2)
    dialog.concurrency.setValue(8)
    body = dialog.build_body()
    dialog.deleteLater()
    assert body["deployments"] == [demo_model] and [p["label"] for p in body["parameter_sets"]] == ["t0", "t0.7"]
    meter = GapMeter()
    meter.start()
    with qtbot.waitSignal(page.run_finished, timeout=RUN_WAIT_MS) as finished:
        page.start_run(body)
    meter.stop()
    print(f"\nworst GUI event-loop gap while 400 cells streamed in: {meter.worst_ms:.1f} ms")
    run = finished.args[0]
    assert run["status"] == "completed" and run["done"] == run["total"] == 400
    model = page.results_view.model
    results = model.results
    assert results.finished_count() == 400 and len(results.columns) == 2 and len(results.rows) == 2 * CASES
    cells = [results.cell(r, c) for r in range(len(results.rows)) for c in range(2)]
    assert all(c["status"] == "done" and c["completion_tokens"] and c["tokens_per_s"] for c in cells)
    assert model.rowCount() == 2 * CASES + 1
    summary = model.summary(0)
    assert summary["done"] == 2 * CASES and summary["checks_total"] == 2 * CASES
    assert summary["pass_rate"] == pytest.approx(0.5)
    assert "pass 50 %" in model.data(model.index(0, 0))
    assert page.results_view.tps_chart.bars and page.results_view.pass_chart.bars

    # rate one cell: PATCHed, kept with the run
    table = page.results_view.table
    table.setCurrentIndex(model.index(2, 0))
    detail = page.results_view.detail
    assert detail.cell is not None and detail.save_button.isEnabled()
    rated_id = detail.cell["id"]
    detail.rating.setCurrentIndex(detail.rating.findData(4))
    detail.note.setText("clear and short")
    detail.save_button.click()
    qtbot.waitUntil(lambda: detail.status.text() == "Rating saved.", timeout=10000)
    kept = httpx.get(f"{suites_backend}/api/runs/{run['id']}", headers=h).json()["cells"]
    assert [(c["rating"], c["note"]) for c in kept if c["id"] == rated_id] == [(4, "clear and short")]
    assert "★4" in model.data(model.index(2, 0)).splitlines()[0]

    # filters: failed checks (the odd cases), one model
    page.set_filter(failed=True)
    assert model.rowCount() == CASES + 1
    assert all(model.cell_at(model.index(r, 0))["passed"] is False for r in range(1, model.rowCount()))
    page.set_filter(errors=True)
    assert model.rowCount() == 1
    page.set_filter(model=demo_model)
    assert model.rowCount() == 2 * CASES + 1 and model.columnCount() == 2
    page.set_filter()

    # two cells side by side
    sel = table.selectionModel()
    sel.clearSelection()
    sel.select(model.index(1, 0), QItemSelectionModel.SelectionFlag.Select)
    sel.select(model.index(1, 1), QItemSelectionModel.SelectionFlag.Select)
    diff = page.show_diff()
    assert isinstance(diff, DiffDialog) and len(diff.views) == 2 and "%" in diff.similarity.text()
    diff.close()

    # export the run in each format, through the same calls the save dialog makes
    for fmt in ("csv", "jsonl", "md"):
        path = str(tmp_path / f"run.{fmt}")
        with qtbot.waitSignal(page.exported, timeout=30000):
            page.export_run_to(path, fmt)
        text = open(path, encoding="utf-8").read()
        if fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(text)))) == 400
        elif fmt == "jsonl":
            assert len([ln for ln in text.splitlines() if ln.strip()]) == 400
        else:
            assert demo_model in text

    # export the suite, import it again: the same cases
    suite_path = str(tmp_path / "again.jsonl")
    with qtbot.waitSignal(page.exported, timeout=10000):
        page.export_suite_to(suite_path, "jsonl")
    with qtbot.waitSignal(page.suite_loaded, timeout=20000) as again:
        page.import_file(suite_path)
    assert again.args[0]["cases"] == saved.args[0]["cases"] and again.args[0]["id"] != suite["id"]
    copy_id = again.args[0]["id"]
    page.delete_suite(confirm=False)

    def listed() -> list[str]:
        return [page.suite_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(page.suite_list.count())]
    qtbot.waitUntil(lambda: copy_id not in listed() and suite["id"] in listed(), timeout=10000)
    ids = [s["id"] for s in httpx.get(f"{suites_backend}/api/suites", headers=h).json()]
    assert copy_id not in ids and suite["id"] in ids


def test_rerun_says_what_differs_cancel_and_compare(make_main_window, qtbot, suites_backend, demo_model, tmp_path):
    h = {"Authorization": f"Bearer {TOKEN}"}
    cases = [{"id": f"c{i}", "prompt": f"Count to {i}.", "checks": [{"kind": "max_length", "value": 100000}]}
             for i in range(1, 41)]
    made = httpx.post(f"{suites_backend}/api/suites", headers=h, timeout=10,
                      json={"name": "Rerun suite", "cases": cases})
    assert made.status_code == 201, made.text
    suite = made.json()
    window = make_main_window(url=suites_backend, token=TOKEN)
    window.show_page(window.pages.index(window.suites))
    page = window.suites
    qtbot.waitUntil(lambda: page.suite_list.count() >= 1, timeout=10000)

    # a new suite typed in the editor is POSTed
    page.new_suite()
    assert page.cases_table.rowCount() == 1 and page.name_edit.text() == ""
    page.name_edit.setText("Typed suite")
    page.cases_table.item(0, 1).setText('[{"role": "user", "content": "Hello"}]')
    with qtbot.waitSignal(page.suite_loaded, timeout=10000) as typed:
        page.save_suite()
    assert typed.args[0]["name"] == "Typed suite"
    assert typed.args[0]["cases"][0]["messages"] == [{"role": "user", "content": "Hello"}]

    with qtbot.waitSignal(page.suite_loaded, timeout=10000):
        page.open_suite(suite["id"])
    body = {"deployments": [demo_model], "parameter_sets": [{"label": "short", "max_tokens": 4, "seed": 7}],
            "repetitions": 1, "concurrency": 4}
    with qtbot.waitSignal(page.run_finished, timeout=RUN_WAIT_MS) as first:
        page.start_run(body)
    first_id = first.args[0]["id"]

    # re-run: the same configuration, the page says nothing differs; cancel it mid-way
    page.rerun()
    qtbot.waitUntil(lambda: page.differences_label.isVisible(), timeout=10000)
    assert "all match" in page.differences_label.text()
    qtbot.waitUntil(lambda: page.run_id != first_id and page.cancel_button.isEnabled(), timeout=10000)
    second_id = page.run_id
    page.cancel_run()
    qtbot.waitUntil(lambda: httpx.get(f"{suites_backend}/api/runs/{second_id}", headers=h).json()["run"]["status"]
                    in ("cancelled", "completed"), timeout=30000)
    qtbot.waitUntil(lambda: not page.cancel_button.isEnabled(), timeout=30000)

    # two runs of the suite side by side: the columns of both
    with qtbot.waitSignal(page.run_loaded, timeout=10000):
        page.load_run(first_id, compare_id=second_id)
    res = page.results_view.model.results
    assert [c.run for c in res.columns] == ["A", "B"] and len(res.rows) == 40
    assert sum(1 for r in range(40) if (res.cell(r, 0) or {}).get("status") == "done") == 40


def test_screenshots_of_a_finished_run(make_main_window, qtbot, suites_backend, demo_model):
    """Light and dark pictures of the page with a finished run, for a person to look at."""
    h = {"Authorization": f"Bearer {TOKEN}"}
    cases = [{"id": f"fable-{i}", "prompt": "Tell a short fable about a {{animal}}.", "variables": {"animal": a},
              "checks": [{"kind": "max_length", "value": 60 if i % 3 == 0 else 2000}]}
             for i, a in enumerate(("fox", "crow", "owl", "hare", "bear", "wolf", "lynx", "stork"), 1)]
    suite = httpx.post(f"{suites_backend}/api/suites", headers=h, timeout=10,
                       json={"name": "Fables", "description": "animal fables", "cases": cases}).json()
    run = httpx.post(f"{suites_backend}/api/suites/{suite['id']}/runs", headers=h, timeout=10,
                     json={"deployments": [demo_model], "concurrency": 4,
                           "parameter_sets": [{"label": "t0", "temperature": 0, "max_tokens": 24, "seed": 1},
                                              {"label": "t1.0", "temperature": 1.0, "max_tokens": 24, "seed": 1}]})
    assert run.status_code == 202, run.text
    for scheme in ("light", "dark"):
        window = make_main_window(url=suites_backend, token=TOKEN, theme=scheme)
        window.resize(1360, 860)
        window.show_page(window.pages.index(window.suites))
        page = window.suites
        qtbot.waitUntil(lambda: page.suite_list.count() >= 1, timeout=10000)
        with qtbot.waitSignal(page.run_loaded, timeout=10000):
            page.open_suite(suite["id"])
        qtbot.waitUntil(lambda: page.results_view.model.results.finished_count() == 16, timeout=RUN_WAIT_MS)
        page.tabs.setCurrentIndex(1)
        page.results_view.table.setCurrentIndex(page.results_view.model.index(1, 0))
        QApplication.processEvents()
        assert window.grab().save(f"{SHOTS}/{scheme}-suites.png")
        window.close()
    theme.apply("light")


def test_page_follows_a_run_across_a_backend_kill(make_main_window, qtbot, demo_model, demo_base_image, tmp_path):
    """SIGKILL the backend mid-run and start it again: the run resumes, the page reads it again and sees it end."""
    from tests.support.backend_process import TOKEN as BP_TOKEN
    from tests.support.backend_process import BackendProcess as Backend

    backend = Backend(tmp_path / "home", demo_base_image=demo_base_image)
    backend.start()
    try:
        wait_served(backend.url, BP_TOKEN, demo_model, timeout=30)
        cases = [{"id": f"k{i:02d}", "prompt": f"Count to {i}."} for i in range(40)]
        made = backend.post("/api/suites", json={"name": "Survives a kill", "cases": cases})
        assert made.status_code == 201, made.text
        suite = made.json()
        window = make_main_window(url=backend.url, token=BP_TOKEN)
        window.show_page(window.pages.index(window.suites))
        page = window.suites
        with qtbot.waitSignal(page.suite_loaded, timeout=10000):
            page.open_suite(suite["id"])
        page.start_run({"deployments": [demo_model], "concurrency": 1,
                        "parameter_sets": [{"label": "slow", "max_tokens": 8}]})
        results = lambda: page.results_view.model.results  # noqa: E731
        qtbot.waitUntil(lambda: page._stream is not None and results().finished_count() >= 3, timeout=60000)
        backend.kill()
        qtbot.waitUntil(lambda: "Lost the run's progress stream" in page.banner.text(), timeout=10000)
        backend.start()
        with qtbot.waitSignal(page.run_finished, timeout=RUN_WAIT_MS) as finished:
            pass  # the page reads the run again every 2 s until the backend answers, then follows it
        assert finished.args[0]["status"] == "completed"
        assert results().finished_count() == 40
        assert all(results().cell(r, 0)["status"] == "done" for r in range(40))
        assert not page.banner.text().startswith("Lost")
    finally:
        backend.stop()

"""The Suites page: prompt suites (cases × models × parameter sets), their runs, and the results grid."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QMessageBox, QPushButton, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient, SseStream
from desktop.playground.column import ERROR_STYLE
from desktop.suites.cases import import_format
from desktop.suites.results import Filter, RunResults, merge_runs
from desktop.suites.runs import EXPORT_FORMATS, export_format, run_label
from desktop.widgets.calls import Calls
from desktop.widgets.suite_editor import SuiteEditor
from desktop.widgets.suite_results import DiffDialog, ResultsView
from desktop.widgets.suite_run_dialog import RunDialog

LIVE = ("queued", "running")
INFO_STYLE = "color: palette(text); padding: 4px;"
#: After a run's event stream breaks off (a backend restart: the run resumes), read the run again this much later.
FOLLOW_RETRY_MS = 2000


class SuitesPage(QWidget):
    """Suites on the left; on the right the selected suite's editor and its runs' results.

    Signals:
        suites_loaded(list): GET /api/suites answered (the list shown).
        suite_loaded(dict): a suite was opened or saved (the Suite JSON).
        run_loaded(dict): a run's results are shown (its RunSummary); comparisons too.
        run_finished(dict): the shown run is over: its stream ended, or it was loaded finished (its RunSummary).
        exported(str): a file was written (its path).
        message(str, bool): a line for the person (text, is_error).
    """

    suites_loaded = Signal(list)
    suite_loaded = Signal(dict)
    run_loaded = Signal(dict)
    run_finished = Signal(dict)
    exported = Signal(str)
    message = Signal(str, bool)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._client = client
        self._calls = Calls(client, self)
        self.suite: dict | None = None
        self.run_id: str | None = None
        self.compare_id: str | None = None
        self.runs: list[dict] = []
        self.models: list[str] = []
        self.differences: list[str] = []
        self._stream: SseStream | None = None
        self._retry = QTimer(self)
        self._retry.setSingleShot(True)
        self._retry.setInterval(FOLLOW_RETRY_MS)
        self._retry.timeout.connect(self._on_retry_timeout)
        self._icons: list[tuple[QPushButton, str, str]] = []  # (button, icon, colour role): recoloured per theme
        self._build()
        self._on_theme_changed(theme.notifier().scheme)
        self.message.connect(self._on_message)
        theme.notifier().changed.connect(self._on_theme_changed)

    # ------------------------------------------------------------------ layout

    def _icon_button(self, icon: str, role: str, text: str) -> QPushButton:
        button = QPushButton(text)
        self._icons.append((button, icon, role))
        return button

    def _build(self) -> None:
        title = QLabel("Suites")
        title.setObjectName("pageTitle")
        subtitle = QLabel("Many prompts × several models × parameter sets, with checks, figures and ratings.")
        subtitle.setObjectName("pageSubtitle")
        self.suite_list = QListWidget()
        self.suite_list.currentItemChanged.connect(self._on_suite_list_current_item_changed)
        self.new_button = QPushButton("New")
        self.new_button.clicked.connect(self.new_suite)
        self.import_button = self._icon_button("folder", "text", "Import…")
        self.import_button.setToolTip("Import a suite from a JSONL (one case per line) or CSV file")
        self.import_button.clicked.connect(self._on_import_button_clicked)
        self.export_suite_button = self._icon_button("export", "text", "Export…")
        self.export_suite_button.clicked.connect(self._on_export_suite_button_clicked)
        self.delete_button = self._icon_button("remove", "text", "Delete")
        self.delete_button.clicked.connect(self._on_delete_button_clicked)
        left_buttons = QHBoxLayout()
        for b in (self.new_button, self.import_button):
            left_buttons.addWidget(b)
        left_buttons2 = QHBoxLayout()
        for b in (self.export_suite_button, self.delete_button):
            left_buttons2.addWidget(b)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self.suite_list, 1)
        ll.addLayout(left_buttons)
        ll.addLayout(left_buttons2)

        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.banner.hide()
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_editor(), "Suite")
        self.tabs.addTab(self._build_results(), "Results")
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.banner)
        rl.addWidget(self.tabs, 1)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(1, 1)
        split.setSizes([220, 1000])
        box = QVBoxLayout(self)
        box.addWidget(title)
        box.addWidget(subtitle)
        box.addWidget(split, 1)

    def _build_editor(self) -> QWidget:
        self.editor = SuiteEditor()
        self.editor.save_requested.connect(self._on_editor_save_requested)
        self.editor.run_requested.connect(self._on_editor_run_requested)
        # the editor's parts, by the names the page has always had
        self.name_edit, self.description_edit = self.editor.name_edit, self.editor.description_edit
        self.cases_table, self.editor_error = self.editor.cases_table, self.editor.error
        return self.editor

    def _build_results(self) -> QWidget:
        self.run_combo = QComboBox()
        self.run_combo.setMinimumContentsLength(28)
        self.run_combo.activated.connect(self._on_run_combo_activated)
        self.compare_combo = QComboBox()
        self.compare_combo.setMinimumContentsLength(20)
        self.compare_combo.setToolTip("Show a second run of this suite beside this one (its columns marked B)")
        self.compare_combo.activated.connect(self._on_compare_combo_activated)
        self.cancel_button = self._icon_button("stop", "text", "Cancel")
        self.cancel_button.clicked.connect(self.cancel_run)
        self.rerun_button = self._icon_button("restart", "text", "Re-run")
        self.rerun_button.setToolTip("Run again with the same configuration; says what no longer matches")
        self.rerun_button.clicked.connect(self.rerun)
        self.export_run_button = self._icon_button("export", "text", "Export…")
        self.export_run_button.clicked.connect(self._on_export_run_button_clicked)
        self.diff_button = QPushButton("Compare cells")
        self.diff_button.setToolTip("Select two cells (Ctrl+click) to see their answers side by side")
        self.diff_button.clicked.connect(self.show_diff)
        self.failed_check = QCheckBox("Failed checks")
        self.errors_check = QCheckBox("Errors")
        self.model_filter = QComboBox()
        self.model_filter.addItem("All models", "")
        for w in (self.failed_check, self.errors_check):
            w.toggled.connect(self._on_filter_changed)
        self.model_filter.activated.connect(self._on_filter_changed)
        self.progress = QLabel()
        self.progress.setProperty("muted", True)
        self.differences_label = QLabel()
        self.differences_label.setWordWrap(True)
        self.differences_label.hide()
        top = QHBoxLayout()
        top.addWidget(QLabel("Run"))
        top.addWidget(self.run_combo, 1)
        top.addWidget(QLabel("Compare with"))
        top.addWidget(self.compare_combo, 1)
        for b in (self.cancel_button, self.rerun_button, self.export_run_button):
            top.addWidget(b)
        filters = QHBoxLayout()
        filters.addWidget(QLabel("Show"))
        filters.addWidget(self.failed_check)
        filters.addWidget(self.errors_check)
        filters.addWidget(self.model_filter)
        filters.addWidget(self.diff_button)
        filters.addStretch(1)
        filters.addWidget(self.progress)
        self.results_view = ResultsView()
        self.results_view.rate_requested.connect(self._on_results_view_rate_requested)
        page = QWidget()
        box = QVBoxLayout(page)
        box.addLayout(top)
        box.addLayout(filters)
        box.addWidget(self.differences_label)
        box.addWidget(self.results_view, 1)
        self._update_run_buttons()
        return page

    # ------------------------------------------------------------------ suites

    def refresh(self) -> None:
        """Reload the list of suites (and the ready models the Run dialog offers)."""
        self._calls.get("/api/suites", self._on_suites_loaded, self._on_api_failed)
        self._calls.get("/v1/models", self._on_models_loaded)

    def open_suite(self, suite_id: str) -> None:
        self._calls.get(f"/api/suites/{quote(suite_id, safe='')}", self._on_suite_loaded, self._on_api_failed)

    def new_suite(self) -> None:
        self.suite_list.setCurrentItem(None)
        self.suite = None
        self.editor.fill({"name": "", "description": "", "system_prompt": None, "checks": [],
                           "cases": [{"id": "case-1", "prompt": ""}]})
        self.tabs.setCurrentIndex(0)
        self.name_edit.setFocus()

    def save_suite(self) -> None:
        """PUT the suite being edited (POST when new); errors show under the table with their hint."""
        self.editor.save()

    def import_file(self, path: str) -> None:
        """Import a JSONL or CSV file as a new suite named after the file."""
        try:
            fmt = import_format(path)
            text = Path(path).read_text(encoding="utf-8")
        except (ValueError, OSError) as exc:
            self.message.emit(f"Cannot import {path}: {exc}", True)
            return
        name = quote(Path(path).stem, safe="")
        self._calls.post_text(f"/api/suites/import?format={fmt}&name={name}", text, self._on_suite_saved,
                              self._on_api_failed, timeout_ms=120000)

    def export_suite_to(self, path: str, fmt: str | None = None) -> None:
        if not self.suite:
            return
        fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")
        self._calls.get(f"/api/suites/{quote(self.suite['id'], safe='')}/export?format={fmt}",
                        lambda body: self._write(path, body), self._on_api_failed)

    def delete_suite(self, confirm: bool = True) -> None:
        if not self.suite:
            return
        if confirm and QMessageBox.question(self, "Delete suite", f"Delete the suite {self.suite['name']} and "
                                            "keep none of it?") != QMessageBox.StandardButton.Yes:
            return
        self._calls.delete(f"/api/suites/{quote(self.suite['id'], safe='')}", self._on_suite_deleted,
                           self._on_api_failed)

    # ------------------------------------------------------------------ runs

    def start_run(self, body: dict) -> None:
        """POST a run of the open suite; its results stream in on the Results tab."""
        if not self.suite:
            return
        self._calls.post(f"/api/suites/{quote(self.suite['id'], safe='')}/runs", body, self._on_run_started,
                         self._on_editor_failed)

    def load_run(self, run_id: str, compare_id: str | None = None) -> None:
        """Show a run's results (beside a second run's when ``compare_id``); follow it while it runs."""
        self._stop_stream()
        self.run_id, self.compare_id = run_id, compare_id
        self._update_run_buttons()
        if compare_id:
            self._calls.get(f"/api/runs/{quote(run_id, safe='')}",
                            lambda a: self._calls.get(f"/api/runs/{quote(compare_id, safe='')}",
                                                      lambda b: self._on_compare_loaded(a, b), self._on_api_failed),
                            self._on_api_failed)
        else:
            self._calls.get(f"/api/runs/{quote(run_id, safe='')}", self._on_run_loaded, self._on_api_failed)

    def cancel_run(self) -> None:
        if self.run_id:
            self._calls.post(f"/api/runs/{quote(self.run_id, safe='')}/cancel", None, self._on_run_progress,
                             self._on_api_failed)

    def rerun(self) -> None:
        if self.run_id:
            self._calls.post(f"/api/runs/{quote(self.run_id, safe='')}/rerun", None, self._on_rerun_started,
                             self._on_api_failed)

    def export_run_to(self, path: str, fmt: str) -> None:
        if self.run_id:
            self._calls.get(f"/api/runs/{quote(self.run_id, safe='')}/export?format={fmt}",
                            lambda body: self._write(path, body), self._on_api_failed, timeout_ms=60000)

    def set_filter(self, failed: bool = False, errors: bool = False, model: str = "") -> None:
        self.failed_check.setChecked(failed)
        self.errors_check.setChecked(errors)
        self.model_filter.setCurrentIndex(max(0, self.model_filter.findData(model)))
        self._on_filter_changed()

    def show_diff(self) -> DiffDialog | None:
        cells = self.results_view.selected_cells()
        if len(cells) != 2:
            self.message.emit("Select exactly two cells (Ctrl+click) to compare their answers.", True)
            return None
        dialog = DiffDialog(cells[0], cells[1], self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        return dialog

    def refresh_runs(self, select: str | None = None) -> None:
        if self.suite:
            self._calls.get(f"/api/runs?suite_id={quote(self.suite['id'], safe='')}",
                            lambda runs: self._on_runs_loaded(runs, select), self._on_api_failed)

    def _update_run_buttons(self) -> None:
        run = next((r for r in self.runs if r.get("id") == self.run_id), None)
        live = bool(run and run.get("status") in LIVE)
        self.cancel_button.setEnabled(live)
        self.rerun_button.setEnabled(bool(self.run_id) and not live)
        self.export_run_button.setEnabled(bool(self.run_id))

    def _follow(self, run_id: str) -> None:
        self._stop_stream()
        stream = self._client.stream(f"/api/runs/{quote(run_id, safe='')}/events", parent=self)
        stream.event.connect(self._on_stream_event)
        stream.failed.connect(self._on_stream_failed)
        stream.ended.connect(self._on_stream_ended)
        self._stream = stream
        stream.start()

    def _stop_stream(self) -> None:
        self._retry.stop()
        if self._stream is not None:
            self._stream.stop()
            self._stream.deleteLater()
            self._stream = None

    def _write(self, path: str, body) -> None:
        text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False) + "\n"
        try:
            Path(path).write_text(text or "", encoding="utf-8")
        except OSError as exc:
            self.message.emit(f"Cannot write {path}: {exc}", True)
            return
        self.message.emit(f"Saved {path}", False)
        self.exported.emit(path)

    def shutdown(self) -> None:
        self._retry.stop()
        self._stop_stream()
        self._calls.abort_all()

    # ------------------------------------------------------------------ slots

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        super().showEvent(event)
        self._calls.get("/v1/models", self._on_models_loaded)

    def _on_theme_changed(self, _scheme: str) -> None:
        for button, icon, role in self._icons:
            button.setIcon(theme.icon(icon, role))

    def _on_message(self, text: str, is_error: bool) -> None:
        self.banner.setStyleSheet(ERROR_STYLE if is_error else INFO_STYLE)
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def _on_api_failed(self, error: ApiError) -> None:
        self.message.emit(str(error), True)

    def _on_editor_failed(self, error: ApiError) -> None:
        self.editor.show_error(str(error))

    def _on_models_loaded(self, body) -> None:
        data = body.get("data", []) if isinstance(body, dict) else []
        self.models = sorted(m["id"] for m in data if isinstance(m, dict) and m.get("id"))

    def _on_suites_loaded(self, suites) -> None:
        suites = suites if isinstance(suites, list) else []
        current = self.suite.get("id") if self.suite else None
        self.suite_list.blockSignals(True)
        self.suite_list.clear()
        for s in suites:
            item = QListWidgetItem(f"{s.get('name')}\n{s.get('cases', 0)} cases")
            item.setData(Qt.ItemDataRole.UserRole, s.get("id"))
            item.setToolTip(s.get("description") or s.get("name"))
            self.suite_list.addItem(item)
            if s.get("id") == current:
                self.suite_list.setCurrentItem(item)
        self.suite_list.blockSignals(False)
        self.suites_loaded.emit(suites)

    def _on_suite_list_current_item_changed(self, item: QListWidgetItem | None, _previous) -> None:
        if item is not None:
            self.open_suite(item.data(Qt.ItemDataRole.UserRole))

    def _on_suite_loaded(self, suite) -> None:
        if not isinstance(suite, dict):
            return
        changed = not self.suite or self.suite.get("id") != suite.get("id")
        self.suite = suite
        self.editor.fill(suite)
        self.export_suite_button.setEnabled(True)
        self.delete_button.setEnabled(True)
        if changed:
            self.runs, self.run_id, self.compare_id = [], None, None
            self._stop_stream()
            self.results_view.set_results(RunResults())
            self.refresh_runs()
        self.suite_loaded.emit(suite)

    def _on_suite_saved(self, suite) -> None:
        self.message.emit(f"Saved the suite {suite.get('name')} ({len(suite.get('cases') or [])} cases).", False)
        self._on_suite_loaded(suite)
        self.refresh()

    def _on_suite_deleted(self, _body) -> None:
        self.message.emit(f"Deleted the suite {self.suite['name'] if self.suite else ''}.", False)
        self.suite, self.runs, self.run_id = None, [], None
        self._stop_stream()
        self.editor.fill({})
        self.results_view.set_results(RunResults())
        self.refresh()

    def _on_runs_loaded(self, runs, select: str | None) -> None:
        self.runs = sorted(runs if isinstance(runs, list) else [], key=lambda r: r.get("created_at") or "",
                           reverse=True)
        for combo in (self.run_combo, self.compare_combo):
            combo.clear()
        self.compare_combo.addItem("—", None)
        for run in self.runs:
            self.run_combo.addItem(run_label(run), run["id"])
            self.compare_combo.addItem(run_label(run), run["id"])
        target = select or (self.run_id if any(r["id"] == self.run_id for r in self.runs) else None)
        if target is None and self.runs:
            target = self.runs[0]["id"]
        if target:
            self.run_combo.setCurrentIndex(max(0, self.run_combo.findData(target)))
            if target != self.run_id or select:
                self.load_run(target)
        self._update_run_buttons()

    def _on_run_combo_activated(self, _index: int) -> None:
        run_id = self.run_combo.currentData()
        if run_id:
            self.compare_combo.setCurrentIndex(0)
            self.load_run(run_id)

    def _on_compare_combo_activated(self, _index: int) -> None:
        if self.run_id:
            other = self.compare_combo.currentData()
            self.load_run(self.run_id, other if other and other != self.run_id else None)

    def _on_run_started(self, summary) -> None:
        self.tabs.setCurrentIndex(1)
        self.differences_label.hide()
        self.refresh_runs(select=summary.get("id"))

    def _on_rerun_started(self, body) -> None:
        self.differences = list(body.get("differences") or [])
        if self.differences:
            self.differences_label.setText("Re-run: what no longer matches the original run —\n• "
                                           + "\n• ".join(self.differences))
            self.differences_label.setStyleSheet(f"color: {theme.color('warning').name()}; padding: 4px;")
        else:
            self.differences_label.setText("Re-run with the same configuration: images, models and revisions "
                                           "all match the original run.")
            self.differences_label.setStyleSheet(INFO_STYLE)
        self.differences_label.show()
        self.refresh_runs(select=(body.get("run") or {}).get("id"))

    def _on_run_loaded(self, detail) -> None:
        results = RunResults(detail)
        self._show_results(results)
        run = results.run
        self._on_run_progress(run)
        self.run_loaded.emit(run)
        if run.get("status") in LIVE:
            self._follow(run["id"])
        else:
            self.run_finished.emit(run)

    def _on_compare_loaded(self, first, second) -> None:
        results = merge_runs(first, second)
        self._show_results(results)
        self.progress.setText(f"A: {run_label(first.get('run') or {})}   B: {run_label(second.get('run') or {})}")
        self.run_loaded.emit(results.run)

    def _show_results(self, results: RunResults) -> None:
        current_model = self.model_filter.currentData()
        self.model_filter.clear()
        self.model_filter.addItem("All models", "")
        for m in results.models():
            self.model_filter.addItem(m, m)
        self.model_filter.setCurrentIndex(max(0, self.model_filter.findData(current_model)))
        self.results_view.set_results(results)
        self.results_view.model.set_filter(self._filter())

    def _filter(self) -> Filter:
        return Filter(self.failed_check.isChecked(), self.errors_check.isChecked(),
                      self.model_filter.currentData() or "")

    def _on_filter_changed(self, *_args) -> None:
        self.results_view.model.set_filter(self._filter())

    def _on_run_progress(self, summary) -> None:
        if not isinstance(summary, dict) or not summary.get("id"):
            return
        self.results_view.model.results.update_run(summary)
        for i, run in enumerate(self.runs):
            if run.get("id") == summary["id"]:
                self.runs[i] = {**run, **summary}
                self.run_combo.setItemText(self.run_combo.findData(summary["id"]), run_label(self.runs[i]))
        n = summary.get("errors") or 0
        errors = f", {n} error{'s' * (n != 1)}" if n else ""
        self.progress.setText(f"{summary.get('status')}: {summary.get('done', 0)}/{summary.get('total', 0)} "
                              f"cells{errors}")
        self._update_run_buttons()

    def _on_stream_event(self, name: str, data) -> None:
        if name == "cell" and isinstance(data, dict):
            self.results_view.model.queue_cell(data)
        elif name in ("progress", "end"):
            self._on_run_progress(data)
            if name == "end":
                self.results_view.model.flush()
                self._stop_stream()
                if self.run_id:  # the server's own summary and any cell the stream closed over
                    self._calls.get(f"/api/runs/{quote(self.run_id, safe='')}", self._on_run_reloaded,
                                    self._on_refollow_failed)

    def _on_run_reloaded(self, detail) -> None:
        if not (isinstance(detail, dict) and (detail.get("run") or {}).get("id") == self.run_id
                and not self.compare_id):
            return
        model = self.results_view.model
        shown = model.results
        if [c.key for c in shown.columns] == [c.get("key") for c in detail.get("columns") or []]:
            # The same grid: only cells the stream missed or that changed since are applied (no reset,
            # so the selection and scroll position stay).
            for cell in detail.get("cells") or []:
                pos = shown.position(cell.get("id")) if cell.get("id") is not None else None
                held = shown.cell(*pos) if pos else None
                if held is None or {k: v for k, v in held.items() if k != "_run"} != cell:
                    model.queue_cell(cell)
            shown.set_server_summary(detail.get("summary") or {})
            model.flush()
            model.forget_summaries()
            shown.run = detail.get("run") or shown.run
        else:
            self._show_results(RunResults(detail))
        self._on_run_progress(shown.run if model.results is shown else model.results.run)
        if model.results.run.get("status") not in LIVE:
            self.run_finished.emit(model.results.run)
        elif self._stream is None:
            # The stream ended but the run goes on (it ended while the backend was still resuming the run,
            # say): follow it again shortly.
            self._retry.start()

    def _on_stream_failed(self, error: ApiError) -> None:
        self.message.emit(f"Lost the run's progress stream ({error}); reading the run again…", True)

    def _on_stream_ended(self) -> None:
        # Closed without its end event (after a failure, or the backend went away): the run may go on,
        # or resume once the backend is back; read it again shortly, which follows it again if it runs.
        if self._stream is not None:
            self._stream.deleteLater()
        self._stream = None
        if self.run_id:
            self._retry.start()

    def _on_retry_timeout(self) -> None:
        if self.run_id and not self.compare_id and self._stream is None:
            self._calls.get(f"/api/runs/{quote(self.run_id, safe='')}", self._on_run_refollowed,
                            self._on_refollow_failed)

    def _on_run_refollowed(self, detail) -> None:
        if not isinstance(detail, dict) or (detail.get("run") or {}).get("id") != self.run_id:
            return
        if self.banner.text().startswith("Lost the run's progress stream"):
            self.message.emit("", False)
        self._on_run_reloaded(detail)
        run = detail.get("run") or {}
        if run.get("status") in LIVE:
            self._follow(run["id"])

    def _on_refollow_failed(self, error: ApiError) -> None:
        self.message.emit(f"Lost the run's progress stream: {error} Retrying…", True)
        self._retry.start()

    def _on_results_view_rate_requested(self, cell: dict, rating, note: str) -> None:
        run_id = self.compare_id if cell.get("_run") == "B" else self.run_id
        tag = cell.get("_run") or ""
        self._calls.patch(f"/api/runs/{quote(run_id or '', safe='')}/cells/{cell['id']}",
                          {"rating": rating, "note": note},
                          lambda body: self._on_cell_rated(body, tag), self._on_rate_failed)

    def _on_cell_rated(self, cell, tag: str) -> None:
        if isinstance(cell, dict):
            self.results_view.apply_cell_now(cell, tag)
            self.results_view.detail.status.setText("Rating saved.")

    def _on_rate_failed(self, error: ApiError) -> None:
        self.results_view.detail.status.setText(str(error))

    def _on_editor_save_requested(self, body: dict) -> None:
        if self.suite and self.suite.get("id"):
            self._calls.put(f"/api/suites/{quote(self.suite['id'], safe='')}", body, self._on_suite_saved,
                            self._on_editor_failed)
        else:
            self._calls.post("/api/suites", body, self._on_suite_saved, self._on_editor_failed)

    def _on_editor_run_requested(self) -> None:
        if not self.suite:
            self.editor.show_error("Save the suite before running it.")
            return
        dialog = RunDialog(self.suite.get("name") or "", self.models, self)
        if dialog.exec() and dialog.body():
            self.start_run(dialog.body())
        dialog.deleteLater()

    def _on_import_button_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a suite", "", "Suites (*.jsonl *.csv);;All files (*)")
        if path:
            self.import_file(path)

    def _on_export_suite_button_clicked(self) -> None:
        if not self.suite:
            return
        path, flt = QFileDialog.getSaveFileName(self, "Export the suite", f"{self.suite['name']}.jsonl",
                                                "JSON Lines (*.jsonl);;CSV (*.csv)")
        if path:
            self.export_suite_to(path, "csv" if path.lower().endswith(".csv") or flt.startswith("CSV") else "jsonl")

    def _on_export_run_button_clicked(self) -> None:
        if not self.run_id:
            return
        name = f"{(self.suite or {}).get('name', 'run')}-{self.run_id}.csv"
        path, flt = QFileDialog.getSaveFileName(self, "Export the run's results", name,
                                                ";;".join(EXPORT_FORMATS.values()))
        if path:
            self.export_run_to(path, export_format(path, flt))

    def _on_delete_button_clicked(self) -> None:
        self.delete_suite()

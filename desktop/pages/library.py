"""The Library page: the models on disk (model folders, the runtimes' caches, Ollama), their size and use, Delete and
Launch."""

from __future__ import annotations

from urllib.parse import quote

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QMessageBox, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient
from desktop.library import local
from desktop.widgets.calls import Calls

LIST_TIMEOUT_MS = 60000  # a volume is listed through a helper container


class LibraryPage(QWidget):
    """``GET /api/library`` as a table, with Refresh, Launch and Delete.

    Signals:
        library_loaded(list): the list answered (the LocalModels shown).
        deleted(str): a model was deleted (its id).
        delete_refused(str): a delete was refused (the words shown).
        launch_requested(str, str): Launch was clicked: the recipe and the model to preselect.
        message(str, bool): a line for the person (text, is_error).
    """

    library_loaded = Signal(list)
    deleted = Signal(str)
    delete_refused = Signal(str)
    launch_requested = Signal(str, str)
    message = Signal(str, bool)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._calls = Calls(client, self)
        self.models: list[dict] = []
        self._answer: dict | None = None
        self._refused_id: str | None = None  # the model whose delete was refused (its note stays while in use)
        self._loading = False
        em = self.fontMetrics().horizontalAdvance("M")
        title = QLabel("Library")
        title.setObjectName("pageTitle")
        subtitle = QLabel("The models on this machine: GGUF files in the model folders and caches, Hugging Face "
                          "snapshots and Ollama models, with their size and the deployments that use them.")
        subtitle.setObjectName("pageSubtitle")
        subtitle.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.launch_button = QPushButton("Launch…")
        self.launch_button.setToolTip("Open the Launch dialog with this model and its runtime filled in")
        self.launch_button.clicked.connect(self.launch_selected)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.setToolTip("Remove the model's files from disk (refused while a deployment uses it)")
        self.delete_button.clicked.connect(self._on_delete_button_clicked)
        self.state = QLabel("Listing the models on disk…")
        self.state.setProperty("muted", True)
        bar = QHBoxLayout()
        bar.addWidget(self.state, 1)
        bar.addWidget(self.refresh_button)
        bar.addWidget(self.launch_button)
        bar.addWidget(self.delete_button)
        self.error = QLabel()
        self.error.setObjectName("errorText")
        self.error.setWordWrap(True)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        self.problems = QLabel()  # places that could not be read now (a cache volume while Docker is away)
        self.problems.setObjectName("warnText")
        self.problems.setWordWrap(True)
        self.problems.hide()
        self.table = QTableWidget(0, len(local.COLUMNS))
        self.table.setHorizontalHeaderLabels(local.COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(self._on_table_cell_double_clicked)
        box = QVBoxLayout(self)
        box.setContentsMargins(em * 2, em * 2, em * 2, em)
        box.setSpacing(em // 2)
        box.addWidget(title)
        box.addWidget(subtitle)
        box.addLayout(bar)
        box.addWidget(self.error)
        box.addWidget(self.problems)
        box.addWidget(self.table, 1)
        self._update_buttons()
        self._on_theme_changed(theme.notifier().scheme)
        theme.notifier().changed.connect(self._on_theme_changed)

    def _on_theme_changed(self, _scheme: str) -> None:
        self.refresh_button.setIcon(theme.icon("refresh"))
        self.launch_button.setIcon(theme.icon("launch"))
        self.delete_button.setIcon(theme.icon("remove"))
        if self._answer is not None:
            self._on_library_loaded(self._answer)  # the "used by" colour is the theme's

    # ------------------------------------------------------------------ the list

    def refresh(self) -> None:
        """List the models on disk again."""
        self._loading = True
        self.refresh_button.setEnabled(False)
        self.state.setText("Listing the models on disk…")
        self._calls.get("/api/library", self._on_library_loaded, self._on_library_failed, timeout_ms=LIST_TIMEOUT_MS)

    def _on_library_loaded(self, answer: dict) -> None:
        self._answer = answer
        self._loading = False
        self.refresh_button.setEnabled(True)
        selected = (self.selected() or {}).get("id")
        self.models = sorted(answer.get("models") or [], key=lambda m: (m.get("name") or "").lower())
        table = self.table
        table.setSortingEnabled(False)
        table.setRowCount(len(self.models))
        for r, m in enumerate(self.models):
            for c, text in enumerate(local.library_cells(m)):
                item = QTableWidgetItem(text)
                if c == 0:
                    item.setData(Qt.ItemDataRole.UserRole, m.get("id"))
                    item.setToolTip(f"{text}\n{m.get('path') or ''}")
                if c in (3, 4, 5):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if c == 6:
                    item.setToolTip(f"{text}\n{m.get('path') or ''}")
                if c == 8 and m.get("used_by"):
                    item.setForeground(theme.color("warning"))
                    item.setToolTip("Deployments that use this model: it cannot be deleted while they exist")
                table.setItem(r, c, item)
        table.resizeColumnsToContents()
        self._fit_columns()
        self.state.setText(local.library_summary(self.models, answer.get("scanned_ms"))
                           if self.models else "No models on disk yet. Find one on the Discover page.")
        if selected:
            self.select(selected)
        problems = [str(p) for p in answer.get("problems") or []]
        self.problems.setText("Not listed now: " + "; ".join(problems) if problems else "")
        self.problems.setVisible(bool(problems))
        refused = next((m for m in self.models if m.get("id") == self._refused_id), None)
        if self._refused_id is not None and not (refused or {}).get("used_by"):
            self._refused_id = None  # the deployment that held it is gone: the refusal is old news
            self.error.hide()
        self._update_buttons()
        self.library_loaded.emit(self.models)

    def _fit_columns(self) -> None:
        """Name and Where give up width (elided in the middle; the tooltip has all) only when the row is too wide."""
        table = self.table
        em = self.fontMetrics().horizontalAdvance("M")
        last = table.columnCount() - 1  # stretched: count what it needs, not what it was given
        header = table.horizontalHeader()
        need = max(table.sizeHintForColumn(last), header.sectionSizeHint(last), header.defaultSectionSize())
        over = sum(table.columnWidth(c) for c in range(last)) + need - table.viewport().width()
        for c in (6, 0):  # Where first: a path tells less at a glance than a name
            if over <= 0:
                break
            give = min(over, max(0, table.columnWidth(c) - em * 14))
            table.setColumnWidth(c, table.columnWidth(c) - give)
            over -= give
        table.horizontalHeader().setStretchLastSection(False)  # stretch again over the new widths
        table.horizontalHeader().setStretchLastSection(True)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._refit()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        QTimer.singleShot(0, self, self._refit)  # a page filled while hidden had no width to fit to
        if self._answer is not None and not self._loading:
            self.refresh()  # a download or a delete elsewhere since: listing takes milliseconds

    def _refit(self) -> None:
        if self.models:
            self.table.resizeColumnsToContents()
            self._fit_columns()

    def _on_library_failed(self, error: ApiError) -> None:
        self._loading = False
        self.refresh_button.setEnabled(True)
        self.state.setText("The list could not be read.")
        self._show_error(f"Could not list the models on disk: {error}")

    def selected(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or not 0 <= rows[0].row() < len(self.models):
            return None
        return self.models[rows[0].row()]

    def select(self, model_id: str) -> bool:
        """Select the row of a model by id; False when it is not listed."""
        for r, m in enumerate(self.models):
            if m.get("id") == model_id:
                self.table.selectRow(r)
                return True
        return False

    def row_of(self, predicate) -> int:
        """The first row whose model matches ``predicate``, or -1."""
        return next((r for r, m in enumerate(self.models) if predicate(m)), -1)

    def _update_buttons(self) -> None:
        m = self.selected()
        self.delete_button.setEnabled(m is not None)
        self.launch_button.setEnabled(m is not None and local.launch_of(m) is not None)
        if m is not None and m.get("used_by"):
            self.delete_button.setToolTip(f"In use by {', '.join(m['used_by'])}: remove "
                                          f"{'that deployment' if len(m['used_by']) == 1 else 'those'} first")
        else:
            self.delete_button.setToolTip("Remove the model's files from disk (refused while a deployment uses it)")

    def _on_table_cell_double_clicked(self, _row: int, _column: int) -> None:
        self.launch_selected()

    # ------------------------------------------------------------------ actions

    def launch_selected(self) -> None:
        m = self.selected()
        launch = local.launch_of(m) if m else None
        if launch is not None:
            self.launch_requested.emit(*launch)

    def _on_delete_button_clicked(self) -> None:
        self.delete_selected()  # clicked(bool) must never reach ``confirm``

    def delete_selected(self, confirm: bool = True) -> None:
        """Delete the selected model's files after asking; a refusal (in use: 409) shows above the table."""
        m = self.selected()
        if m is None:
            return
        if confirm:
            answer = QMessageBox.question(self, f"Delete {m.get('name')}?", local.delete_question(m),
                                          QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                                          QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.error.hide()
        self.delete_button.setEnabled(False)
        self._calls.delete(f"/api/library/{quote(m['id'], safe='')}", lambda _a: self._on_deleted(m),
                           lambda e: self._on_delete_failed(m, e), timeout_ms=LIST_TIMEOUT_MS)

    def _on_deleted(self, m: dict) -> None:
        self.message.emit(f"Deleted {m.get('name')}", False)
        self.deleted.emit(m.get("id", ""))
        self.refresh()

    def _on_delete_failed(self, m: dict, error: ApiError) -> None:
        self._refused_id = m.get("id") if error.status == 409 else None
        text = local.delete_refusal(m, error.status, error.message, error.details)
        if error.hint and error.status != 409:
            text += f" {error.hint}"
        self._show_error(text)
        self._update_buttons()
        self.message.emit(text, True)
        self.delete_refused.emit(text)

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    def shutdown(self) -> None:
        self._calls.abort_all()

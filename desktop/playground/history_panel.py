"""The playground's history sidebar: past runs from the backend, searchable; reopen, delete, export."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from urllib.parse import urlencode

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout, QWidget)

from desktop.client import ApiError, BackendClient

PAGE_SIZE = 100
SEARCH_DELAY_MS = 300


def summary_text(summary: dict) -> str:
    """Two lines for the list: the prompt's start, then model, time and metrics."""
    when = time.strftime("%d %b %H:%M", time.localtime(summary.get("created_at", 0)))
    facts = [summary.get("model", "?"), when]
    if summary.get("completion_tokens") is not None:
        facts.append(f"{summary['completion_tokens']} tok")
    if summary.get("tokens_per_s"):
        facts.append(f"{summary['tokens_per_s']:.0f} tok/s")
    if summary.get("status") == 499:
        facts.append("stopped")
    elif summary.get("error"):
        facts.append("error")
    preview = " ".join((summary.get("preview") or "(no prompt)").split())
    return f"{preview}\n{' · '.join(facts)}"


class HistoryPanel(QWidget):
    """Lists ``/api/history`` and acts on the selected entry.

    Signals:
        reopen_requested(object): a whole history entry (dict) to load into the transcript.
        message(str, bool): something to tell the person, and whether it is an error.
        loaded(): the list was just refreshed from the backend.
    """

    reopen_requested = Signal(object)
    message = Signal(str, bool)
    loaded = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._client = client
        self._generation = 0
        self.entries: list[dict] = []

        self.search_edit = QLineEdit()
        self.search_edit.setPlaceholderText("Search history…")
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.textChanged.connect(self._on_search_edit_text_changed)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setAlternatingRowColors(True)
        self.list.setStyleSheet("QListWidget::item { padding: 4px 2px; }")
        self.list.itemDoubleClicked.connect(self._on_list_item_double_clicked)
        self.list.currentRowChanged.connect(self._on_list_current_row_changed)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.reopen_button = QPushButton("Reopen")
        self.reopen_button.setToolTip("Load this run into the transcript (double-click does the same)")
        self.reopen_button.clicked.connect(self.reopen_selected)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the matching runs as a JSON file")
        self.export_button.clicked.connect(self._on_export_button_clicked)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh)

        top = QHBoxLayout()
        top.addWidget(self.search_edit, 1)
        top.addWidget(self.refresh_button)
        actions = QHBoxLayout()
        for button in (self.reopen_button, self.delete_button, self.export_button):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>History</b>")
        layout.addWidget(title)
        layout.addLayout(top)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.status_label)
        layout.addLayout(actions)
        self._update_buttons()

    def _query(self) -> str:
        params = {"limit": PAGE_SIZE}
        if self.search_edit.text().strip():
            params["q"] = self.search_edit.text().strip()
        return urlencode(params)

    def selected_id(self) -> int | None:
        item = self.list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select_id(self, entry_id: int) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == entry_id:
                self.list.setCurrentRow(row)
                return

    # ------------------------------------------------------------------ actions

    def refresh(self) -> None:
        """Reload the list (answers to earlier, slower refreshes are ignored)."""
        self._generation += 1
        generation = self._generation  # answers to earlier, slower refreshes are ignored
        reply = self._client.get(f"/api/history?{self._query()}")
        reply.setProperty("generation", generation)
        reply.succeeded.connect(self._on_list_reply_succeeded)
        reply.failed.connect(self._on_request_failed)

    def reopen_selected(self) -> None:
        entry_id = self.selected_id()
        if entry_id is None:
            return
        reply = self._client.get(f"/api/history/{entry_id}")
        reply.succeeded.connect(self.reopen_requested)
        reply.failed.connect(self._on_request_failed)

    def delete_selected(self) -> None:
        entry_id = self.selected_id()
        if entry_id is None:
            return
        reply = self._client.delete(f"/api/history/{entry_id}")
        reply.succeeded.connect(self.refresh)
        reply.failed.connect(self._on_request_failed)

    def export_to(self, path: str | Path) -> None:
        """Fetch the matching runs and write them to ``path`` as JSON; ``message`` says when done."""
        params = {k: v for k, v in (("q", self.search_edit.text().strip()),) if v}
        reply = self._client.get("/api/history/export" + (f"?{urlencode(params)}" if params else ""),
                                 timeout_ms=60000)
        reply.setProperty("path", str(path))
        reply.succeeded.connect(self._on_export_reply_succeeded)
        reply.failed.connect(self._on_request_failed)

    # ------------------------------------------------------------------ slots

    def _on_search_edit_text_changed(self, _text: str) -> None:
        self._search_timer.start()

    def _on_list_item_double_clicked(self, _item: QListWidgetItem) -> None:
        self.reopen_selected()

    def _on_list_current_row_changed(self, _row: int) -> None:
        self._update_buttons()

    def _on_export_button_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export history", "modeldeck-history.json",
                                              "JSON files (*.json)")
        if path:
            self.export_to(path)

    def _on_list_reply_succeeded(self, body: object) -> None:
        if self.sender().property("generation") != self._generation:
            return
        keep = self.selected_id()
        self.entries = body if isinstance(body, list) else []
        self.list.clear()
        for summary in self.entries:
            item = QListWidgetItem(summary_text(summary))
            item.setData(Qt.ItemDataRole.UserRole, summary.get("id"))
            item.setToolTip(summary.get("output_preview") or "")
            self.list.addItem(item)
        if keep is not None:
            self.select_id(keep)
        self.status_label.setText("" if self.entries else "No runs yet." if not self.search_edit.text()
                                  else "Nothing matches.")
        self._update_buttons()
        self.loaded.emit()

    def _on_export_reply_succeeded(self, body: object) -> None:
        path = Path(self.sender().property("path"))
        try:
            text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False, indent=2)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            self.message.emit(f"Could not write {path}: {exc.strerror or exc}.", True)
            return
        count = len(body) if isinstance(body, list) else "the"
        self.message.emit(f"Exported {count} runs to {path}.", False)

    def _on_request_failed(self, error: ApiError) -> None:
        self.status_label.setText(f"<span style='color: #b00020'>{html.escape(str(error))}</span>")

    def _update_buttons(self) -> None:
        selected = self.selected_id() is not None
        self.reopen_button.setEnabled(selected)
        self.delete_button.setEnabled(selected)

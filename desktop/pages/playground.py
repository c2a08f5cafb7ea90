"""The Playground page: chat with a model (ready, or loaded on request), or compare two to four side by side,
with history."""

from __future__ import annotations

import uuid

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeyEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QSplitter, QVBoxLayout,
                               QWidget)

from desktop.client import ApiError, BackendClient
from desktop.lifecycle import model_label
from desktop.playground.column import ERROR_STYLE, ReplyColumn
from desktop.playground.export import as_curl, as_python
from desktop.playground.history_panel import HistoryPanel
from desktop.playground.request import GenerationParams, parse_seed, parse_stop
from desktop.playground.transcript import Transcript

MAX_COLUMNS = 4
MODELS_RETRY_MS = 5000
INFO_STYLE = "color: palette(text); padding: 4px;"


class PromptEdit(QPlainTextEdit):
    """The prompt box: Enter sends, Shift+Enter starts a new line.

    Signals:
        submitted(): Enter was pressed.
    """

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 (Qt's naming)
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
                event.modifiers() & Qt.KeyboardModifier.ShiftModifier):
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class PlaygroundPage(QWidget):
    """Prompt testing against the backend's OpenAI API, streaming into one column per model.

    Signals:
        models_changed(list): the served names /v1/models lists (ready ones first, then those that load
            on request), after each refresh.
        send_finished(): every column of the last send has finished (done, stopped or failed).
    """

    models_changed = Signal(list)
    send_finished = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._client = client
        self._models: list[str] = []
        self._pending: set[ReplyColumn] = set()
        self._sent_prompt = ""
        self._all_failed_empty = True

        self.columns = [ReplyColumn(client) for _ in range(MAX_COLUMNS)]
        for column in self.columns:
            column.finished.connect(self._on_column_finished)
        self._build()
        self._models_timer = QTimer(self)
        self._models_timer.setSingleShot(True)
        self._models_timer.setInterval(MODELS_RETRY_MS)
        self._models_timer.timeout.connect(self.refresh_models)
        self._set_compare(False)

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.system_edit.setMaximumHeight(110)
        self.temperature_spin = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=2.0, singleStep=0.1, value=0.7)
        self.top_p_spin = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, singleStep=0.05, value=1.0)
        self.max_tokens_spin = QSpinBox(minimum=1, maximum=131072, value=512)
        self.stop_edit = QLineEdit(placeholderText="e.g. \\n\\n, END")
        self.stop_edit.setToolTip("Stop sequences, separated by commas; \\n means a new line")
        self.seed_edit = QLineEdit(placeholderText="random")
        params = QGroupBox("Parameters")
        form = QFormLayout(params)
        form.addRow("System", self.system_edit)
        form.addRow("Temperature", self.temperature_spin)
        form.addRow("Top p", self.top_p_spin)
        form.addRow("Max tokens", self.max_tokens_spin)
        form.addRow("Stop", self.stop_edit)
        form.addRow("Seed", self.seed_edit)
        self.compare_check = QCheckBox("Compare models")
        self.compare_check.setToolTip("Send the same prompt to several models, side by side")
        self.compare_check.toggled.connect(self._on_compare_check_toggled)
        self.compare_count_spin = QSpinBox(minimum=2, maximum=MAX_COLUMNS, value=2, suffix=" columns")
        self.compare_count_spin.valueChanged.connect(self._on_compare_count_spin_value_changed)
        self.refresh_models_button = QPushButton("Refresh models")
        self.refresh_models_button.clicked.connect(self.refresh_models)
        self.copy_curl_button = QPushButton("Copy as curl")
        self.copy_curl_button.clicked.connect(self.copy_as_curl)
        self.copy_python_button = QPushButton("Copy as Python")
        self.copy_python_button.clicked.connect(self.copy_as_python)
        self.clear_button = QPushButton("New chat")
        self.clear_button.clicked.connect(self.clear)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(params)
        compare_row = QHBoxLayout()
        compare_row.addWidget(self.compare_check)
        compare_row.addWidget(self.compare_count_spin)
        side_layout.addLayout(compare_row)
        for button in (self.refresh_models_button, self.copy_curl_button, self.copy_python_button,
                       self.clear_button):
            side_layout.addWidget(button)
        side_layout.addStretch(1)

        self.columns_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.columns_splitter.setChildrenCollapsible(False)
        for column in self.columns:
            self.columns_splitter.addWidget(column)
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet(ERROR_STYLE)
        self.banner.hide()
        self.prompt_edit = PromptEdit()
        self.prompt_edit.setPlaceholderText("Ask something… (Enter sends, Shift+Enter for a new line, Esc stops)")
        self.prompt_edit.setMaximumHeight(96)
        self.prompt_edit.submitted.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop generating (Esc)")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        prompt_row = QHBoxLayout()
        prompt_row.addWidget(self.prompt_edit, 1)
        prompt_row.addLayout(buttons)
        center = QWidget()
        center_layout = QVBoxLayout(center)
        center_layout.setContentsMargins(0, 0, 0, 0)
        center_layout.addWidget(self.banner)
        center_layout.addWidget(self.columns_splitter, 1)
        center_layout.addLayout(prompt_row)

        self.history = HistoryPanel(self._client)
        self.history.reopen_requested.connect(self._on_history_reopen_requested)
        self.history.message.connect(self._on_history_message)
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(side)
        splitter.addWidget(center)
        splitter.addWidget(self.history)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([260, 800, 280])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        escape.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.activated.connect(self.stop)

    # ------------------------------------------------------------------ state

    def visible_columns(self) -> list[ReplyColumn]:
        count = self.compare_count_spin.value() if self.compare_check.isChecked() else 1
        return self.columns[:count]

    def params(self) -> GenerationParams:
        """The parameters as typed. Raises ValueError for a bad stop list or seed."""
        return GenerationParams(temperature=self.temperature_spin.value(), top_p=self.top_p_spin.value(),
                                max_tokens=self.max_tokens_spin.value(), stop=parse_stop(self.stop_edit.text()),
                                seed=parse_seed(self.seed_edit.text()))

    def current_request(self) -> dict:
        """The body the first column would send for the prompt in the box (or the last prompt)."""
        column = self.columns[0]
        column.transcript.system_prompt = self.system_edit.toPlainText()
        prompt = self.prompt_edit.toPlainText().strip() or column.transcript.last_user_text() or "Hello!"
        return column.request_for(prompt, self.params())

    def streams(self) -> list:
        """Every column's open streams."""
        return [s for column in self.columns for s in column.streams()]

    def show_error(self, text: str) -> None:
        """Show ``text`` in red above the columns until the next action ('' hides it)."""
        self.banner.setStyleSheet(ERROR_STYLE)
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    def show_info(self, text: str) -> None:
        self.banner.setStyleSheet(INFO_STYLE)
        self.banner.setText(text)
        self.banner.setVisible(bool(text))

    # ------------------------------------------------------------------ actions

    def refresh_models(self) -> None:
        """Reload the ready models from /v1/models (retries every few seconds while that fails)."""
        reply = self._client.get("/v1/models")
        reply.succeeded.connect(self._on_models_reply_succeeded)
        reply.failed.connect(self._on_models_reply_failed)

    def send(self) -> None:
        """Send the prompt to every visible column; nothing is lost when it cannot be sent."""
        if self._pending:
            return
        prompt = self.prompt_edit.toPlainText().strip()
        if not prompt:
            return
        columns = self.visible_columns()
        try:
            params = self.params()
            for column in columns:
                if not column.model():
                    raise ValueError("No ready model to send to. Launch one on the Models page, "
                                     "then press Refresh models.")
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        tag = f"compare-{uuid.uuid4().hex[:8]}" if len(columns) > 1 else None
        self._sent_prompt, self._all_failed_empty = prompt, True
        self.prompt_edit.clear()
        for column in columns:
            column.send(prompt, params, self.system_edit.toPlainText(), tag)
            self._pending.add(column)
        self._set_busy(True)

    def stop(self) -> None:
        """Stop every streaming reply now."""
        for column in self.columns:
            column.stop()

    def clear(self) -> None:
        for column in self.columns:
            column.clear()

    def copy_as_curl(self) -> str:
        return self._copy(as_curl)

    def copy_as_python(self) -> str:
        return self._copy(as_python)

    def _copy(self, render) -> str:
        try:
            text = render(self._client.base_url, self.current_request())
        except ValueError as exc:
            self.show_error(str(exc))
            return ""
        QGuiApplication.clipboard().setText(text)
        return text

    def shutdown(self) -> None:
        """Abort every stream (the window is closing); returns at once."""
        self._models_timer.stop()
        for column in self.columns:
            column.shutdown()

    def _set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.compare_check.setEnabled(not busy)
        self.compare_count_spin.setEnabled(not busy)

    def _set_compare(self, on: bool) -> None:
        self.compare_count_spin.setVisible(on)
        shown = self.visible_columns()
        for column in self.columns:
            column.setVisible(column in shown)

    # ------------------------------------------------------------------ slots

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        super().showEvent(event)
        self.refresh_models()  # deployments may have come and gone while another page was shown
        self.history.refresh()

    def _on_compare_check_toggled(self, on: bool) -> None:
        self._set_compare(on)
        if on:  # offer a different model in each new column where there are enough
            for i, column in enumerate(self.visible_columns()[1:], 1):
                if column.model() == self.columns[0].model() and len(self._models) > i:
                    column.select_model(self._models[i])

    def _on_compare_count_spin_value_changed(self, _value: int) -> None:
        self._on_compare_check_toggled(self.compare_check.isChecked())

    def _on_models_reply_succeeded(self, body: object) -> None:
        data = [m for m in (body.get("data", []) if isinstance(body, dict) else [])
                if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
        # Ready models first, then those that load on request (a request loads them: issue 14).
        self._models = [m["id"] for m in sorted(data, key=lambda m: (m.get("state", "ready") != "ready", m["id"]))]
        labels = {m["id"]: model_label(m) for m in data}
        for i, column in enumerate(self.columns):
            had = column.model()
            column.set_models(self._models, labels)
            if not had and len(self._models) > i and i > 0:
                column.select_model(self._models[i])
        if self.banner.text().startswith("Cannot load models"):
            self.show_error("")
        self.models_changed.emit(self._models)

    def _on_models_reply_failed(self, error: ApiError) -> None:
        self.show_error(f"Cannot load models: {error} Retrying…")
        if self.isVisible():
            self._models_timer.start()

    def _on_column_finished(self, column: ReplyColumn, ok: bool, failed_empty: bool) -> None:
        self._pending.discard(column)
        self._all_failed_empty = self._all_failed_empty and failed_empty
        if self._pending:
            return
        self._set_busy(False)
        if self._all_failed_empty and not self.prompt_edit.toPlainText():
            self.prompt_edit.setPlainText(self._sent_prompt)  # a send that failed outright loses nothing
        if not ok and any("does not exist" in c.error_label.text() for c in self.visible_columns()) or any(
                c.model_is_unloaded() for c in self.visible_columns()):
            self.refresh_models()  # a model gone, or one that loaded on request: the pickers say so now
        self.history.refresh()
        self.send_finished.emit()

    def _on_history_reopen_requested(self, entry: object) -> None:
        if not isinstance(entry, dict):
            return
        self.stop()
        transcript = Transcript.from_history(entry)
        self.compare_check.setChecked(False)
        self.system_edit.setPlainText(transcript.system_prompt)
        params = entry.get("params") or {}
        for key, spin in (("temperature", self.temperature_spin), ("top_p", self.top_p_spin),
                          ("max_tokens", self.max_tokens_spin)):
            if isinstance(params.get(key), (int, float)):
                spin.setValue(params[key])
        stop = params.get("stop")
        stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
        self.stop_edit.setText(", ".join(s.replace("\n", "\\n") for s in stops))
        self.seed_edit.setText(str(params["seed"]) if isinstance(params.get("seed"), int) else "")
        self.columns[0].select_model(entry.get("model", ""))
        self.columns[0].load(transcript)

    def _on_history_message(self, text: str, is_error: bool) -> None:
        if is_error:
            self.show_error(text)
        else:
            self.show_info(text)

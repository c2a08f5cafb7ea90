"""A live-following log window for one deployment: search with highlight, pause, auto-scroll, copy."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import (QColor, QGuiApplication, QKeySequence, QShortcut, QTextCharFormat,
                           QTextCursor)
from PySide6.QtWidgets import (QCheckBox, QDialog, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QTextEdit, QVBoxLayout, QWidget)

from desktop import fonts, theme
from desktop.client import ApiError, BackendClient, SseStream

TAIL = 500
MAX_LINES = 20000
FLUSH_MS = 100


class LogsDialog(QDialog):
    """Follows ``/api/deployments/{id}/logs?follow=true`` in an SseStream (non-modal; deletes itself on close).

    No signals of its own; ``lines_received`` counts the lines seen (tests read it).
    """

    def __init__(self, client: BackendClient, deployment: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowFlag(Qt.WindowType.WindowMaximizeButtonHint)
        self.client, self.deployment = client, deployment
        name = deployment.get("served_name") or deployment["id"]
        self.setWindowTitle(f"Logs — {name}")
        self.lines_received = 0
        self._pending: list[str] = []
        self._stream: SseStream | None = None

        self.view = QPlainTextEdit()
        self.view.setObjectName("logView")
        self.view.setReadOnly(True)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setFont(fonts.fixed_font())
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search the log (Enter: next match)")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(theme.icon("search", "text_muted"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.textChanged.connect(self._on_search_text_changed)
        self.search.returnPressed.connect(self._on_search_return_pressed)
        self.matches = QLabel()
        self.matches.setProperty("muted", True)
        self.matches.setMinimumWidth(self.fontMetrics().horizontalAdvance("0000 matches"))
        self.pause = QCheckBox("Pause")
        self.pause.setToolTip("Hold new lines back (they are kept and shown on resume)")
        self.pause.toggled.connect(self._on_pause_toggled)
        self.autoscroll = QCheckBox("Auto-scroll")
        self.autoscroll.setChecked(True)
        copy = QPushButton(theme.icon("copy"), "Copy")
        copy.setToolTip("Copy the selection, or the whole log when nothing is selected")
        copy.clicked.connect(self._on_copy_clicked)
        close = QPushButton("Close")
        close.clicked.connect(self.close)
        self.state = QLabel("Connecting…")
        self.state.setProperty("muted", True)

        top = QHBoxLayout()
        top.addWidget(self.search, 1)
        top.addWidget(self.matches)
        top.addWidget(self.pause)
        top.addWidget(self.autoscroll)
        bottom = QHBoxLayout()
        bottom.addWidget(self.state, 1)
        bottom.addWidget(copy)
        bottom.addWidget(close)
        box = QVBoxLayout(self)
        box.addLayout(top)
        box.addWidget(self.view, 1)
        box.addLayout(bottom)
        QShortcut(QKeySequence.StandardKey.Find, self, activated=self.search.setFocus)
        em = self.fontMetrics().horizontalAdvance("M")
        self.resize(em * 70, em * 36)

        self._flush = QTimer(self)
        self._flush.setInterval(FLUSH_MS)
        self._flush.timeout.connect(self._on_flush_timeout)
        self._flush.start()
        stream = client.stream(f"/api/deployments/{deployment['id']}/logs?follow=true&tail={TAIL}")
        stream.event.connect(self._on_stream_event)
        stream.failed.connect(self._on_stream_failed)
        stream.ended.connect(self._on_stream_ended)
        self._stream = stream
        stream.start()

    def text(self) -> str:
        return self.view.toPlainText()

    def _on_stream_event(self, name: str, data: object) -> None:
        if name == "log" and isinstance(data, dict):
            self._pending.append(str(data.get("line", "")).rstrip("\n"))
            self.lines_received += 1
        elif name == "end":
            self.state.setText("The container's log ended (it stopped).")

    def _on_stream_failed(self, error: ApiError) -> None:
        self.state.setText(f"Log stream stopped: {error}")

    def _on_stream_ended(self) -> None:
        self._stream = None

    def _on_flush_timeout(self) -> None:
        if not self._pending or self.pause.isChecked():
            return
        lines, self._pending = self._pending, []
        bar = self.view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        cursor = QTextCursor(self.view.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(("\n" if not self.view.document().isEmpty() else "") + "\n".join(lines))
        if self.autoscroll.isChecked() or at_end:
            bar.setValue(bar.maximum())
        if self.state.text() == "Connecting…" or self.state.text().startswith("Following"):
            self.state.setText(f"Following · {self.view.document().blockCount()} lines")
        if self.search.text():
            self._highlight(self.search.text())

    def _on_pause_toggled(self, paused: bool) -> None:
        self.state.setText("Paused: new lines are held back." if paused else "Following")
        if not paused:
            self._on_flush_timeout()

    def _on_search_text_changed(self, text: str) -> None:
        self._highlight(text)

    def _highlight(self, text: str) -> int:
        """Highlight every match of ``text``; returns how many there are."""
        selections = []
        if text:
            fmt = QTextCharFormat()
            fmt.setBackground(QColor(theme.color("warning")).lighter(130))
            fmt.setForeground(QColor("#000000"))
            doc = self.view.document()
            cursor = doc.find(text, 0)
            while not cursor.isNull() and len(selections) < 5000:
                sel = QTextEdit.ExtraSelection()
                sel.cursor, sel.format = cursor, fmt
                selections.append(sel)
                cursor = doc.find(text, cursor)
        self.view.setExtraSelections(selections)
        self.matches.setText(f"{len(selections)} matches" if text else "")
        return len(selections)

    def _on_search_return_pressed(self) -> None:
        text = self.search.text()
        if text and not self.view.find(text):
            self.view.moveCursor(QTextCursor.MoveOperation.Start)
            self.view.find(text)
        self.autoscroll.setChecked(False)

    def _on_copy_clicked(self) -> None:
        selected = self.view.textCursor().selectedText().replace("\u2029", "\n")
        QGuiApplication.clipboard().setText(selected or self.view.toPlainText())

    def shutdown(self) -> None:
        """Abort the log stream; returns at once, so closing never waits."""
        self._flush.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()

    def done(self, result: int) -> None:
        self.shutdown()
        super().done(result)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)


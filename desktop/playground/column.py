"""One reply column of the playground: a model picker, its own transcript, streaming view, metrics and Stop."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop.client import BackendClient
from desktop.playground.request import GenerationParams, build_chat_request, request_headers
from desktop.playground.run import ReplyRun
from desktop.playground.transcript import ReplyMetrics, Transcript, Turn
from desktop.widgets.markdown_view import MarkdownView

ERROR_STYLE = "color: #b00020; padding: 4px;"
LIVE_LABEL_EVERY_S = 0.25  # the live token count and time, at most this often


class ReplyColumn(QFrame):
    """A conversation with one model. The page sends the same prompt to every visible column.

    Signals:
        finished(object, bool, bool): this column, whether the reply succeeded, and whether it
            failed before any text arrived (the page then gives the prompt back).
    """

    finished = Signal(object, bool, bool)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._client = client
        self.transcript = Transcript()
        self._run: ReplyRun | None = None
        self._runs: list[ReplyRun] = []  # kept until their streams have ended (a reply may end before its stream)
        self._turn: Turn | None = None
        self._label_at = 0.0  # time.monotonic() of the last live metrics shown

        self.model_combo = QComboBox()
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setPlaceholderText("no ready model")
        self.model_combo.setToolTip("The model this column talks to: a ready one, or one that loads on request")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop this column's reply")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self._on_stop_button_clicked)
        self.view = MarkdownView()
        self.view.setPlaceholderText("Replies appear here.")
        self.metrics_label = QLabel(" ")
        self.metrics_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # Wrapped, the summary never widens a narrow column: that resized every compare column at
        # the end of a reply, and Qt laid out each transcript again at its new width.
        self.metrics_label.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(ERROR_STYLE)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        # While a model that was not loaded loads on request, the wait is counted so it does not look stuck.
        self._loading_since: float | None = None
        self._loading_timer = QTimer(self)
        self._loading_timer.setInterval(1000)
        self._loading_timer.timeout.connect(self._on_loading_timer_timeout)

        head = QHBoxLayout()
        head.addWidget(self.model_combo, 1)
        head.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(head)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.error_label)
        layout.addWidget(self.metrics_label)

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> bool:
        return self._run is not None and self._run.active

    @property
    def run(self) -> ReplyRun | None:
        return self._run

    def model(self) -> str:
        """The served name picked (an item's text may say more: "demo (unloaded — loads on request)")."""
        data = self.model_combo.currentData()
        return data if isinstance(data, str) else self.model_combo.currentText()

    def set_models(self, names: list[str], labels: dict[str, str] | None = None) -> None:
        """Offer ``names`` (shown as ``labels[name]`` where given), keeping the current choice when it is still there."""
        current = self.model()
        labels = labels or {}
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for name in names:
            self.model_combo.addItem(labels.get(name, name), name)
            if labels.get(name, name) != name:
                self.model_combo.setItemData(self.model_combo.count() - 1,
                                             "Not loaded now: sending to it loads it first (this takes a while)",
                                             Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentIndex(names.index(current) if current in names else (0 if names else -1))
        self.model_combo.blockSignals(False)

    def select_model(self, name: str) -> None:
        if not name:
            return
        if self.model_combo.findData(name) < 0:
            self.model_combo.addItem(name, name)
        self.model_combo.setCurrentIndex(self.model_combo.findData(name))

    def model_is_unloaded(self) -> bool:
        """The picked model is not loaded now (its label says so): the first token waits for its load."""
        return self.model_combo.currentText() != self.model() and self.model_combo.currentIndex() >= 0

    def request_for(self, prompt: str, params: GenerationParams) -> dict:
        """The body that sending ``prompt`` now would post. Raises ValueError as ``build_chat_request``."""
        return build_chat_request(self.model(), self.transcript.messages(prompt), params)

    # ------------------------------------------------------------------ actions

    def send(self, prompt: str, params: GenerationParams, system_prompt: str, tag: str | None = None) -> None:
        """Start streaming the reply to ``prompt``.

        Raises:
            ValueError: no model picked, or a reply is still streaming.
        """
        if self.busy:
            raise ValueError("A reply is still streaming; stop it first.")
        self.transcript.system_prompt = system_prompt
        body = self.request_for(prompt, params)
        self._prune_runs()
        self.error_label.hide()
        self.transcript.add_user(prompt)
        self._turn = self.transcript.start_reply(body["model"])
        self._label_at = 0.0
        run = ReplyRun(self._client, body, request_headers(tag), self)
        run.delta.connect(self._on_run_delta)
        run.done.connect(self._on_run_done)
        run.failed.connect(self._on_run_failed)
        self._run = run
        self._runs.append(run)
        self.stop_button.setEnabled(True)
        if self.model_is_unloaded():
            self._loading_since = time.monotonic()
            self._loading_timer.start()
            self._on_loading_timer_timeout()
        else:
            self.metrics_label.setText("waiting for the first token…")
        self._render(now=True)
        run.start()

    def stop(self) -> None:
        if self._run is not None and self._run.active:
            self._run.stop()

    def clear(self) -> None:
        self.stop()
        self.transcript.clear()
        self.error_label.hide()
        self.metrics_label.setText(" ")
        self._render(now=True)

    def load(self, transcript: Transcript) -> None:
        """Show a reopened conversation (it continues from there)."""
        self.stop()
        self.transcript = transcript
        self.error_label.hide()
        last = next((t for t in reversed(transcript.turns) if t.metrics is not None), None)
        self.metrics_label.setText(last.metrics.summary() if last else " ")
        self._render(now=True)

    def shutdown(self) -> None:
        """Abort every stream now (the window is closing); nothing waits."""
        self._stop_loading_clock()
        for run in self._runs:
            run.shutdown()
        self._prune_runs()

    def streams(self) -> list:
        """The streams still open."""
        return [r.stream for r in self._runs if r.stream.running]

    def _prune_runs(self) -> None:
        keep = []
        for run in self._runs:
            if not run.stream.running:
                run.deleteLater()
            else:
                keep.append(run)
        self._runs = keep

    def _render(self, now: bool = False) -> None:
        self.view.set_markdown(self.transcript.to_markdown())
        if now:
            self.view.flush()

    # ------------------------------------------------------------------ slots

    def _on_stop_button_clicked(self) -> None:
        self.stop()

    def _on_loading_timer_timeout(self) -> None:
        if self._loading_since is None or self._turn is None:
            self._loading_timer.stop()
            return
        waited = int(time.monotonic() - self._loading_since)
        self.metrics_label.setText(f"loading {self._turn.model} on request, then the first token… {waited} s")

    def _stop_loading_clock(self) -> None:
        self._loading_since = None
        self._loading_timer.stop()

    def _on_run_delta(self, text: str) -> None:
        if self._turn is None or self.sender() is not self._run:
            return
        self._stop_loading_clock()
        self._turn.content += text
        now = time.monotonic()
        if now - self._label_at >= LIVE_LABEL_EVERY_S:  # per token would relay the label 50 times a second
            self._label_at = now
            live = self._run.metrics()
            self.metrics_label.setText(f"streaming… {live.completion_tokens} tokens · {live.total_s:.1f} s")
        self._render()

    def _end_turn(self, metrics: ReplyMetrics, reason: str | None, error: str | None) -> None:
        self._stop_loading_clock()
        if self._turn is not None:
            self._turn.streaming = False
            self._turn.metrics = metrics
            self._turn.finish_reason = reason
            self._turn.error = error
        self._turn = None
        self.stop_button.setEnabled(False)
        self.metrics_label.setText(metrics.summary() + (" · stopped" if reason == "stopped" else ""))

    def _on_run_done(self, metrics: ReplyMetrics, reason: str) -> None:
        if self.sender() is not self._run:
            return
        self._end_turn(metrics, reason, None)
        self._render(now=True)
        self.finished.emit(self, True, False)

    def _on_run_failed(self, message: str, before_text: bool) -> None:
        if self.sender() is not self._run:
            return
        self._stop_loading_clock()
        if before_text:
            self.transcript.drop_last_exchange()
            self._turn = None
            self.stop_button.setEnabled(False)
            self.metrics_label.setText(" ")
        else:
            self._end_turn(self._run.metrics(), "error", message)
        self.error_label.setText(message)
        self.error_label.show()
        self._render(now=True)
        self.finished.emit(self, False, before_text)

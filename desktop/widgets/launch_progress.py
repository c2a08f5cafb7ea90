"""Following one launch: its phases as steps, a real progress bar for pulling and building, and why it failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QVBoxLayout,
                               QWidget)

from desktop import fonts
from desktop.client import ApiError, BackendClient, SseStream
from desktop.formatting import format_bytes

#: The steps shown, and which launch phases belong to each.
STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("Image", ("queued", "pulling", "building")),
    ("Create", ("creating",)),
    ("Start", ("starting",)),
    ("Load model", ("loading",)),
    ("Ready", ("ready",)),
]


def step_of(phase: str) -> int:
    for i, (_, phases) in enumerate(STEPS):
        if phase in phases:
            return i
    return 0


@dataclass
class LaunchTimeline:
    """The launch as far as its events tell (plain data; the widget renders it)."""

    phase: str = "queued"
    message: str = ""
    step: int = 0
    progress: tuple[int, int] | None = None  # (done, total) for pulling bytes or build steps
    progress_text: str = ""
    phases_seen: list[str] = field(default_factory=list)
    failure: dict | None = None  # message, hint, exit_code, log_tail

    @property
    def done(self) -> bool:
        return self.phase in ("ready", "failed")

    def add(self, event: dict) -> None:
        """Fold one `LaunchEvent` (as decoded JSON) into the timeline."""
        phase = event.get("phase", self.phase)
        if not self.phases_seen or self.phases_seen[-1] != phase:
            self.phases_seen.append(phase)
        self.message = event.get("message") or self.message
        if phase != "failed":
            self.step = step_of(phase)
        self.phase = phase
        if phase == "pulling" and event.get("overall_total"):
            done, total = event.get("overall_current") or 0, event["overall_total"]
            self.progress = (done, total)
            self.progress_text = f"{format_bytes(done)} of {format_bytes(total)}"
        elif phase == "building" and event.get("total"):
            done, total = event.get("current") or 0, event["total"]
            self.progress = (done, total)
            self.progress_text = f"step {done} of {total}"
        elif phase not in ("pulling", "building"):
            self.progress, self.progress_text = None, ""
        if phase == "failed":
            details = event.get("details") or {}
            self.failure = {"message": self.message, "hint": details.get("hint"),
                            "exit_code": details.get("exit_code"), "log_tail": details.get("log_tail") or []}


class LaunchProgressView(QWidget):
    """Follows ``/api/deployments/{id}/events`` in an SseStream and renders a LaunchTimeline.

    Signals:
        finished(str): the launch ended; "ready" or "failed".
    """

    finished = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.timeline = LaunchTimeline()
        self._stream: SseStream | None = None
        self.step_labels: list[QLabel] = []
        steps = QHBoxLayout()
        steps.setSpacing(6)
        for i, (name, _) in enumerate(STEPS):
            if i:
                line = QFrame()
                line.setFrameShape(QFrame.Shape.HLine)
                line.setEnabled(False)
                steps.addWidget(line, 1)
            label = QLabel()
            label.setProperty("step", "pending")
            label.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.step_labels.append(label)
            steps.addWidget(label)
        self.message = QLabel("Waiting for the backend…")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.bar.setTextVisible(True)
        self.failure_title = QLabel()
        self.failure_title.setObjectName("errorText")
        self.failure_title.setWordWrap(True)
        self.failure_hint = QLabel()
        self.failure_hint.setWordWrap(True)
        self.log_tail = QPlainTextEdit()
        self.log_tail.setObjectName("mono")
        self.log_tail.setReadOnly(True)
        self.log_tail.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_tail.setFont(fonts.fixed_font())
        self.log_tail.setPlaceholderText("The container wrote nothing.")
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addLayout(steps)
        box.addSpacing(8)
        box.addWidget(self.message)
        box.addWidget(self.bar)
        box.addWidget(self.failure_title)
        box.addWidget(self.failure_hint)
        box.addWidget(self.log_tail, 100)
        box.addStretch(1)
        for w in (self.failure_title, self.failure_hint, self.log_tail):
            w.hide()
        self._render()

    def follow(self, client: BackendClient, events_url: str) -> None:
        """Start following a launch's events (replayed from its start)."""
        self.shutdown()
        self.timeline = LaunchTimeline()
        self._render()
        stream = client.stream(events_url)
        stream.event.connect(self._on_stream_event)
        stream.failed.connect(self._on_stream_failed)
        stream.ended.connect(self._on_stream_ended)
        self._stream = stream
        stream.start()

    def shutdown(self) -> None:
        """Stop following (the launch itself goes on in the backend)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()

    def _on_stream_event(self, name: str, data: object) -> None:
        if name != "progress" or not isinstance(data, dict):
            return
        self.timeline.add(data)
        self._render()
        if self.timeline.done:
            self.finished.emit(self.timeline.phase)

    def _on_stream_failed(self, error: ApiError) -> None:
        if not self.timeline.done:
            self.message.setText(f"Lost the progress stream: {error}")
            self.bar.setRange(0, 1)
            self.bar.setValue(0)

    def _on_stream_ended(self) -> None:
        if self.sender() is self._stream:
            self._stream = None

    def _render(self) -> None:
        t = self.timeline
        for i, label in enumerate(self.step_labels):
            name = STEPS[i][0]
            if t.phase == "failed" and i == t.step:
                state, mark = "failed", "✕"
            elif i < t.step or t.phase == "ready":
                state, mark = "done", "✓"
            elif i == t.step and t.phases_seen:
                state, mark = "active", "●"
            else:
                state, mark = "pending", "○"
            if i == 0 and "building" in t.phases_seen:
                name = "Build image"
            elif i == 0 and "pulling" in t.phases_seen:
                name = "Pull image"
            label.setText(f"{mark} {name}")
            if label.property("step") != state:
                label.setProperty("step", state)
                label.style().unpolish(label)
                label.style().polish(label)
        self.message.setText(t.message or "Waiting for the backend…")
        if t.done:
            self.bar.setRange(0, 1)
            self.bar.setValue(1 if t.phase == "ready" else 0)
            self.bar.setFormat("Ready" if t.phase == "ready" else "Failed")
            self.bar.setVisible(t.phase == "ready")
        elif t.progress:
            done, total = t.progress
            self.bar.setRange(0, 1000)  # per mille: multi-GB byte counts do not fit the bar's int32
            self.bar.setValue(round(1000 * min(done, total) / max(1, total)))
            self.bar.setFormat(f"%p%  ·  {t.progress_text}")
        else:
            self.bar.setRange(0, 0)
            self.bar.setFormat("")
        failed = t.failure is not None
        self.message.setVisible(not failed)
        for w in (self.failure_title, self.failure_hint, self.log_tail):
            w.setVisible(failed)
        if failed:
            f = t.failure
            code = f" (exit code {f['exit_code']})" if f.get("exit_code") is not None else ""
            self.failure_title.setText(f"Launch failed{code}: {f['message']}")
            self.failure_hint.setText(f.get("hint") or "")
            self.failure_hint.setVisible(bool(f.get("hint")))
            self.log_tail.setPlainText("\n".join(f["log_tail"]))

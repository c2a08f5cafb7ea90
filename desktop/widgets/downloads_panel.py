"""The downloads panel: one row per download job with its bar, bytes, rate, time left and a Cancel button."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QVBoxLayout,
                               QWidget)

from desktop.library.downloads import LIVE, download_title, files_text, fraction, progress_text

STATE_STYLE = {"done": "okText", "failed": "errorText", "cancelled": ""}


class DownloadRow(QFrame):
    """One job. ``show_job`` redraws it from a Download object.

    Signals:
        cancel_clicked(str): the job's id.
    """

    cancel_clicked = Signal(str)

    def __init__(self, job: dict, parent: QWidget | None = None):
        super().__init__(parent)
        self.job_id = job["id"]
        self.job: dict = job
        self.title = QLabel()
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(max(6, self.fontMetrics().height() // 2))
        self.detail = QLabel()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this download and remove its partial files")
        self.cancel_button.clicked.connect(self._on_cancel_button_clicked)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.setSpacing(self.fontMetrics().horizontalAdvance("M"))
        top.addWidget(self.title)
        top.addWidget(self.detail, 1)
        top.addWidget(self.cancel_button)
        box = QVBoxLayout(self)
        em = self.fontMetrics().horizontalAdvance("M")
        box.setContentsMargins(0, em // 4, 0, em // 4)
        box.setSpacing(3)
        box.addLayout(top)
        box.addWidget(self.bar)
        self.show_job(job)

    def show_job(self, job: dict) -> None:
        self.job = job
        state = job.get("state", "queued")
        self.title.setText(download_title(job))
        part = fraction(job)
        if part is None and state in LIVE:
            self.bar.setRange(0, 0)  # busy: the size is not known yet
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(round((part or 0) * 1000)))
        self.detail.setText(progress_text(job))
        name = STATE_STYLE.get(state, "")
        if self.detail.objectName() != name:
            self.detail.setObjectName(name)
            self.detail.setProperty("muted", not name)
            self.detail.style().unpolish(self.detail)
            self.detail.style().polish(self.detail)
        per_file = files_text(job)  # the files of the job, each with its own progress
        self.detail.setToolTip("\n".join(t for t in (per_file, f"Into {job['target']}" if job.get("target") else "")
                                         if t))
        self.bar.setToolTip(per_file)
        self.cancel_button.setVisible(state in LIVE)

    def _on_cancel_button_clicked(self) -> None:
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")
        self.cancel_clicked.emit(self.job_id)


class DownloadsPanel(QWidget):
    """Rows for the jobs the page holds, in the order given; rows of jobs no longer listed go.

    Signals:
        cancel_requested(str): Cancel was clicked on a job (its id).
    """

    cancel_requested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.rows: dict[str, DownloadRow] = {}
        self.empty = QLabel("No downloads yet. Pick a model and a quantization, then Download.")
        self.empty.setProperty("muted", True)
        self._host = QWidget()
        self._list = QVBoxLayout(self._host)
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.setSpacing(6)
        self._list.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self._host)
        self._scroll = scroll
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.empty)
        box.addWidget(scroll, 1)

    def show_jobs(self, jobs: list[dict]) -> None:
        ids = [j["id"] for j in jobs]
        for job_id in [i for i in self.rows if i not in ids]:
            row = self.rows.pop(job_id)
            self._list.removeWidget(row)
            row.deleteLater()
        for pos, job in enumerate(jobs):
            row = self.rows.get(job["id"])
            if row is None:
                row = DownloadRow(job)
                row.cancel_clicked.connect(self.cancel_requested)
                self.rows[job["id"]] = row
            else:
                row.show_job(job)
            if self._list.indexOf(row) != pos:
                self._list.removeWidget(row)
                self._list.insertWidget(pos, row)
        self.empty.setVisible(not jobs)
        self._scroll.setVisible(bool(jobs))

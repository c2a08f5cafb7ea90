"""The Run dialog: which ready deployments, which parameter sets, how many repetitions, how much concurrency."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QListWidget,
                               QListWidgetItem, QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from desktop.playground.column import ERROR_STYLE
from desktop.suites.runs import MAX_DEPLOYMENTS, MAX_PARAMETER_SETS, parameter_set, run_body

PARAM_COLUMNS = ("Label", "Temperature", "Max tokens", "Seed", "Top p")
DEFAULT_SETS = (("t0", "0", "256", "1", ""), ("t0.7", "0.7", "256", "1", ""))


class RunDialog(QDialog):
    """Asks how to run a suite; ``body()`` is the POST /api/suites/{id}/runs body once accepted."""

    def __init__(self, suite_name: str, models: list[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(f"Run {suite_name}")
        self._body: dict | None = None
        self.models = QListWidget()
        for i, name in enumerate(models):
            item = QListWidgetItem(name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if i < 2 else Qt.CheckState.Unchecked)
            self.models.addItem(item)
        self.models.setMaximumHeight(self.fontMetrics().height() * 8)
        if not models:
            self.models.addItem("No ready deployment: launch one on the Models page.")
        self.params = QTableWidget(0, len(PARAM_COLUMNS))
        self.params.setHorizontalHeaderLabels(PARAM_COLUMNS)
        self.params.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.params.verticalHeader().hide()
        self.params.setMinimumHeight(int(self.fontMetrics().height() * 9))
        for values in DEFAULT_SETS:
            self.add_parameter_set(values)
        add = QPushButton("Add set")
        add.clicked.connect(self._on_add_clicked)
        remove = QPushButton("Remove set")
        remove.clicked.connect(self._on_remove_clicked)
        param_buttons = QHBoxLayout()
        param_buttons.addWidget(add)
        param_buttons.addWidget(remove)
        param_buttons.addStretch(1)
        hint = QLabel("An empty cell leaves the runtime's default. A seed makes a run repeatable where "
                      "the runtime honours it.")
        hint.setProperty("muted", True)
        hint.setWordWrap(True)
        self.repetitions = QSpinBox(minimum=1, maximum=20, value=1)
        self.concurrency = QSpinBox(minimum=1, maximum=16, value=2, suffix=" per deployment")
        form = QFormLayout()
        form.addRow("Repetitions", self.repetitions)
        form.addRow("Concurrency", self.concurrency)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
        buttons.button(QDialogButtonBox.StandardButton.Ok).setProperty("primary", True)
        buttons.accepted.connect(self._on_buttons_accepted)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        box.addWidget(QLabel(f"Deployments (1–{MAX_DEPLOYMENTS})"))
        box.addWidget(self.models)
        box.addWidget(QLabel(f"Parameter sets (1–{MAX_PARAMETER_SETS})"))
        box.addWidget(self.params)
        box.addLayout(param_buttons)
        box.addWidget(hint)
        box.addLayout(form)
        box.addWidget(self.error)
        box.addWidget(buttons)
        em = self.fontMetrics().horizontalAdvance("M")
        self.resize(em * 62, em * 50)

    def add_parameter_set(self, values: tuple[str, ...] = ("", "", "", "", "")) -> None:
        row = self.params.rowCount()
        self.params.insertRow(row)
        for col, text in enumerate(values):
            self.params.setItem(row, col, QTableWidgetItem(text))

    def set_checked(self, names: list[str]) -> None:
        for i in range(self.models.count()):
            item = self.models.item(i)
            if item.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                item.setCheckState(Qt.CheckState.Checked if item.text() in names else Qt.CheckState.Unchecked)

    def checked(self) -> list[str]:
        return [self.models.item(i).text() for i in range(self.models.count())
                if self.models.item(i).checkState() == Qt.CheckState.Checked]

    def build_body(self) -> dict:
        """The run request as typed. Raises ValueError naming what to fix."""
        sets = []
        for row in range(self.params.rowCount()):
            cells = [(self.params.item(row, c).text() if self.params.item(row, c) else "")
                     for c in range(len(PARAM_COLUMNS))]
            sets.append(parameter_set(row + 1, *cells))
        return run_body(self.checked(), sets, self.repetitions.value(), self.concurrency.value())

    def body(self) -> dict | None:
        return self._body

    def _on_buttons_accepted(self) -> None:
        try:
            self._body = self.build_body()
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        self.accept()

    def _on_add_clicked(self) -> None:
        if self.params.rowCount() < MAX_PARAMETER_SETS:
            self.add_parameter_set()

    def _on_remove_clicked(self) -> None:
        row = self.params.currentRow()
        if self.params.rowCount() > 1:
            self.params.removeRow(row if row >= 0 else self.params.rowCount() - 1)

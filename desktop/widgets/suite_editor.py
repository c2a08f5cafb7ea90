"""The suite editor: name, description, system prompt, suite checks and the cases as an editable table."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from desktop import theme
from desktop.playground.column import ERROR_STYLE
from desktop.suites.cases import CASE_FIELDS, CaseRow, case_to_row, checks_text, suite_body

CASE_HEADERS = ("Id", "Prompt (or messages, JSON)", "Variables (JSON)", "System prompt", "Expected",
                "Checks (JSON list)")


class SuiteEditor(QWidget):
    """Edits one suite as text; ``body()`` gives the JSON to PUT or POST. Errors show under the table.

    Signals:
        save_requested(dict): Save was pressed and every cell reads (the Suite JSON).
        run_requested(): Run… was pressed.
    """

    save_requested = Signal(dict)
    run_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.name_edit = QLineEdit(placeholderText="A name, e.g. Capitals")
        self.description_edit = QLineEdit(placeholderText="What this suite tests (optional)")
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("System prompt for every case (optional; a case may override it)")
        self.system_edit.setMaximumHeight(self.fontMetrics().height() * 4)
        self.checks_edit = QLineEdit(placeholderText='Checks for every case, e.g. [{"kind": "max_length", '
                                                     '"value": 400}]')
        form = QFormLayout()
        form.addRow("Name", self.name_edit)
        form.addRow("Description", self.description_edit)
        form.addRow("System prompt", self.system_edit)
        form.addRow("Suite checks", self.checks_edit)
        self.cases_table = QTableWidget(0, len(CASE_FIELDS))
        self.cases_table.setHorizontalHeaderLabels(CASE_HEADERS)
        self.cases_table.setWordWrap(True)
        self.cases_table.verticalHeader().setDefaultSectionSize(int(self.fontMetrics().height() * 2.6))
        header = self.cases_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        em = self.fontMetrics().horizontalAdvance("M")
        for col, width in enumerate((9, 26, 14, 12, 10, 20)):
            self.cases_table.setColumnWidth(col, em * width)
        self.cases_table.setToolTip('Checks: contains, not_contains, regex, equals, json, json_schema, max_length; '
                                    'e.g. [{"kind": "contains", "value": "Paris", "ignore_case": true}]')
        self.add_case_button = QPushButton("Add case")
        self.add_case_button.clicked.connect(self._on_add_case_button_clicked)
        self.remove_case_button = QPushButton("Remove case")
        self.remove_case_button.clicked.connect(self._on_remove_case_button_clicked)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.run_button = QPushButton("Run…")
        self.run_button.setProperty("primary", True)
        self.run_button.clicked.connect(self.run_requested)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_case_button)
        buttons.addWidget(self.remove_case_button)
        buttons.addStretch(1)
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.run_button)
        box = QVBoxLayout(self)
        box.addLayout(form)
        box.addWidget(self.cases_table, 1)
        box.addWidget(self.error)
        box.addLayout(buttons)
        self._on_theme_changed(theme.notifier().scheme)
        theme.notifier().changed.connect(self._on_theme_changed)

    def fill(self, suite: dict) -> None:
        """Show a Suite JSON (an empty dict clears the editor)."""
        self.name_edit.setText(suite.get("name") or "")
        self.description_edit.setText(suite.get("description") or "")
        self.system_edit.setPlainText(suite.get("system_prompt") or "")
        self.checks_edit.setText(checks_text(suite.get("checks") or []))
        self.cases_table.setRowCount(0)
        for case in suite.get("cases") or []:
            self.add_row(case_to_row(case))
        self.show_error("")

    def rows(self) -> list[CaseRow]:
        """The cases as typed (fields the table does not show kept from the case loaded)."""
        rows = []
        for r in range(self.cases_table.rowCount()):
            first = self.cases_table.item(r, 0)
            loaded = first.data(Qt.ItemDataRole.UserRole) if first else None
            row = CaseRow(extra=dict(loaded.extra)) if isinstance(loaded, CaseRow) else CaseRow()
            for c, name in enumerate(CASE_FIELDS):
                item = self.cases_table.item(r, c)
                row.set_cell(name, item.text() if item else "")
            rows.append(row)
        return rows

    def body(self) -> dict:
        """The Suite JSON as typed. Raises ValueError naming the cell to fix."""
        return suite_body(self.name_edit.text(), self.description_edit.text(), self.system_edit.toPlainText(),
                          self.checks_edit.text(), self.rows())

    def save(self) -> None:
        """Emit save_requested with the suite, or show why it cannot be read."""
        try:
            body = self.body()
        except ValueError as exc:
            self.show_error(str(exc))
            return
        self.show_error("")
        self.save_requested.emit(body)

    def add_row(self, row: CaseRow) -> None:
        r = self.cases_table.rowCount()
        self.cases_table.insertRow(r)
        for c, name in enumerate(CASE_FIELDS):
            item = QTableWidgetItem(row.cell(name))
            if c == 0:
                item.setData(Qt.ItemDataRole.UserRole, row)
            self.cases_table.setItem(r, c, item)

    def show_error(self, text: str) -> None:
        """Show ``text`` under the table ('' hides it)."""
        self.error.setText(text)
        self.error.setVisible(bool(text))

    def _on_add_case_button_clicked(self) -> None:
        self.add_row(CaseRow(id=f"case-{self.cases_table.rowCount() + 1}"))
        self.cases_table.setCurrentCell(self.cases_table.rowCount() - 1, 1)

    def _on_remove_case_button_clicked(self) -> None:
        rows = sorted({i.row() for i in self.cases_table.selectedIndexes()}, reverse=True)
        for r in rows or [self.cases_table.rowCount() - 1]:
            if r >= 0:
                self.cases_table.removeRow(r)

    def _on_theme_changed(self, _scheme: str) -> None:
        self.save_button.setIcon(theme.icon("check"))
        self.run_button.setIcon(theme.icon("start", "accent_text"))

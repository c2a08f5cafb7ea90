"""A run's results: the grid (cases × model/parameter set) with a summary row, cell details, charts and a diff."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QGridLayout, QHBoxLayout,
                               QHeaderView, QLabel, QLineEdit, QPushButton, QSplitter, QTableView, QTextBrowser,
                               QVBoxLayout, QWidget)

from desktop import theme
from desktop.suites.diff import diff_html, similarity
from desktop.suites.results import Filter, RunResults, cell_text, checks_markdown, figures, mark, summary_text
from desktop.widgets.bar_chart import BarChart
from desktop.widgets.markdown_view import MarkdownView

#: Cells that arrive over the event stream are applied together at most this often (one repaint per batch).
FLUSH_MS = 100
CELL_ROLE = Qt.ItemDataRole.UserRole + 1
MARK_COLORS = {"pass": ("ok_bg", "text"), "fail": ("error_bg", "text"), "error": ("warn_bg", "warning"),
               "cancelled": ("surface_alt", "text_muted"), "pending": ("surface", "text_muted"),
               "done": ("surface", "text")}


class ResultsModel(QAbstractTableModel):
    """RunResults as a Qt table: row 0 is the per-column summary, then one row per case (and repetition).

    Cells from the stream go through ``queue_cell``; a single-shot timer applies the queue
    every ``FLUSH_MS`` and signals only the cells (and summaries) that changed, so 400 cells
    streaming in cost a few repaints rather than one per cell.

    Signals:
        flushed(int): a batch of queued cells was applied (how many).
    """

    flushed = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.results = RunResults()
        self.filter = Filter()
        self._rows: list[int] = []
        self._cols: list[int] = []
        self._summaries: dict[int, dict] = {}
        self._queue: list[tuple[dict, str]] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(FLUSH_MS)
        self._timer.timeout.connect(self.flush)

    def set_results(self, results: RunResults) -> None:
        self.beginResetModel()
        self.results = results
        self._summaries.clear()
        self._queue.clear()
        self._apply_filter()
        self.endResetModel()

    def set_filter(self, flt: Filter) -> None:
        self.beginResetModel()
        self.filter = flt
        self._apply_filter()
        self.endResetModel()

    def _apply_filter(self) -> None:
        self._rows = self.results.visible_rows(self.filter)
        self._cols = self.results.visible_columns(self.filter)

    def queue_cell(self, cell: dict, run_tag: str = "") -> None:
        self._queue.append((cell, run_tag))
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Apply every queued cell now."""
        self._timer.stop()
        queue, self._queue = self._queue, []
        if not queue:
            return
        rows_before = len(self.results.rows)
        changed: set[tuple[int, int]] = set()
        for cell, tag in queue:
            pos = self.results.apply_cell(cell, tag)
            if pos is not None:
                changed.add(pos)
        for _, c in changed:
            self._summaries.pop(c, None)
        if self.filter.failed or self.filter.errors or len(self.results.rows) != rows_before:
            self.set_filter(self.filter)  # rows may appear or leave
        else:
            row_of = {r: i + 1 for i, r in enumerate(self._rows)}
            col_of = {c: i for i, c in enumerate(self._cols)}
            for r, c in changed:
                if r in row_of and c in col_of:
                    idx = self.index(row_of[r], col_of[c])
                    self.dataChanged.emit(idx, idx)
            cols = [col_of[c] for c in {c for _, c in changed} if c in col_of]
            if cols:
                self.dataChanged.emit(self.index(0, min(cols)), self.index(0, max(cols)))
        self.flushed.emit(len(queue))

    def forget_summaries(self) -> None:
        """Read every column's summary again (the backend's arrived)."""
        self._summaries.clear()
        if self.columnCount():
            self.dataChanged.emit(self.index(0, 0), self.index(0, self.columnCount() - 1))

    def pending(self) -> int:
        return len(self._queue)

    def summary(self, col: int) -> dict:
        if col not in self._summaries:
            self._summaries[col] = self.results.summary(col)
        return self._summaries[col]

    def cell_at(self, index: QModelIndex) -> dict | None:
        if not index.isValid() or index.row() == 0:
            return None
        return self.results.cell(self._rows[index.row() - 1], self._cols[index.column()])

    def source_position(self, index: QModelIndex) -> tuple[int, int]:
        return self._rows[index.row() - 1], self._cols[index.column()]

    def refresh_colors(self) -> None:
        if self.rowCount() and self.columnCount():
            self.dataChanged.emit(self.index(0, 0), self.index(self.rowCount() - 1, self.columnCount() - 1))

    # -- QAbstractTableModel ----------------------------------------------------------

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt's naming)
        return 0 if parent.isValid() or not self.results.columns else len(self._rows) + 1

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 (Qt's naming)
        return 0 if parent.isValid() else len(self._cols)

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        if index.row() == 0:
            col = self._cols[index.column()]
            if role == Qt.ItemDataRole.DisplayRole:
                return summary_text(self.summary(col))
            if role == Qt.ItemDataRole.BackgroundRole:
                return theme.color("surface_alt")
            if role == Qt.ItemDataRole.ForegroundRole:
                return theme.color("text_muted")
            return None
        cell = self.cell_at(index)
        if role == Qt.ItemDataRole.DisplayRole:
            return cell_text(cell)
        if role == CELL_ROLE:
            return cell
        if role in (Qt.ItemDataRole.BackgroundRole, Qt.ItemDataRole.ForegroundRole):
            bg, fg = MARK_COLORS[mark(cell)]
            return theme.color(bg if role == Qt.ItemDataRole.BackgroundRole else fg)
        if role == Qt.ItemDataRole.ToolTipRole and cell:
            return cell.get("error") or figures(cell)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if role == Qt.ItemDataRole.DisplayRole:
            if orientation == Qt.Orientation.Horizontal:
                return self.results.columns[self._cols[section]].title
            if section == 0:
                return "Summary"
            return self.results.row_title(self._rows[section - 1])
        if role == Qt.ItemDataRole.ToolTipRole and orientation == Qt.Orientation.Vertical and section > 0:
            return self.results.rows[self._rows[section - 1]].preview
        return None


class CellDetail(QWidget):
    """The selected cell: its whole answer (Markdown), figures, check results, and a 1–5 rating with a note.

    Signals:
        rate_requested(dict, object, str): the cell, its rating (int or None) and note, to PATCH.
    """

    rate_requested = Signal(dict, object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.cell: dict | None = None
        self.title = QLabel("Select a cell to see its whole answer.")
        self.title.setWordWrap(True)
        self.title.setProperty("muted", True)
        self.answer = MarkdownView()
        self.checks = MarkdownView()
        self.checks.setMaximumHeight(self.fontMetrics().height() * 7)
        self.rating = QComboBox()
        self.rating.addItem("no rating", None)
        for n in range(1, 6):
            self.rating.addItem("★" * n, n)
        self.note = QLineEdit(placeholderText="A note on this answer")
        self.save_button = QPushButton("Save rating")
        self.save_button.clicked.connect(self._on_save_button_clicked)
        self.status = QLabel()
        self.status.setProperty("muted", True)
        rate_row = QHBoxLayout()
        rate_row.addWidget(QLabel("Rating"))
        rate_row.addWidget(self.rating)
        rate_row.addWidget(self.note, 1)
        rate_row.addWidget(self.save_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.title)
        box.addWidget(self.answer, 3)
        box.addWidget(self.checks, 1)
        box.addLayout(rate_row)
        box.addWidget(self.status)
        self.show_cell(None, "")

    def show_cell(self, cell: dict | None, where: str) -> None:
        self.cell = cell
        enabled = bool(cell and cell.get("id") is not None and cell.get("status") != "pending")
        for w in (self.rating, self.note, self.save_button):
            w.setEnabled(enabled)
        self.status.clear()
        if cell is None:
            self.title.setText("Select a cell to see its whole answer.")
            self.answer.set_markdown("")
            self.checks.set_markdown("")
            self.answer.flush()
            self.checks.flush()
            return
        head = f"{where} — {figures(cell)}"
        if cell.get("finish_reason"):
            head += f" · finish: {cell['finish_reason']}"
        if cell.get("duration_s") is not None:
            head += f" · {cell['duration_s']:.2f} s total"
        self.title.setText(head)
        text = cell.get("text") or ""
        if cell.get("status") == "error":
            text = f"**Error:** {cell.get('error') or 'unknown'}\n\n{text}"
        self.answer.set_markdown(text)
        self.checks.set_markdown(checks_markdown(cell))
        self.answer.flush()
        self.checks.flush()
        self.rating.setCurrentIndex(self.rating.findData(cell.get("rating")) if cell.get("rating") else 0)
        self.note.setText(cell.get("note") or "")

    def _on_save_button_clicked(self) -> None:
        if self.cell is not None:
            self.status.setText("Saving…")
            self.rate_requested.emit(self.cell, self.rating.currentData(), self.note.text())


class DiffDialog(QDialog):
    """Two answers side by side, what differs highlighted (removed on the left, added on the right)."""

    def __init__(self, left: tuple[str, dict], right: tuple[str, dict], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Compare two answers")
        a, b = left[1].get("text") or "", right[1].get("text") or ""
        left_html, right_html = diff_html(a, b, theme.color("error_bg").name(), theme.color("ok_bg").name())
        grid = QGridLayout(self)
        self.views = []
        for col, ((where, cell), body) in enumerate(((left, left_html), (right, right_html))):
            head = QLabel(f"<b>{where}</b><br>{figures(cell)}")
            head.setWordWrap(True)
            view = QTextBrowser()
            view.setHtml(f"<div style='white-space: pre-wrap'>{body}</div>")
            grid.addWidget(head, 0, col)
            grid.addWidget(view, 1, col)
            self.views.append(view)
        self.similarity = QLabel(f"{similarity(a, b) * 100:.0f} % of the words are the same.")
        self.similarity.setProperty("muted", True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        grid.addWidget(self.similarity, 2, 0)
        grid.addWidget(buttons, 2, 1)
        em = self.fontMetrics().horizontalAdvance("M")
        self.resize(em * 80, em * 40)


class ResultsView(QWidget):
    """The grid with its summary row, the selected cell beside it, and three charts below.

    Signals:
        rate_requested(dict, object, str): from the detail panel (cell, rating, note).
    """

    rate_requested = Signal(dict, object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = ResultsModel(self)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setWordWrap(True)
        self.table.setTextElideMode(Qt.TextElideMode.ElideNone)  # a long answer is cut at the cell's edge
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        line = self.fontMetrics().height()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setDefaultSectionSize(line * 17)
        header.setMinimumHeight(int(line * 2.6))
        vheader = self.table.verticalHeader()
        vheader.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vheader.setDefaultSectionSize(int(line * 3.7))
        self.model.modelReset.connect(self._on_model_model_reset)
        self.table.selectionModel().selectionChanged.connect(self._on_table_selection_changed)
        self.detail = CellDetail()
        self.detail.rate_requested.connect(self.rate_requested)
        self.tps_chart = BarChart("Tokens/s per model (median)")
        self.latency_chart = BarChart("Latency per model (p50)", fmt=lambda v: f"{v:.2f} s")
        self.pass_chart = BarChart("Pass rate per parameter set", fmt=lambda v: f"{v * 100:.0f} %", y_max=1.0)
        charts = QHBoxLayout()
        for chart in (self.tps_chart, self.latency_chart, self.pass_chart):
            charts.addWidget(chart)
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.table)
        split.addWidget(self.detail)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([700, 380])
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(split, 1)
        box.addLayout(charts)
        self.model.flushed.connect(self._on_model_flushed)
        theme.notifier().changed.connect(self._on_theme_changed)

    def set_results(self, results: RunResults) -> None:
        self.model.set_results(results)
        self.update_charts()

    def selected_cells(self) -> list[tuple[str, dict]]:
        """(where, cell) of the selected grid cells that hold an answer, in selection order."""
        out = []
        for index in self.table.selectionModel().selectedIndexes():
            cell = self.model.cell_at(index)
            if cell is not None:
                out.append((self.where(index), cell))
        return out

    def where(self, index: QModelIndex) -> str:
        r, c = self.model.source_position(index)
        col = self.model.results.columns[c]
        return f"{self.model.results.row_title(r)} · {col.title.replace(chr(10), ' · ')}"

    def update_charts(self) -> None:
        res, cached = self.model.results, self.model.summary
        self.tps_chart.set_bars(res.per_model("tokens_per_s_median", cached))
        self.latency_chart.set_bars(res.per_model("latency_p50", cached))
        self.pass_chart.set_bars(res.pass_rate_per_parameter_set(cached))

    def apply_cell_now(self, cell: dict, run_tag: str = "") -> None:
        """A cell changed by this window (a rating): apply it at once and show it if selected."""
        self.model.queue_cell(cell, run_tag)
        self.model.flush()
        current = self.table.currentIndex()
        if current.isValid() and (here := self.model.cell_at(current)) and here.get("id") == cell.get("id"):
            self.detail.show_cell(here, self.where(current))

    def _on_model_flushed(self, _count: int) -> None:
        self.update_charts()
        current = self.table.currentIndex()
        if current.isValid() and self.detail.cell is not None:
            cell = self.model.cell_at(current)
            if cell is not None and cell is not self.detail.cell and cell.get("id") == self.detail.cell.get("id"):
                self.detail.show_cell(cell, self.where(current))

    def _on_model_model_reset(self) -> None:
        self.table.setRowHeight(0, int(self.fontMetrics().height() * 4.6))
        self.detail.show_cell(None, "")

    def _on_table_selection_changed(self, *_args) -> None:
        current = self.table.currentIndex()
        if not current.isValid() or current.row() == 0:
            return
        self.detail.show_cell(self.model.cell_at(current), self.where(current))

    def _on_theme_changed(self, _scheme: str) -> None:
        self.model.refresh_colors()
        for chart in (self.tps_chart, self.latency_chart, self.pass_chart):
            chart.update()

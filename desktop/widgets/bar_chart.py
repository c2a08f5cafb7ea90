"""A small horizontal bar chart painted with QPainter: one bar per label, coloured per theme."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from desktop import theme
from desktop.widgets.chart import PALETTE


class BarChart(QWidget):
    """``set_bars([(label, value), ...])`` draws a titled bar per label, scaled to the largest value."""

    def __init__(self, title: str, fmt: Callable[[float], str] = lambda v: f"{v:.1f}",
                 y_max: float | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self.bars: list[tuple[str, float]] = []
        self._fmt = fmt
        self._y_max = y_max
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's naming)
        line = self.fontMetrics().height()
        return QSize(line * 16, int(line * (2.2 + 1.5 * max(2, len(self.bars)))))

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt's naming)
        return QSize(self.fontMetrics().height() * 10, self.fontMetrics().height() * 5)

    def set_bars(self, bars: list[tuple[str, float]]) -> None:
        if bars != self.bars:
            self.bars = list(bars)
            self.updateGeometry()
            self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's naming)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fm = QFontMetricsF(self.font())
        line = fm.height()
        p.setPen(theme.color("text_muted"))
        p.drawText(QRectF(0, 0, self.width(), line * 1.4), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   self.title)
        if not self.bars:
            p.drawText(QRectF(0, line * 1.4, self.width(), line * 1.5), Qt.AlignmentFlag.AlignLeft, "no data yet")
            p.end()
            return
        label_w = min(self.width() * 0.4, max(fm.horizontalAdvance(lab) for lab, _ in self.bars) + line * 0.5)
        value_w = max(fm.horizontalAdvance(self._fmt(v)) for _, v in self.bars) + line * 0.5
        top = max(v for _, v in self.bars) if self._y_max is None else self._y_max
        top = top if top > 0 else 1.0
        bar_space = max(1.0, self.width() - label_w - value_w)
        row_h = min(line * 1.5, (self.height() - line * 1.6) / len(self.bars))
        for i, (label, value) in enumerate(self.bars):
            y = line * 1.6 + i * row_h
            p.setPen(theme.color("text"))
            p.drawText(QRectF(0, y, label_w - line * 0.3, row_h),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                       fm.elidedText(label, Qt.TextElideMode.ElideMiddle, label_w - line * 0.3))
            w = bar_space * max(0.0, min(1.0, value / top))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(PALETTE[i % len(PALETTE)]))
            p.drawRoundedRect(QRectF(label_w, y + row_h * 0.18, max(w, 1.0), row_h * 0.64), 3, 3)
            p.setPen(theme.color("text_muted"))
            p.drawText(QRectF(label_w + w + line * 0.3, y, value_w, row_h),
                       Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, self._fmt(value))
        p.end()

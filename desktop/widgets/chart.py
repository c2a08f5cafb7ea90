"""A light line chart painted with QPainter: several ring series over a shared, scrollable time window."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QObject, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFontMetricsF, QMouseEvent, QPainter, QPen, QPolygonF, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from desktop.monitor.series import WINDOW_S, RingSeries
from desktop.formatting import format_bytes  # noqa: F401 - the charts' byte axis format, re-exported

MIN_SPAN_S = 30.0
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


class TimeWindow(QObject):
    """The time range every chart of a page shows: ``span`` seconds ending ``back`` seconds before live.

    Signals:
        changed(): the span or position moved.
    """

    changed = Signal()

    def __init__(self, span: float = 300.0, limit: float = WINDOW_S, parent: QObject | None = None):
        super().__init__(parent)
        self.limit = limit
        self.span = min(span, limit)
        self.back = 0.0

    @property
    def live(self) -> bool:
        return self.back == 0.0

    def set_span(self, span: float) -> None:
        self.span = max(MIN_SPAN_S, min(self.limit, span))
        self.back = min(self.back, self.limit - self.span)
        self.changed.emit()

    def set_back(self, back: float) -> None:
        back = max(0.0, min(self.limit - self.span, back))
        if back != self.back:
            self.back = back
            self.changed.emit()

    def zoom(self, factor: float) -> None:
        self.set_span(self.span * factor)

    def go_live(self) -> None:
        self.set_back(0.0)

    def range(self, latest: float) -> tuple[float, float]:
        end = latest - self.back
        return end - self.span, end


def format_percent(v: float) -> str:
    return f"{v:.0f} %"


def format_celsius(v: float) -> str:
    return f"{v:.0f} °C"


def format_watts(v: float) -> str:
    return f"{v:.0f} W"


@dataclass
class ChartLine:
    """One series drawn in a chart; a dashed line is a limit (total memory, say)."""

    series: RingSeries
    label: str
    color: str
    dashed: bool = False


def _nice_bytes(v: float) -> float:
    """A round top for a byte axis, in binary units (so the ticks read 2 GiB, not 1.86 GiB)."""
    unit = 1.0
    while v / unit >= 1024 and unit < 1 << 40:
        unit *= 1024
    return _nice_ceiling(v / unit) * unit


def _nice_ceiling(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= step * exp:
            return step * exp
    return 10 * exp


class LineChart(QWidget):
    """Draws its lines between the shared window's edges; wheel zooms, drag scrolls, double-click goes live.

    Repaints only when asked (``update()``), and Qt skips hidden widgets, so a page refreshes only
    what is on screen. Each paint reads the visible slice of each ring series, thinned to at most
    two points per pixel column; nothing is allocated per sample between paints.
    """

    def __init__(self, title: str, window: TimeWindow, latest: Callable[[], float | None],
                 fmt: Callable[[float], str] = format_percent, y_max: float | None = None,
                 y_floor: float = 0.0, parent: QWidget | None = None):
        super().__init__(parent)
        self.title = title
        self._window = window
        self._latest = latest
        self._fmt = fmt
        self.y_max = y_max  # a fixed top (100 %), or None to fit the data, never below y_floor
        self.y_floor = y_floor
        self._nice = _nice_bytes if fmt is format_bytes else _nice_ceiling
        self.empty_text = "waiting for data…"
        self._lines: list[ChartLine] = []
        self._hover_x: float | None = None
        self._drag_x: float | None = None
        self.setMouseTracking(True)
        self.setMinimumSize(220, 130)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        window.changed.connect(self.update)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's naming)
        return QSize(360, 170)

    def add_line(self, series: RingSeries, label: str, color: str | None = None, dashed: bool = False) -> None:
        self._lines.append(ChartLine(series, label, color or PALETTE[len(self._lines) % len(PALETTE)], dashed))
        self.update()

    def point_count(self) -> int:
        """Samples held by this chart's series (all of them, seen or not)."""
        return sum(len(line.series) for line in self._lines)

    # ------------------------------------------------------------------ geometry

    def _plot_rect(self, fm: QFontMetricsF) -> QRectF:
        left = fm.horizontalAdvance("888.8 GiB") + 10
        top = fm.height() + 8
        return QRectF(left, top, max(10.0, self.width() - left - 10), max(10.0, self.height() - top - fm.height() - 8))

    def _range(self) -> tuple[float, float]:
        latest = self._latest()
        return self._window.range(latest if latest is not None else time.time())

    # ------------------------------------------------------------------ painting

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's naming)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = self.palette()
        text_color, grid = pal.text().color(), pal.mid().color()
        fm = QFontMetricsF(self.font())
        plot = self._plot_rect(fm)
        t0, t1 = self._range()
        slices = [(line, *line.series.window(t0, t1)) for line in self._lines]
        top = self.y_max
        if top is None:
            finite = [v for _, _, vs in slices for v in vs if math.isfinite(v)]
            top = max(self.y_floor, self._nice(max(finite) * 1.05) if finite and max(finite) > 0 else 1.0)

        p.fillRect(self.rect(), pal.base())
        p.setPen(text_color)
        p.drawText(QPointF(6, fm.ascent() + 3), self.title)
        self._draw_legend(p, fm, slices)
        has_data = any(v == v for _, _, vs in slices for v in vs)
        p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
        for k in range(5):
            y = plot.bottom() - plot.height() * k / 4
            p.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            if has_data or self.y_max is not None:
                label = self._fmt(top * k / 4)
                p.setPen(text_color)
                p.drawText(QPointF(plot.left() - fm.horizontalAdvance(label) - 5, y + fm.ascent() / 2 - 1), label)
                p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
        self._draw_time_axis(p, fm, plot, t0, t1, text_color, grid)
        p.setPen(QPen(grid, 1))
        p.drawRect(plot)

        p.save()
        p.setClipRect(plot.adjusted(-1, -1, 1, 1))
        sx = plot.width() / (t1 - t0)
        sy = plot.height() / top
        for line, times, values in slices:
            # Qt strokes pens wider than one pixel through its slow path: a dense (thinned) line,
            # whose points are a pixel apart anyway, gets the fast one-pixel pen.
            dense = len(times) > plot.width()
            width = 1.0 if dense or line.dashed else 1.6
            p.setPen(QPen(QColor(line.color), width, Qt.PenStyle.DashLine if line.dashed else Qt.PenStyle.SolidLine))
            for poly in _polylines(times, values, t0, plot, sx, sy):
                p.drawPolyline(poly)
        p.restore()
        if self._hover_x is not None and plot.left() <= self._hover_x <= plot.right():
            self._draw_hover(p, fm, plot, t0, sx, text_color)
        if not has_data:
            p.setPen(text_color)
            p.drawText(plot, Qt.AlignmentFlag.AlignCenter, self.empty_text)
        p.end()

    def _draw_legend(self, p: QPainter, fm: QFontMetricsF, slices) -> None:
        x = self.width() - 8.0
        for line, _, _ in reversed(slices):
            last = line.series.last()
            value = self._fmt(last[1]) if last and math.isfinite(last[1]) else "–"
            text = f"{line.label} {value}"
            x -= fm.horizontalAdvance(text)
            p.setPen(self.palette().text().color())
            p.drawText(QPointF(x, fm.ascent() + 3), text)
            x -= 14
            p.fillRect(QRectF(x, fm.ascent() / 2 - 1, 10, 6 if line.dashed else 10), QColor(line.color))
            x -= 12

    def _draw_time_axis(self, p: QPainter, fm: QFontMetricsF, plot: QRectF, t0: float, t1: float,
                        text_color: QColor, grid: QColor) -> None:
        span = t1 - t0
        # As many ticks as fit: each label needs its own width plus a gap, so narrow
        # charts get fewer, wider-spaced ticks instead of labels running into each other.
        room = max(1.0, plot.width() / (fm.horizontalAdvance("00:00:00") * 1.6))
        step = next((s for s in (10, 15, 30, 60, 120, 300, 600) if span / s <= min(6.0, room)), 900)
        t = math.ceil(t0 / step) * step
        while t <= t1:
            x = plot.left() + (t - t0) / span * plot.width()
            p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            label = time.strftime("%H:%M:%S" if step < 60 else "%H:%M", time.localtime(t))
            p.setPen(text_color)
            width = fm.horizontalAdvance(label)
            p.drawText(QPointF(min(x - width / 2, self.width() - width - 2), plot.bottom() + fm.ascent() + 3), label)
            t += step

    def _draw_hover(self, p: QPainter, fm: QFontMetricsF, plot: QRectF, t0: float, sx: float,
                    text_color: QColor) -> None:
        t = t0 + (self._hover_x - plot.left()) / sx
        near = max(2.5, 4 / sx)  # seconds: a sample farther than this is not "at" the pointer
        rows = []
        for line in self._lines:
            hit = line.series.value_at(t)
            if hit is not None and math.isfinite(hit[1]) and abs(hit[0] - t) <= near:
                rows.append((line.color, f"{line.label}: {self._fmt(hit[1])}"))
        p.setPen(QPen(text_color, 1, Qt.PenStyle.DashLine))
        p.drawLine(QPointF(self._hover_x, plot.top()), QPointF(self._hover_x, plot.bottom()))
        rows.insert(0, (None, time.strftime("%H:%M:%S", time.localtime(t))))
        width = max(fm.horizontalAdvance(text) for _, text in rows) + 24
        height = fm.height() * len(rows) + 8
        x = self._hover_x + 8 if self._hover_x + 8 + width < plot.right() else self._hover_x - 8 - width
        box = QRectF(x, plot.top() + 4, width, height)
        bg = QColor(self.palette().toolTipBase().color())
        bg.setAlpha(235)
        p.fillRect(box, bg)
        p.setPen(self.palette().toolTipText().color())
        for k, (color, text) in enumerate(rows):
            y = box.top() + 4 + fm.height() * k
            if color:
                p.fillRect(QRectF(box.left() + 6, y + fm.ascent() / 2 - 3, 8, 8), QColor(color))
            p.drawText(QPointF(box.left() + 18, y + fm.ascent()), text)

    # ------------------------------------------------------------------ interaction

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's naming)
        x = event.position().x()
        if self._drag_x is not None:
            plot = self._plot_rect(QFontMetricsF(self.font()))
            seconds = (x - self._drag_x) / plot.width() * self._window.span
            self._drag_x = x
            self._window.set_back(self._window.back + seconds)
        self._hover_x = x
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 (Qt's naming)
        if event.button() == Qt.MouseButton.LeftButton:
            self._drag_x = event.position().x()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)

    def mouseReleaseEvent(self, _event: QMouseEvent) -> None:  # noqa: N802 (Qt's naming)
        self._drag_x = None
        self.unsetCursor()

    def mouseDoubleClickEvent(self, _event: QMouseEvent) -> None:  # noqa: N802 (Qt's naming)
        self._window.go_live()

    def leaveEvent(self, _event) -> None:  # noqa: N802 (Qt's naming)
        self._hover_x = None
        self.update()

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 (Qt's naming)
        steps = event.angleDelta().y() / 120
        if steps:
            self._window.zoom(0.8 ** steps)
        event.accept()


def _polylines(times: list[float], values: list[float], t0: float, plot: QRectF, sx: float,
               sy: float) -> list[QPolygonF]:
    """Screen polylines for one slice: NaN splits lines; more than two points a pixel are thinned first."""
    columns = int(plot.width())
    if columns > 0 and len(times) > 2 * columns:
        times, values = _thin(times, values, columns)
    out: list[QPolygonF] = []
    points: list[QPointF] = []
    left, bottom = plot.left(), plot.bottom()
    for t, v in zip(times, values):
        if v != v:  # NaN: a gap
            if points:
                out.append(QPolygonF(points))
                points = []
            continue
        points.append(QPointF(left + (t - t0) * sx, bottom - v * sy))
    if points:
        out.append(QPolygonF(points))
    return out


def _thin(times: list[float], values: list[float], buckets: int) -> tuple[list[float], list[float]]:
    """The minimum and maximum of each of ``buckets`` equal runs of samples (an all-NaN run stays a gap)."""
    step = len(times) / buckets
    out_t: list[float] = []
    out_v: list[float] = []
    for b in range(buckets):
        lo, hi = int(b * step), int((b + 1) * step)
        if hi <= lo:
            continue
        chunk = [v for v in values[lo:hi] if v == v]
        t = times[lo]
        if not chunk:
            out_t.append(t)
            out_v.append(math.nan)
            continue
        low, high = min(chunk), max(chunk)
        out_t.append(t)
        out_v.append(low)
        if high != low:
            out_t.append(t)
            out_v.append(high)
    return out_t, out_v

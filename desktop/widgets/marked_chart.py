"""A line chart with the loads, unloads and evictions of models marked on its time axis, the reason on hover."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QFontMetricsF, QHelpEvent, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QToolTip, QWidget

from desktop import theme
from desktop.lifecycle import EVENT_TITLES, EventLog, LifecycleEvent, clock
from desktop.widgets.chart import LineChart, TimeWindow, format_percent

#: How near (pixels) the pointer must be to a mark for its tooltip.
HOVER_PX = 6.0


class MarkedLineChart(LineChart):
    """``LineChart`` plus a vertical mark per lifecycle event in view (of one deployment, or all).

    The marks come from an ``EventLog`` the page fills; the chart only reads it when it paints.
    Hovering a mark shows what happened and why (a tooltip), as the page's event list does.
    """

    def __init__(self, title: str, window: TimeWindow, latest: Callable[[], float | None],
                 fmt: Callable[[float], str] = format_percent, y_max: float | None = None,
                 y_floor: float = 0.0, events: EventLog | None = None, deployment_id: str | None = None,
                 parent: QWidget | None = None):
        super().__init__(title, window, latest, fmt, y_max, y_floor, parent)
        self.events = events
        self.deployment_id = deployment_id

    def marks(self) -> list[tuple[float, LifecycleEvent]]:
        """(x in pixels, event) of every event inside the plot now; none on a chart with nothing to show
        (a CPU-only deployment's VRAM says so in words, which a mark would cross out)."""
        if self.events is None or not self.events.events:
            return []
        plot = self._plot_rect(QFontMetricsF(self.font()))
        t0, t1 = self._range()
        span = t1 - t0
        if span <= 0 or not any(v == v for line in self._lines for v in line.series.window(t0, t1)[1]):
            return []
        return [(plot.left() + (e.at - t0) / span * plot.width(), e)
                for e in self.events.between(t0, t1, self.deployment_id)]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        super().paintEvent(event)
        marks = self.marks()
        if not marks:
            return
        plot = self._plot_rect(QFontMetricsF(self.font()))
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for x, ev in marks:
            color = QColor(theme.color(ev.role))
            p.setPen(QPen(color, 1.4, Qt.PenStyle.DashLine if ev.kind == "unload" else Qt.PenStyle.SolidLine))
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(color)
            top = plot.top()
            # A small flag at the top of the plot: down for unload/evict, up for a load.
            tip = top + 7 if ev.kind in ("unload", "evict") else top
            base = top if tip > top else top + 7
            p.drawPolygon(QPolygonF([QPointF(x - 4.5, base), QPointF(x + 4.5, base), QPointF(x, tip)]))
        p.end()

    def event(self, e: QEvent) -> bool:
        if e.type() == QEvent.Type.ToolTip and isinstance(e, QHelpEvent):
            text = self.tooltip_at(float(e.pos().x()))
            if text:
                QToolTip.showText(e.globalPos(), text, self)
            else:
                QToolTip.hideText()
                e.ignore()
            return True
        return super().event(e)

    def tooltip_at(self, x: float) -> str:
        """The tooltip text hovering at ``x`` would show ('' when no mark is near), for tests."""
        return "\n".join(f"{clock(ev.at)} {EVENT_TITLES.get(ev.kind, ev.kind)}: {ev.text}"
                         for mx, ev in self.marks() if abs(mx - x) <= HOVER_PX)

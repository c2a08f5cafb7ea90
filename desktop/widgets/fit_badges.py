"""A variant's fit verdicts as small coloured badges, one per device, each with the backend's message as tooltip."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from desktop import theme
from desktop.library.hub import FitBadge


class FitBadges(QWidget):
    """Badges for ``desktop.library.hub.fit_badges(variant)``; recoloured when the theme changes."""

    def __init__(self, badges: list[FitBadge], parent: QWidget | None = None):
        super().__init__(parent)
        self.badges = badges
        self.labels: list[QLabel] = []
        row = QHBoxLayout(self)
        row.setContentsMargins(2, 1, 2, 1)
        row.setSpacing(4)
        for badge in badges or []:
            label = QLabel(badge.text)
            label.setToolTip(badge.tooltip)
            label.setProperty("level", badge.level)
            self.labels.append(label)
            row.addWidget(label)
        if not badges:
            none = QLabel("no verdict")
            none.setProperty("muted", True)
            row.addWidget(none)
        row.addStretch(1)
        self._paint(theme.notifier().scheme)
        theme.notifier().changed.connect(self._paint)

    def _paint(self, scheme: str) -> None:
        colors = theme.PALETTES.get(scheme, theme.PALETTES["light"])
        radius = max(4, self.fontMetrics().height() // 2)
        for label, badge in zip(self.labels, self.badges):
            label.setStyleSheet(f"QLabel {{ color: {colors[badge.role]}; background: {colors[badge.background]}; "
                                f"border-radius: {radius}px; padding: 1px 7px; }}")

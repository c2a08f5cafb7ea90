"""A banner across the top of the window: what is wrong, in plain words, and what to do about it."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from desktop import theme

LEVEL_ICON = {"error": ("warning", "danger"), "warning": ("warning", "warning"), "info": ("info", "info")}


class Banner(QFrame):
    """A dismissible message strip with a level (error, warning, info), a title, a hint and an optional action button.

    Signals:
        dismissed(): the person closed it (it comes back only when the message changes).
    """

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.level = ""
        self._key: tuple[str, str, str, str] | None = None
        self._dismissed_key: tuple[str, str, str, str] | None = None
        self._action: Callable[[], None] | None = None
        self._icon = QLabel()
        self.title = QLabel()
        self.title.setObjectName("bannerTitle")
        self.title.setWordWrap(True)
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.action_button = QPushButton()
        self.action_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.action_button.clicked.connect(self._on_action_button_clicked)
        self.action_button.hide()
        close = QPushButton("Dismiss")
        close.setProperty("flat", True)
        close.setCursor(Qt.CursorShape.PointingHandCursor)
        close.clicked.connect(self._on_close_clicked)
        text = QVBoxLayout()
        text.setSpacing(2)
        text.addWidget(self.title)
        text.addWidget(self.hint)
        row = QHBoxLayout(self)
        row.setContentsMargins(12, 8, 8, 8)
        row.addWidget(self._icon, 0, Qt.AlignmentFlag.AlignTop)
        row.addLayout(text, 1)
        row.addWidget(self.action_button, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, level: str, title: str, hint: str | None = None,
                     action: tuple[str, Callable[[], None]] | None = None) -> None:
        """Show (or update) the banner; a message the person dismissed stays hidden.

        Args:
            action: a button's label and what it does (e.g. "Restart backend"); None for no button.
        """
        key = (level, title, hint or "", action[0] if action else "")
        self._action = action[1] if action else None
        if key == self._key and (self.isVisible() or key == self._dismissed_key):
            return
        self._key = key
        self.action_button.setText(action[0] if action else "")
        self.action_button.setVisible(action is not None)
        self.level = level
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        name, role = LEVEL_ICON.get(level, LEVEL_ICON["info"])
        size = self.fontMetrics().height() + 4
        self._icon.setPixmap(theme.icon(name, role).pixmap(size, size))
        self.title.setText(title)
        self.hint.setText(hint or "")
        self.hint.setVisible(bool(hint))
        if key != self._dismissed_key:
            self.show()

    def clear(self) -> None:
        """Hide the banner: the condition it reported is over."""
        self._key = self._dismissed_key = None
        self.hide()

    def _on_action_button_clicked(self) -> None:
        if self._action is not None:
            self._action()

    def _on_close_clicked(self) -> None:
        self._dismissed_key = self._key
        self.hide()
        self.dismissed.emit()

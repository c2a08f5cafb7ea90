"""The "Unload when idle for" field: the backend's default, never, or a number of minutes."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QSpinBox, QWidget

from desktop.lifecycle import MAX_TTL_MINUTES, TTL_DEFAULT, TTL_MINUTES, TTL_NEVER, ttl_choice, ttl_value


class IdleTtlField(QWidget):
    """A choice (Default / Never / After) and the minutes, which only "After" uses.

    Signals:
        changed(): the choice or the minutes changed.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.choice = QComboBox()
        self.choice.addItem("Default (the backend's setting)", TTL_DEFAULT)
        self.choice.addItem("Never", TTL_NEVER)
        self.choice.addItem("After", TTL_MINUTES)
        self.choice.setToolTip("Unload (stop) the model after this long with no request in flight; the container "
                               "stays, and the next request loads it again. Default: MODELDECK_IDLE_TTL_S on the "
                               "backend (unset: never).")
        self.minutes = QSpinBox(minimum=1, maximum=MAX_TTL_MINUTES, value=15, suffix=" min")
        self.minutes.setToolTip("Minutes with no request before the model is unloaded")
        self.minutes.setEnabled(False)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.choice, 1)
        row.addWidget(self.minutes)
        self.choice.currentIndexChanged.connect(self._on_choice_current_index_changed)
        self.minutes.valueChanged.connect(self.changed)

    def value(self) -> float | None:
        """``idle_ttl_s`` as chosen: None (default), 0 (never) or seconds."""
        return ttl_value(self.choice.currentData(), self.minutes.value())

    def set_value(self, seconds: float | None) -> None:
        choice, minutes = ttl_choice(seconds)
        self.minutes.setValue(minutes)
        self.choice.setCurrentIndex(self.choice.findData(choice))

    def _on_choice_current_index_changed(self, _index: int) -> None:
        self.minutes.setEnabled(self.choice.currentData() == TTL_MINUTES)
        self.changed.emit()

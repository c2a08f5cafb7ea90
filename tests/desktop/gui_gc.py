"""For the desktop tests: Python's cycle collector on the GUI thread only, so Qt objects are never freed elsewhere.

The app itself runs Python on the GUI thread alone (streams are QNetworkReplies, not threads),
so it needs none of this. The desktop tests do: their backend is uvicorn in a thread of the
same process, and a collection that its allocations trigger there could free a widget.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer


class GuiThreadGarbageCollector(QObject):
    """Disables automatic garbage collection and collects from a GUI-thread timer instead.

    Python runs its cycle collector in whichever thread happens to allocate when a
    threshold is crossed. In these tests that may be the in-process backend's thread, and a
    collected cycle holding a QObject then deletes it off the GUI thread: a crash, not an
    exception. Calibre has long solved this the same way: check the collector's counters a
    few times a second on the GUI thread and collect the generations that are due.
    """

    def __init__(self, parent: QObject | None = None, interval_ms: int = 500):
        super().__init__(parent)
        self._thresholds = gc.get_threshold()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()

    def _on_timer_timeout(self) -> None:
        counts = gc.get_count()
        due = [g for g in range(3) if counts[g] > self._thresholds[g]]
        if due:
            gc.collect(max(due))

    def stop(self) -> None:
        """Collect once more and give automatic collection back (tests, shutdown)."""
        self._timer.stop()
        gc.collect()
        gc.enable()

"""Guards against Qt binding bugs that once crashed ModelDeck (see the pin in pyproject.toml)."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Emitter(QObject):
    payload = Signal(object)
    bare = Signal()


def test_emitting_signals_does_not_drain_a_refcount(qapp):
    """PySide6 6.12.0 returned True from emit() without a reference: after enough emits
    (the app emits per streamed token and per stats sample) Python aborted in bool_dealloc."""
    e = _Emitter()
    e.payload.connect(lambda _o: None)
    e.bare.connect(lambda: None)
    before = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None)
    for _ in range(200):
        e.payload.emit({"ready": True, "failed": False, "x": None})
        e.bare.emit()
    after = sys.getrefcount(True), sys.getrefcount(False), sys.getrefcount(None)
    assert [a - b for a, b in zip(after, before)] == [0, 0, 0], (before, after)

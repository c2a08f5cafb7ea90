"""The tests' GUI-thread collector (tests/desktop/gui_gc.py): automatic collection off, cycles collected on the GUI thread."""

from __future__ import annotations

import gc
import threading
import weakref

from PySide6.QtCore import QObject


def test_cycles_with_qobjects_are_collected_on_the_gui_thread(qtbot, gui_thread_gc):
    assert not gc.isenabled(), "automatic collection must be off while the guard runs"
    gc.collect()
    collected_in: list[str] = []

    class Holder(QObject):
        def __del__(self):
            collected_in.append(threading.current_thread().name)

    refs = []

    def make_garbage():
        # Cycles holding QObjects, left behind by a worker thread as a stream thread might,
        # plus enough other cyclic garbage to pass the collector's first threshold.
        for _ in range(50):
            h = Holder()
            h.me = h
            refs.append(weakref.ref(h))
        for _ in range(3 * gc.get_threshold()[0]):
            a = []
            a.append(a)

    worker = threading.Thread(target=make_garbage, name="stream-worker")
    worker.start()
    worker.join()
    assert all(r() is not None for r in refs), "nothing may be collected in the worker thread"
    # Only the guard's timer collects from here on.
    qtbot.waitUntil(lambda: all(r() is None for r in refs), timeout=5000)
    assert collected_in and set(collected_in) == {threading.main_thread().name}

"""The GUI stall watchdog (desktop/stall_watchdog.py): a blocked GUI thread is caught and named, a quiet one is not."""

from __future__ import annotations

import gc
import sys
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton, QVBoxLayout, QWidget

from desktop.stall_watchdog import Stall, StallWatchdog, frame_label, is_ours, runqueue_wait_ns

pytestmark = pytest.mark.gui


def _busy_wait_150ms() -> None:
    """Holds the GUI thread the way a slow slot would: pure Python, never yielding to the event loop."""
    end = time.perf_counter() + 0.150
    while time.perf_counter() < end:
        pass


def _collect_big_heap(heap: list) -> None:
    """A full collection over a large heap of container objects: the stall is Python's gc, not this line."""
    heap.extend([[i] for i in range(1_500_000)])
    gc.collect()


@pytest.fixture
def watchdog(qapp):
    dog = StallWatchdog()
    dog.start()
    yield dog
    dog.stop()


@pytest.fixture
def window(qtbot):
    widget = QWidget()
    button = QPushButton("Block for 150 ms", widget)
    button.clicked.connect(_busy_wait_150ms)
    layout = QVBoxLayout(widget)
    layout.addWidget(button)
    qtbot.addWidget(widget)
    widget.show()
    qtbot.waitExposed(widget)
    widget.button = button
    return widget


def test_a_blocked_gui_thread_is_caught_with_the_function_that_blocked_it(qtbot, watchdog, window, capsys):
    qtbot.waitUntil(lambda: watchdog.beats >= 3, timeout=5000)  # the heartbeat runs
    qtbot.mouseClick(window.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: watchdog.count >= 1, timeout=5000)

    stall = watchdog.worst_stall()
    assert isinstance(stall, Stall)
    assert stall.ms >= 100, stall.summary()
    assert stall.stack, "the watcher took no sample while the GUI thread was blocked"
    innermost_ours = [f for f in stall.stack if is_ours(f)][-1]
    assert innermost_ours.startswith("tests/desktop/test_stall_watchdog.py:"), stall.stack
    assert innermost_ours.endswith(" _busy_wait_150ms"), stall.stack
    assert "_busy_wait_150ms" in stall.summary()
    assert stall.cpu_ms is not None and stall.cpu_ms >= stall.ms / 2, "a busy GUI thread was on a CPU"
    assert stall.cpu_wait_ms is None or stall.cpu_wait_ms >= 0
    err = capsys.readouterr().err
    assert "modeldeck: GUI thread stalled" in err and "_busy_wait_150ms" in err, err


def _hold_the_gil_150ms() -> None:
    """Blocks the GUI thread without ever letting go of the GIL (as a C++ call that blocks holding it does):
    no Python thread can sample it meanwhile."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        _busy_wait_150ms()
    finally:
        sys.setswitchinterval(interval)


def test_a_stall_holding_the_gil_is_named_by_faulthandlers_dump(qtbot, watchdog, window):
    button = QPushButton("Hold the GIL", window)
    button.clicked.connect(_hold_the_gil_150ms)
    qtbot.waitUntil(lambda: watchdog.beats >= 10, timeout=5000)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: watchdog.count >= 1, timeout=5000)

    stall = watchdog.worst_stall()
    assert stall.ms >= 100, stall.summary()
    assert stall.caught_by == "faulthandler", stall.summary()
    assert "_hold_the_gil_150ms" in " ".join(stall.stack) or "_busy_wait_150ms" in " ".join(stall.stack), stall.stack
    assert "dumped by faulthandler" in stall.summary()


def test_a_faulthandler_dump_is_read_for_the_gui_thread_only():
    from desktop.stall_watchdog import gui_stack_in_dump

    dump = ('Timeout (0:00:00.080000)!\n'
            'Thread 0x00007f0000000002 (most recent call first):\n'
            '  File "/usr/lib/python3.11/threading.py", line 320 in wait\n'
            'Thread 0x00007f0000000001 (most recent call first):\n'
            f'  File "{__file__}", line 12 in inner\n'
            '  File "/usr/lib/python3.11/runpy.py", line 198 in _run_module_as_main\n')
    assert gui_stack_in_dump(dump, 0x7f0000000001) == ("runpy.py:198 _run_module_as_main",
                                                       "tests/desktop/test_stall_watchdog.py:12 inner")
    assert gui_stack_in_dump(dump, 0x7f0000000003) == ()


def test_a_quiet_gui_records_no_stall(qtbot, watchdog, window):
    qtbot.waitUntil(lambda: watchdog.beats >= 40, timeout=10000)
    assert watchdog.count == 0, [s.summary() for s in watchdog.worst]
    assert watchdog.worst == []


def test_a_stall_in_the_cycle_collector_is_named_as_such(qtbot, watchdog, window):
    """A gen-2 collection that the GUI thread runs is reported with its time, not blamed on the allocating line."""
    heap: list = []
    button = QPushButton("Collect", window)
    button.clicked.connect(lambda: _collect_big_heap(heap))
    qtbot.waitUntil(lambda: watchdog.beats >= 3, timeout=5000)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: watchdog.count >= 1, timeout=10000)
    heap.clear()

    stall = watchdog.worst_stall()
    assert stall.gc_generation == 2, stall.summary()
    assert stall.gc_ms >= watchdog.threshold_ms, stall.summary()
    assert "Python's gc (generation 2)" in stall.summary()


def test_the_gui_threads_wait_for_a_cpu_is_read_from_linux_scheduler_statistics():
    import threading

    waited = runqueue_wait_ns(f"/proc/self/task/{threading.get_native_id()}/schedstat")
    assert waited is not None and waited >= 0
    assert runqueue_wait_ns("/proc/self/task/0/schedstat") is None


def test_frames_are_named_relative_to_the_repository_or_the_library():
    assert frame_label(__file__, 7, "f") == "tests/desktop/test_stall_watchdog.py:7 f"
    assert frame_label("/usr/lib/python3.11/threading.py", 3, "run") == "threading.py:3 run"
    assert frame_label("/x/.venv/lib/python3.11/site-packages/httpx/_client.py", 9, "send") == "httpx/_client.py:9 send"
    assert is_ours("desktop/app.py:1 run") and not is_ours("threading.py:3 run")


def test_stopping_never_waits_and_starting_again_watches_again(qtbot, watchdog, window):
    started = time.perf_counter()
    watchdog.stop()
    assert time.perf_counter() - started < 0.05
    assert not watchdog.running
    watchdog.start()
    qtbot.waitUntil(lambda: watchdog.beats >= 3, timeout=5000)
    qtbot.mouseClick(window.button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: watchdog.count >= 1, timeout=5000)
    assert "_busy_wait_150ms" in watchdog.worst_stall().summary()

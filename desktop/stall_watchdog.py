"""GUI stall watchdog: a daemon thread that records the GUI thread's Python stack whenever it stops ticking.

A GUI-thread stall is found by its effect: a heartbeat timer on the GUI thread that fires late.
The figure alone does not say why, so a daemon thread watches the heartbeat and, while a beat is
overdue, samples the GUI thread's stack (``sys._current_frames()``); a stall longer than the
threshold is kept with its stacks, written to the desktop log (stderr, ``modeldeck:`` lines) and
offered to the benchmark (``bench/desktop.py``), so the cause is named, not guessed.

It costs next to nothing while the GUI is responsive: the heartbeat slot stores two floats a
beat, and the watcher sleeps until the moment the next beat would be overdue (about 30 times a
second), reading a float and the GUI thread's scheduler statistics when it wakes. Only during a
stall does it allocate anything.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal

THRESHOLD_MS = 50.0  # the goal: no GUI-thread stall over 50 ms
HEARTBEAT_MS = 10
SAMPLE_EVERY_MS = 10.0
KEEP = 10  # the worst stalls kept
_REARM_S = 0.04  # faulthandler's dump is re-armed this often by the heartbeat...
_DUMP_AFTER_S = 0.08  # ...and fires when the GUI thread has not re-armed it for this long
#: The repository root: frames under it are "ours" (desktop/, bench/); others are shown shortened.
ROOT = Path(__file__).resolve().parent.parent
_CWD = os.getcwd()


ENV_THRESHOLD = "MODELDECK_STALL_MS"  # another threshold in ms, to look at shorter stalls too


def threshold_from_env(environ: dict | None = None) -> float:
    """The threshold from ``MODELDECK_STALL_MS`` (a number of ms), else :data:`THRESHOLD_MS`."""
    value = (os.environ if environ is None else environ).get(ENV_THRESHOLD, "")
    try:
        return float(value) if float(value) > 0 else THRESHOLD_MS
    except ValueError:
        return THRESHOLD_MS


_SHORT: dict[str, str] = {}  # filename -> shortened, so sampling resolves each path once


def frame_label(filename: str, lineno: int | None, name: str) -> str:
    """``file:line function`` with ``file`` relative to the repository, or to site-packages / the stdlib."""
    short = _SHORT.get(filename)
    if short is None:
        short = _SHORT[filename] = _shorten(filename)
    return f"{short}:{lineno} {name}"


def _shorten(filename: str) -> str:
    # String work only: a system call here would let go of the GIL in the middle of a sample.
    path = Path(os.path.normpath(os.path.join(_CWD, filename)))
    parts = path.parts
    cut = max((i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")
               or p.startswith("python3")), default=-1)
    if cut >= 0:
        return "/".join(parts[cut + 1:]) or path.name
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return "/".join(parts[-2:])


def runqueue_wait_ns(path: str) -> int | None:
    """Nanoseconds a thread has waited, runnable, for a CPU (the 2nd field of Linux's schedstat), or None.

    Plain ``os`` calls and bytes, no container objects: the watcher thread calls it while healthy.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 128)
    finally:
        os.close(fd)
    first = data.find(b" ")
    second = data.find(b" ", first + 1)
    return int(data[first + 1:second]) if 0 <= first < second else None


_FRAME_LINE = re.compile(r'^\s+File "(?P<file>[^"]*)", line (?P<line>\d+|\?\?\?) in (?P<name>\S+)')


def gui_stack_in_dump(text: str, ident: int) -> tuple[str, ...]:
    """The frames of thread ``ident`` in a faulthandler dump, outermost first, as ``file:line function``."""
    frames: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(("Thread 0x", "Current thread 0x")):
            inside = int(line.split()[2] if line.startswith("Current") else line.split()[1], 16) == ident
            continue
        match = _FRAME_LINE.match(line) if inside else None
        if match:
            lineno = match["line"]
            frames.append(frame_label(match["file"], int(lineno) if lineno.isdigit() else None, match["name"]))
    return tuple(reversed(frames))


def is_ours(label: str) -> bool:
    """A frame of this repository's code (``desktop/...``, ``bench/...``), not Qt's or the library's."""
    return label.startswith(("desktop/", "bench/", "tests/"))


@dataclass(frozen=True)
class Stall:
    """One stall over the threshold: how long the heartbeat was late, when, and where the GUI thread was.

    ``stacks`` holds each distinct stack seen while the stall lasted (frames outermost first, as
    ``file:line function``) with how many samples showed it, most frequent first. ``gc_ms`` is the
    time Python's cycle collector ran on the GUI thread during the stall (with the oldest
    generation it collected), so a collection shows up as such and not as the line that happened
    to allocate. ``cpu_ms`` is the CPU time the GUI thread used between the two beats: far less
    than the beat's gap means the thread was not running, not that it was busy; ``cpu_wait_ms``
    (Linux) is how long of that it waited, runnable, for a core the machine's other processes held.
    """

    ms: float
    at_s: float
    stacks: tuple[tuple[tuple[str, ...], int], ...] = ()
    gc_ms: float = 0.0
    gc_generation: int | None = None
    cpu_ms: float | None = None
    cpu_wait_ms: float | None = None

    @property
    def stack(self) -> tuple[str, ...]:
        """The stack seen most often while the stall lasted (empty when no sample caught it)."""
        return self.stacks[0][0] if self.stacks else ()

    #: How the stack was caught: "sampled" (the watcher thread, while the stall lasted), or "faulthandler"
    #: (Python's C-level dump: the GUI thread held the GIL, so no Python thread could look).
    caught_by: str = "sampled"

    def summary(self, ours: int = 3) -> str:
        """One line: the outermost and the innermost ``ours`` frames of this repository, and the innermost frame."""
        stack = self.stack
        if not stack:
            where = "no sample caught it (too short, or the GUI thread held the GIL throughout)"
        else:
            mine = [f for f in stack if is_ours(f)]
            shown = [mine[0] if mine else stack[0]]  # the outermost frame of ours (not runpy's)
            for frame in mine[-ours:]:
                if frame not in shown:
                    shown.append(frame)
            if stack[-1] not in shown:
                shown.append(stack[-1])
            where = " > ".join(shown if len(shown) == len(stack) else [shown[0], "…", *shown[1:]])
        samples = sum(n for _, n in self.stacks)
        if self.caught_by == "faulthandler":
            where += " [dumped by faulthandler: the GUI thread held the GIL]"
        gc_note = (f"; Python's gc (generation {self.gc_generation}) ran {self.gc_ms:.0f} ms of it"
                   if self.gc_ms >= 1 else "")
        cpu_note = f"; GUI thread on a CPU {self.cpu_ms:.0f} ms of it" if self.cpu_ms is not None else ""
        if self.cpu_wait_ms is not None:
            cpu_note += f", waiting for one {self.cpu_wait_ms:.0f} ms"
        return f"{self.ms:.0f} ms at {self.at_s:.2f} s: {where} ({samples} samples{gc_note}{cpu_note})"

    def as_dict(self) -> dict:
        """Plain data for JSON (the benchmark's probe prints it)."""
        return {"ms": round(self.ms, 1), "at_s": round(self.at_s, 2), "summary": self.summary(),
                "stack": list(self.stack), "gc_ms": round(self.gc_ms, 1), "gc_generation": self.gc_generation,
                "cpu_ms": None if self.cpu_ms is None else round(self.cpu_ms, 1),
                "cpu_wait_ms": None if self.cpu_wait_ms is None else round(self.cpu_wait_ms, 1),
                "caught_by": self.caught_by,
                "stacks": [{"frames": list(s), "samples": n} for s, n in self.stacks]}


@dataclass
class _Pending:
    """Samples the watcher took while one heartbeat was overdue."""

    beat: float  # the heartbeat the GUI thread last gave before the stall
    stacks: Counter = field(default_factory=Counter)


class StallWatchdog(QObject):
    """Watches the GUI thread's heartbeat from a daemon thread and keeps the worst stalls with their stacks.

    Create it on the GUI thread and call :meth:`start`. ``threshold_ms`` is how late a heartbeat
    must be to count as a stall (the GUI-thread time lost); ``log`` writes each such stall to
    stderr with its stack. :meth:`stop` never waits for the thread (it ends at its next wake-up).

    Signals:
        stalled(object): a :class:`Stall` over the threshold just ended (on the GUI thread).
    """

    stalled = Signal(object)

    def __init__(self, parent: QObject | None = None, threshold_ms: float = THRESHOLD_MS,
                 heartbeat_ms: int = HEARTBEAT_MS, sample_every_ms: float = SAMPLE_EVERY_MS,
                 keep: int = KEEP, log: bool = True):
        super().__init__(parent)
        self.threshold_ms = threshold_ms
        self._interval_s = heartbeat_ms / 1000
        self._threshold_s = threshold_ms / 1000
        # Sampling starts half a threshold into a late beat, so a stall just over it has samples too.
        self._sample_after_s = self._interval_s + self._threshold_s / 2
        self._sample_every_s = sample_every_ms / 1000
        self._keep = keep
        self._log = log
        self._gui_ident = threading.get_ident()
        self._schedstat: str | None = f"/proc/self/task/{threading.get_native_id()}/schedstat"
        if runqueue_wait_ns(self._schedstat) is None:
            self._schedstat = None  # not Linux, or no scheduler statistics
        self._base_wait_ns: int | None = None  # the GUI thread's runqueue wait, read while it was healthy
        self._started = time.monotonic()
        self._beat = self._started
        self._beat_cpu = time.thread_time()
        self._running = False
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: _Pending | None = None
        self._gc_started: float | None = None
        self._gc_log: list[tuple[float, float, int]] = []  # (start, end, generation) of long collections
        self._last_logged: tuple[str, ...] | None = None
        self.worst: list[Stall] = []  # the ``keep`` longest, longest first
        self.count = 0  # every stall over the threshold since start
        self.beats = 0  # heartbeats given since start
        self.gc_count = 0  # collections Python ran on the GUI thread since start
        self.gc_longest_ms = 0.0  # the longest of them
        self.watcher_cpu_s = 0.0  # CPU the watcher thread has used (its own thread_time)
        # Python's faulthandler dumps every thread's stack from a C thread that needs no GIL: the one way to
        # see where the GUI thread is when it holds the GIL throughout a stall (a C++ call that blocks
        # without letting go of it, a pure-Python loop longer than the switch interval). Re-armed every
        # few beats (each re-arm starts a thread: ~50 us), so any stall longer than _DUMP_AFTER_S is dumped.
        self._dump: Any = None
        self._dump_every = max(1, round(_REARM_S / self._interval_s))
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(heartbeat_ms)
        self._timer.timeout.connect(self._on_timer_timeout)

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        """Start the heartbeat and the watcher thread (again after :meth:`stop`)."""
        if self._running:
            return
        self._running = True
        self._beat, self._beat_cpu = time.monotonic(), time.thread_time()
        self._timer.start()
        self._arm_dump()
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        self._generation += 1  # a thread of an earlier start that still sleeps ends when it wakes
        self._thread = threading.Thread(target=self._watch, args=(self._generation,), name="gui-stall-watchdog",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; the thread ends by itself within one sleep (nothing waits for it)."""
        self._running = False
        self._timer.stop()
        if self._dump is not None:
            faulthandler.cancel_dump_traceback_later()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    @property
    def running(self) -> bool:
        return self._running

    def worst_stall(self) -> Stall | None:
        return self.worst[0] if self.worst else None

    def reset(self) -> None:
        """Forget the stalls so far and count time from now (the benchmark starts its window here)."""
        with self._lock:
            self.worst = []
            self.count = 0
            self.gc_count, self.gc_longest_ms = 0, 0.0
            self._started = time.monotonic()

    # ------------------------------------------------------------------ GUI thread

    def _on_timer_timeout(self) -> None:
        now = time.monotonic()
        cpu = time.thread_time()
        late = now - self._beat - self._interval_s
        previous, previous_cpu = self._beat, self._beat_cpu
        self._beat, self._beat_cpu = now, cpu
        self.beats += 1
        if late > self._threshold_s:
            self._record(previous, now, late, cpu - previous_cpu)  # reads faulthandler's dump, then re-arms it
            return
        if self._pending is not None:
            with self._lock:  # a late beat under the threshold: its samples are not needed
                self._pending = None
        if self.beats % self._dump_every == 0:
            self._arm_dump()

    def _on_gc(self, phase: str, info: dict) -> None:
        # Runs in whichever thread collects: only the GUI thread's collections are timed.
        if threading.get_ident() != self._gui_ident:
            return
        if phase == "start":
            self._gc_started = time.monotonic()
        elif self._gc_started is not None:
            end = time.monotonic()
            self.gc_count += 1
            self.gc_longest_ms = max(self.gc_longest_ms, (end - self._gc_started) * 1000)
            if end - self._gc_started >= 0.005:
                self._gc_log.append((self._gc_started, end, info.get("generation", -1)))
                del self._gc_log[:-50]
            self._gc_started = None

    def _record(self, beat: float, now: float, late: float, cpu_s: float) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        stacks = pending.stacks.most_common() if pending is not None and pending.beat == beat else []
        dumped = self._read_dump()
        caught_by = "sampled"
        if dumped and sum(n for _, n in stacks) <= 1:
            # The watcher could not look while it lasted (the GUI thread held the GIL): a lone sample is from
            # its very end, when the GIL came free; faulthandler's dump was taken inside the stall.
            stacks, caught_by = [(dumped, 1), *((st, n) for st, n in stacks if st != dumped)], "faulthandler"
        self._arm_dump()
        gcs = [(s, e, g) for s, e, g in self._gc_log if e > beat and s < now]
        base = self._base_wait_ns
        waited = runqueue_wait_ns(self._schedstat) if self._schedstat and base is not None else None
        stall = Stall(ms=late * 1000, at_s=beat - self._started, stacks=tuple((s, n) for s, n in stacks),
                      cpu_wait_ms=None if waited is None else (waited - base) / 1e6,
                      gc_ms=sum(min(e, now) - max(s, beat) for s, e, _ in gcs) * 1000,
                      gc_generation=max((g for _, _, g in gcs), default=None), cpu_ms=cpu_s * 1000,
                      caught_by=caught_by)
        with self._lock:
            self.count += 1
            self.worst.append(stall)
            self.worst.sort(key=lambda s: -s.ms)
            del self.worst[self._keep:]
        if self._log:
            self._write_log(stall)
        self.stalled.emit(stall)

    def _write_log(self, stall: Stall) -> None:
        lines = [f"modeldeck: GUI thread stalled {stall.summary()}"]
        if stall.stack and stall.stack != self._last_logged:
            lines += [f"    {frame}" for frame in stall.stack]
            self._last_logged = stall.stack
        print("\n".join(lines), file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ faulthandler's dump

    def _arm_dump(self) -> None:
        if not self._running:
            return
        try:
            if self._dump is None:
                self._dump = tempfile.TemporaryFile()
            else:
                self._dump.seek(0)
                self._dump.truncate()
            faulthandler.dump_traceback_later(_DUMP_AFTER_S, file=self._dump)
        except (OSError, RuntimeError, ValueError):
            self._dump = None  # no temporary file (or faulthandler is unusable): sampling only

    def _read_dump(self) -> tuple[str, ...]:
        """The GUI thread's stack from faulthandler's dump, if it fired since the last arm (outermost first)."""
        if self._dump is None:
            return ()
        try:
            self._dump.seek(0)
            text = self._dump.read().decode("utf-8", "replace")
        except OSError:
            return ()
        return gui_stack_in_dump(text, self._gui_ident)

    # ------------------------------------------------------------------ watcher thread

    def _watch(self, generation: int) -> None:
        # The healthy path allocates no container objects, so Python's collector never runs on
        # this thread (a collection here could free a Qt object off the GUI thread). Sampling
        # allocates, so it holds automatic collection off meanwhile.
        while self._running and self._generation == generation:
            beat = self._beat
            due = beat + self._sample_after_s - time.monotonic()
            if due > 0:
                if self._schedstat is not None:
                    self._base_wait_ns = runqueue_wait_ns(self._schedstat)
                time.sleep(due)
                continue
            enabled = gc.isenabled()
            gc.disable()
            try:
                self._sample(beat)
            finally:
                if enabled:
                    gc.enable()
            self.watcher_cpu_s = time.thread_time()
            time.sleep(self._sample_every_s)
        self.watcher_cpu_s = time.thread_time()

    def _sample(self, beat: float) -> None:
        frame = sys._current_frames().get(self._gui_ident)
        if frame is None or self._beat != beat:
            return
        # walk_stack reads the frames only: extract_stack would also stat every file for its
        # source line (linecache), letting go of the GIL each time, long enough to miss the stall.
        frames = [(f.f_code.co_filename, line, f.f_code.co_name) for f, line in traceback.walk_stack(frame)]
        del frame
        stack = tuple(frame_label(*f) for f in reversed(frames))
        with self._lock:
            if self._pending is None or self._pending.beat != beat:
                self._pending = _Pending(beat)
            self._pending.stacks[stack] += 1

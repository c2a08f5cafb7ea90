"""Fixed-size ring buffers of (time, value) samples: the monitor's chart series."""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right

WINDOW_S = 15 * 60
DEFAULT_CAPACITY = 2048  # 15 minutes at the sampler's 1 Hz, with room for a faster sampler


class RingSeries:
    """The latest ``capacity`` samples of one quantity, oldest first, in preallocated arrays.

    Times must not go backwards (a sample older than the newest is ignored). A value of None
    is kept as NaN: a gap that the chart does not bridge.
    """

    __slots__ = ("name", "_t", "_v", "_start", "_len", "_cap")

    def __init__(self, name: str = "", capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self._cap = capacity
        self._t = array("d", bytes(8 * capacity))
        self._v = array("d", bytes(8 * capacity))
        self._start = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    @property
    def capacity(self) -> int:
        return self._cap

    def append(self, t: float, value: float | None) -> bool:
        """Add a sample; False when ``t`` is older than the newest sample (it is dropped)."""
        if self._len and t < self._t[(self._start + self._len - 1) % self._cap]:
            return False
        v = math.nan if value is None else float(value)
        if self._len < self._cap:
            i = (self._start + self._len) % self._cap
            self._len += 1
        else:
            i = self._start
            self._start = (self._start + 1) % self._cap
        self._t[i], self._v[i] = t, v
        return True

    def clear(self) -> None:
        self._start = self._len = 0

    def trim_before(self, t: float) -> None:
        """Forget samples older than ``t``."""
        while self._len and self._t[self._start] < t:
            self._start = (self._start + 1) % self._cap
            self._len -= 1

    def _index(self, k: int) -> int:
        return (self._start + k) % self._cap

    def times(self) -> list[float]:
        return [self._t[self._index(k)] for k in range(self._len)]

    def last(self) -> tuple[float, float] | None:
        """The newest (time, value), or None when empty."""
        if not self._len:
            return None
        i = self._index(self._len - 1)
        return self._t[i], self._v[i]

    def window(self, t0: float, t1: float, margin: int = 1) -> tuple[list[float], list[float]]:
        """Samples with ``t0 <= t <= t1``, plus ``margin`` on each side so lines reach the edges."""
        times = _View(self._t, self._start, self._len, self._cap)
        lo = max(0, bisect_left(times, t0) - margin)
        hi = min(self._len, bisect_right(times, t1) + margin)
        return self._slice(self._t, lo, hi), self._slice(self._v, lo, hi)

    def _slice(self, a: array, lo: int, hi: int) -> list[float]:
        """Logical samples ``lo:hi`` as a list, copied in at most two C-level slices."""
        if hi <= lo:
            return []
        start, end = self._index(lo), self._index(hi - 1) + 1
        if start < end:
            return a[start:end].tolist()
        return a[start:].tolist() + a[:end].tolist()

    def value_at(self, t: float) -> tuple[float, float] | None:
        """The sample nearest to ``t`` (for a hover read-out), or None when empty."""
        if not self._len:
            return None
        times = _View(self._t, self._start, self._len, self._cap)
        k = bisect_left(times, t)
        best = min((c for c in (k - 1, k) if 0 <= c < self._len), key=lambda c: abs(times[c] - t))
        i = self._index(best)
        return self._t[i], self._v[i]


class _View:
    """Index access into the ring in logical order, so ``bisect`` can search it without copying."""

    __slots__ = ("_a", "_start", "_len", "_cap")

    def __init__(self, a: array, start: int, length: int, cap: int):
        self._a, self._start, self._len, self._cap = a, start, length, cap

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, k: int) -> float:
        return self._a[(self._start + k) % self._cap]

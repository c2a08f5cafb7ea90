"""Host CPU, memory, disk and network figures from psutil, as rates between successive samples."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import psutil

from .models import HostSample

log = logging.getLogger(__name__)


def _busy_and_total(t) -> tuple[float, float]:
    # Same accounting as psutil.cpu_percent: guest time is already counted in user time
    # on Linux, and iowait is idle time spent waiting.
    total = sum(t)
    total -= getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    busy = total - t.idle - getattr(t, "iowait", 0.0)
    return busy, total


def _percent(prev, cur) -> float:
    b0, t0 = _busy_and_total(prev)
    b1, t1 = _busy_and_total(cur)
    dt = t1 - t0
    if dt <= 0:
        return 0.0
    return round(min(100.0, max(0.0, (b1 - b0) / dt * 100.0)), 1)


class HostSource:
    """Measures the host without ever blocking: every rate is a delta since the previous call.

    CPU percentages are computed from ``psutil.cpu_times`` deltas kept here rather than
    ``psutil.cpu_percent(interval=None)``, whose "since last call" state is global to the
    process and would be reset by any other caller.
    """

    def __init__(self, data_path: Path | None = None):
        """Args:
            data_path: a folder on the filesystem whose disk use to report; the user's
                home folder when None.
        """
        self._data_path = Path(data_path) if data_path is not None else Path.home()
        self._cpu_count = psutil.cpu_count() or 1
        # Primed now so that the first sample already has a CPU figure.
        self._cpu_prev = psutil.cpu_times()
        self._per_cpu_prev = psutil.cpu_times(percpu=True)
        self._net_prev: tuple[float, int, int] | None = None
        self._disk_warned = False

    def sample(self) -> HostSample:
        """Measure the host now.

        Returns:
            The host sample; network rates are None on the first call.
        """
        cpu = psutil.cpu_times()
        per_cpu = psutil.cpu_times(percpu=True)
        cpu_pct = _percent(self._cpu_prev, cpu)
        per_cpu_pct = [_percent(p, c) for p, c in zip(self._per_cpu_prev, per_cpu)]
        self._cpu_prev, self._per_cpu_prev = cpu, per_cpu

        vm = psutil.virtual_memory()
        swap = psutil.swap_memory()
        disk_used, disk_total = self._disk()
        rx_rate, tx_rate = self._net_rates()
        try:
            load = tuple(round(x, 2) for x in os.getloadavg())
        except (AttributeError, OSError):  # Windows has no load average
            load = None
        return HostSample(
            cpu_pct=cpu_pct,
            cpu_count=self._cpu_count,
            per_cpu_pct=per_cpu_pct,
            mem_used_bytes=vm.total - vm.available,
            mem_total_bytes=vm.total,
            mem_available_bytes=vm.available,
            swap_used_bytes=swap.used,
            disk_used_bytes=disk_used,
            disk_total_bytes=disk_total,
            net_rx_bytes_per_s=rx_rate,
            net_tx_bytes_per_s=tx_rate,
            load_avg=load,
        )

    def _disk(self) -> tuple[int | None, int | None]:
        # The data folder may not exist yet on a first run: measure its nearest parent.
        path = self._data_path
        while not path.exists() and path != path.parent:
            path = path.parent
        try:
            usage = psutil.disk_usage(str(path))
        except OSError as exc:
            if not self._disk_warned:
                log.warning("cannot measure disk use of %s: %s", path, exc)
                self._disk_warned = True
            return None, None
        return usage.used, usage.total

    def _net_rates(self) -> tuple[float | None, float | None]:
        now = time.monotonic()
        try:
            io = psutil.net_io_counters()
        except OSError:
            return None, None
        if io is None:  # no network interfaces at all
            return None, None
        prev, self._net_prev = self._net_prev, (now, io.bytes_recv, io.bytes_sent)
        if prev is None or now <= prev[0]:
            return None, None
        dt = now - prev[0]
        # Counters can go backwards when an interface disappears; a negative rate is noise.
        return (round(max(0, io.bytes_recv - prev[1]) / dt, 1),
                round(max(0, io.bytes_sent - prev[2]) / dt, 1))

"""Tests of backend.stats.host: psutil figures that make sense."""

from __future__ import annotations

import time

import psutil

from backend.stats.host import HostSource


def test_host_sample_is_sane(tmp_path):
    src = HostSource(data_path=tmp_path / "not-created-yet")
    first = src.sample()
    # No earlier sample to compare with: rates are unknown, not zero.
    assert first.net_rx_bytes_per_s is None and first.net_tx_bytes_per_s is None
    time.sleep(0.05)  # a rate needs some wall time between two samples
    s = src.sample()

    assert s.cpu_count == psutil.cpu_count() >= 1
    assert 0.0 <= s.cpu_pct <= 100.0
    assert len(s.per_cpu_pct) == s.cpu_count
    assert all(0.0 <= p <= 100.0 for p in s.per_cpu_pct)
    assert 0 < s.mem_used_bytes < s.mem_total_bytes
    assert 0 < s.mem_available_bytes <= s.mem_total_bytes
    assert s.mem_used_bytes + s.mem_available_bytes == s.mem_total_bytes
    assert s.swap_used_bytes >= 0
    # The folder does not exist: its nearest existing parent's filesystem is measured.
    disk = psutil.disk_usage(str(tmp_path))
    assert s.disk_total_bytes == disk.total
    assert 0 < s.disk_used_bytes <= s.disk_total_bytes
    assert s.net_rx_bytes_per_s >= 0 and s.net_tx_bytes_per_s >= 0
    assert s.load_avg is not None and len(s.load_avg) == 3 and all(x >= 0 for x in s.load_avg)


def test_cpu_percent_sees_a_busy_thread():
    src = HostSource()
    src.sample()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # keep one core busy
        pass
    s = src.sample()
    # One core's worth of work was done over the interval (the thread may have moved
    # between cores, so only the sum is certain).
    assert sum(s.per_cpu_pct) >= 50.0
    assert s.cpu_pct >= 100.0 / s.cpu_count * 0.5

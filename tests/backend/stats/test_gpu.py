"""Tests of backend.stats.gpu: real NVML on this machine, and the mapping logic against a fake NVML."""

from __future__ import annotations

import pynvml
import pytest

from backend.stats.gpu import GpuSource

from .helpers import FakeNvml, fake_gpu


def _real_nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_GPU = _real_nvml_works()


@pytest.mark.skipif(HAS_GPU, reason="this machine has an NVIDIA driver")
def test_real_nvml_without_driver_reads_as_no_gpu():
    src = GpuSource()  # the real pynvml module
    reading = src.sample()
    assert reading.status.available is False
    assert reading.status.reason == "No NVIDIA driver found (libnvidia-ml.so not loadable)"
    assert reading.gpus == [] and reading.processes == {}
    src.close()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU and driver")
def test_real_nvml_with_a_gpu():
    src = GpuSource()
    try:
        reading = src.sample()
        assert reading.status.available and reading.status.driver_version
        assert reading.gpus
        for g in reading.gpus:
            assert g.memory_total_bytes and g.memory_total_bytes > 0
            assert g.name and g.uuid and g.uuid.startswith(("GPU-", "MIG-"))
            assert g.utilization_pct is None or 0 <= g.utilization_pct <= 100
    finally:
        src.close()


def test_fake_nvml_fields_are_mapped_with_units():
    nvml = FakeNvml([fake_gpu(0, compute=[(10, 2**30)]), fake_gpu(1, graphics=[(11, 5)])])
    reading = GpuSource(nvml).sample()
    assert reading.status.available and reading.status.driver_version == "550.54.15"
    g0, g1 = reading.gpus
    assert (g0.index, g0.name, g0.uuid) == (0, "NVIDIA Fake 0", "GPU-00000000")
    assert g0.utilization_pct == 40.0
    assert g0.memory_used_bytes == 2**30 and g0.memory_total_bytes == 24 * 2**30
    assert g0.temperature_c == 50.0
    assert g0.power_w == 150.0 and g0.power_limit_w == 300.0
    assert g1.index == 1 and g1.power_w == pytest.approx(150.001)
    assert [(p.pid, p.used_memory_bytes) for p in reading.processes[0]] == [(10, 2**30)]
    assert [(p.pid, p.used_memory_bytes) for p in reading.processes[1]] == [(11, 5)]


def test_unsupported_fields_become_none_not_errors():
    everything = {"nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetTemperature",
                  "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetUUID",
                  "nvmlDeviceGetName", "nvmlSystemGetDriverVersion",
                  "nvmlDeviceGetGraphicsRunningProcesses"}
    nvml = FakeNvml([fake_gpu(0, compute=[(10, None), (12, 2**64 - 1)])], unsupported=everything)
    reading = GpuSource(nvml).sample()
    assert reading.status.available and reading.status.driver_version is None
    (g,) = reading.gpus
    assert g.index == 0
    assert all(v is None for v in (g.uuid, g.name, g.utilization_pct, g.memory_used_bytes,
                                   g.memory_total_bytes, g.temperature_c, g.power_w, g.power_limit_w))
    # Unknown per-process memory (None, or NVML's "not available" value) is None, not a huge number.
    assert [(p.pid, p.used_memory_bytes) for p in reading.processes[0]] == [(10, None), (12, None)]


def test_a_process_in_both_lists_counts_once():
    nvml = FakeNvml([fake_gpu(0, compute=[(10, 300)], graphics=[(10, 300), (11, 7)])])
    procs = GpuSource(nvml).sample().processes[0]
    assert [(p.pid, p.used_memory_bytes) for p in procs] == [(10, 300), (11, 7)]


def test_failed_init_is_retried_rarely_then_recovers():
    now = [1000.0]
    nvml = FakeNvml([fake_gpu(0)], init_error=FakeNvml.NVML_ERROR_DRIVER_NOT_LOADED)
    src = GpuSource(nvml, retry_init_s=60.0, clock=lambda: now[0])

    r = src.sample()
    assert not r.status.available and r.status.reason == "The NVIDIA driver is installed but not loaded"
    for _ in range(5):  # ticks in between do not hammer nvmlInit
        now[0] += 10
        assert not src.sample().status.available
    assert nvml.init_calls == 1

    nvml.init_error = None  # the driver got loaded
    now[0] += 15
    r = src.sample()
    assert nvml.init_calls == 2
    assert r.status.available and len(r.gpus) == 1
    src.sample()
    assert nvml.init_calls == 2  # initialised once, not per sample
    src.close()
    assert nvml.shutdown_calls == 1


def test_driver_without_gpus_reads_as_no_gpu():
    r = GpuSource(FakeNvml([])).sample()
    assert not r.status.available and r.status.reason == "The NVIDIA driver reports no GPU"

"""NVIDIA GPU figures from NVML (nvidia-ml-py); the only backend module that imports pynvml."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .models import GpuSample, GpuStatus

log = logging.getLogger(__name__)

DEFAULT_RETRY_INIT_S = 60.0


@dataclass(frozen=True, slots=True)
class RawGpuProcess:
    """A GPU process before it is mapped to a deployment."""

    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class GpuReading:
    """What one NVML pass found: the devices, their processes by GPU index, and the status."""

    status: GpuStatus
    gpus: list[GpuSample]
    processes: dict[int, list[RawGpuProcess]]


def _unavailable_reason(nvml: Any, exc: BaseException) -> str:
    """A sentence a person can act on, for why NVML did not start."""
    value = getattr(exc, "value", None)
    known = {
        getattr(nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", object()):
            "No NVIDIA driver found (libnvidia-ml.so not loadable)",
        getattr(nvml, "NVML_ERROR_DRIVER_NOT_LOADED", object()):
            "The NVIDIA driver is installed but not loaded",
        getattr(nvml, "NVML_ERROR_NO_PERMISSION", object()):
            "No permission to talk to the NVIDIA driver",
        getattr(nvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", object()):
            "NVIDIA driver and library versions differ (a reboot after a driver update usually fixes it)",
    }
    if value in known:
        return known[value]
    return f"NVML could not start: {exc}"


def _text(value: Any) -> str:
    # Old nvidia-ml-py versions return bytes.
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GpuSource:
    """Reads every NVIDIA GPU through NVML; a machine without one reads as "no GPU", never an error.

    NVML is initialised lazily on the first ``sample()``, so it happens in the sampler's
    own thread; when initialisation fails, it is tried again every ``retry_init_s``
    (a driver may be installed or loaded while the backend runs). Every per-field call
    is guarded: a field the device does not support comes back None.
    """

    def __init__(self, nvml: Any = None, retry_init_s: float = DEFAULT_RETRY_INIT_S,
                 clock=time.monotonic):
        """Args:
            nvml: an object with pynvml's functions and constants (a fake in tests);
                the real ``pynvml`` module when None.
            retry_init_s: how long to wait before trying a failed initialisation again.
            clock: monotonic seconds, for tests.
        """
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        self._retry_init_s = retry_init_s
        self._clock = clock
        self._initialised = False
        self._next_init_at = 0.0
        self._status = GpuStatus(available=False, reason="NVML not initialised yet")
        self._handles: list[tuple[int, Any]] = []

    @property
    def status(self) -> GpuStatus:
        """The status of the last ``sample()``."""
        return self._status

    def sample(self) -> GpuReading:
        """Read every GPU now.

        Returns:
            The reading; with no usable NVML, an empty one whose status says why.
        """
        if not self._initialised and not self._try_init():
            return GpuReading(self._status, [], {})
        gpus: list[GpuSample] = []
        processes: dict[int, list[RawGpuProcess]] = {}
        for index, handle in self._handles:
            gpus.append(self._device(index, handle))
            processes[index] = self._processes(handle)
        return GpuReading(self._status, gpus, processes)

    def close(self) -> None:
        """Shut NVML down if it was started; call from the thread that sampled."""
        if self._initialised:
            self._initialised = False
            try:
                self._nvml.nvmlShutdown()
            except Exception as exc:  # shutting down must never fail the caller
                log.debug("nvmlShutdown failed: %s", exc)

    def _try_init(self) -> bool:
        now = self._clock()
        if now < self._next_init_at:
            return False
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except Exception as exc:  # NVMLError, or OSError from a broken library
            self._next_init_at = now + self._retry_init_s
            reason = _unavailable_reason(nvml, exc)
            if reason != self._status.reason:
                log.info("GPU stats unavailable: %s", reason)
            self._status = GpuStatus(available=False, reason=reason)
            return False
        self._initialised = True
        try:
            count = nvml.nvmlDeviceGetCount()
            handles = []
            for i in range(count):
                try:
                    handles.append((i, nvml.nvmlDeviceGetHandleByIndex(i)))
                except nvml.NVMLError as exc:
                    # One broken or lost GPU should not hide the others.
                    log.warning("GPU %d is not accessible: %s", i, exc)
            self._handles = handles
            driver = self._call(nvml.nvmlSystemGetDriverVersion)
        except Exception as exc:
            self.close()
            self._next_init_at = now + self._retry_init_s
            self._status = GpuStatus(available=False, reason=f"NVML started but failed: {exc}")
            return False
        if not handles:
            self._status = GpuStatus(available=False, driver_version=_opt_text(driver),
                                     reason="The NVIDIA driver reports no GPU")
            # Nothing to read: let go of NVML and look again later, a GPU may be attached.
            self.close()
            self._next_init_at = now + self._retry_init_s
            return False
        self._status = GpuStatus(available=True, driver_version=_opt_text(driver))
        log.info("NVML started: %d GPU(s), driver %s", len(handles), self._status.driver_version)
        return True

    def _call(self, fn, *args):
        """``fn(*args)``, or None when NVML says the field is unsupported or fails."""
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _device(self, index: int, handle: Any) -> GpuSample:
        nvml = self._nvml
        util = self._call(nvml.nvmlDeviceGetUtilizationRates, handle)
        mem = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
        temp = self._call(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
        power_mw = self._call(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = self._call(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        return GpuSample(
            index=index,
            uuid=_opt_text(self._call(nvml.nvmlDeviceGetUUID, handle)),
            name=_opt_text(self._call(nvml.nvmlDeviceGetName, handle)),
            utilization_pct=float(util.gpu) if util is not None else None,
            memory_used_bytes=int(mem.used) if mem is not None else None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            temperature_c=float(temp) if temp is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
        )

    def _processes(self, handle: Any) -> list[RawGpuProcess]:
        nvml = self._nvml
        by_pid: dict[int, int | None] = {}
        # A process may hold both a compute and a graphics context; count it once.
        for fn in (nvml.nvmlDeviceGetComputeRunningProcesses,
                   nvml.nvmlDeviceGetGraphicsRunningProcesses):
            for p in self._call(fn, handle) or ():
                used = getattr(p, "usedGpuMemory", None)
                # NVML signals "unknown" as None or as NVML_VALUE_NOT_AVAILABLE (2**64 - 1).
                used = int(used) if used is not None and used < 2**63 else None
                old = by_pid.get(p.pid)
                by_pid[p.pid] = used if old is None else max(old, used or 0)
        return [RawGpuProcess(pid, used) for pid, used in sorted(by_pid.items())]


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)

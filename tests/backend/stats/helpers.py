"""Test helpers for the stats tests: a fake NVML with the calls GpuSource makes, programs for test containers."""

from __future__ import annotations

from types import SimpleNamespace


class FakeNVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeNvml:
    """Only what backend.stats.gpu calls, with pynvml's names and units (milliwatts, bytes).

    ``gpus`` is a list of dicts (name, uuid, util, used, total, temp, power_mw, limit_mw,
    compute: [(pid, bytes)], graphics: [(pid, bytes)]). ``unsupported`` names functions
    that raise NotSupported; ``init_error`` makes nvmlInit fail with that error code.
    """

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_DRIVER_NOT_LOADED = 9
    NVML_ERROR_LIBRARY_NOT_FOUND = 12

    def __init__(self, gpus: list[dict], unsupported: set[str] = frozenset(), init_error: int | None = None):
        self.gpus = gpus
        self.unsupported = set(unsupported)
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0

    def _check(self, name: str) -> None:
        if name in self.unsupported:
            raise FakeNVMLError(self.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self):
        self._check("nvmlSystemGetDriverVersion")
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        self._check("nvmlDeviceGetUUID")
        return self.gpus[h]["uuid"]

    def nvmlDeviceGetName(self, h):
        self._check("nvmlDeviceGetName")
        return self.gpus[h]["name"]

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=self.gpus[h]["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check("nvmlDeviceGetMemoryInfo")
        g = self.gpus[h]
        return SimpleNamespace(used=g["used"], total=g["total"], free=g["total"] - g["used"])

    def nvmlDeviceGetTemperature(self, h, sensor):
        self._check("nvmlDeviceGetTemperature")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self.gpus[h]["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("nvmlDeviceGetPowerUsage")
        return self.gpus[h]["power_mw"]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        self._check("nvmlDeviceGetEnforcedPowerLimit")
        return self.gpus[h]["limit_mw"]

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self._check("nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.gpus[h].get("compute", [])]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h):
        self._check("nvmlDeviceGetGraphicsRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.gpus[h].get("graphics", [])]


def fake_gpu(i: int, compute=(), graphics=()) -> dict:
    """A plausible 24 GiB GPU for FakeNvml."""
    return {"name": f"NVIDIA Fake {i}", "uuid": f"GPU-0000000{i}", "util": 40 + i, "used": (1 + i) * 2**30,
            "total": 24 * 2**30, "temp": 50 + i, "power_mw": 150_000 + i, "limit_mw": 300_000,
            "compute": list(compute), "graphics": list(graphics)}


# Programs for test containers (python3 -c).
BUSY_LOOP = "while True: pass"
HOLD_100MB = "import time\nb = b'x' * (100 * 1024 * 1024)\nwhile True: time.sleep(1)"
IDLE = "import time\nwhile True: time.sleep(1)"

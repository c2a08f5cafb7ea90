"""Turns the backend's stats snapshots into per-quantity ring series, GPU facts and deployment flags."""

from __future__ import annotations

from dataclasses import dataclass

from desktop.monitor.series import WINDOW_S, RingSeries

HOST_CPU, HOST_MEM = "host.cpu", "host.mem"


def gpu_key(index: int, what: str) -> str:
    """Series key of one GPU quantity: util, mem, mem_total, temp, power."""
    return f"gpu.{index}.{what}"


def deployment_key(deployment_id: str, what: str) -> str:
    """Series key of one deployment quantity: cpu, mem, vram."""
    return f"dep.{deployment_id}.{what}"


@dataclass
class GpuFacts:
    """What does not change from sample to sample about a GPU."""

    index: int
    name: str
    memory_total_bytes: int | None
    power_limit_w: float | None


@dataclass
class DeploymentFacts:
    """A deployment as the latest snapshot saw it."""

    deployment_id: str
    running_on_cpu: bool
    wants_gpu: bool
    present: bool  # in the latest snapshot (running)
    last_seen: float


class StatsStore:
    """Keeps the last 15 minutes of every charted quantity; fed one snapshot (a dict) at a time.

    ``layout_version`` grows whenever the set of GPUs or deployments, a deployment's flags or
    the GPU status change, so a view rebuilds its sections only then and otherwise just repaints.
    """

    def __init__(self, window_s: float = WINDOW_S, capacity: int = 2048):
        self.window_s = window_s
        self._capacity = capacity
        self.series: dict[str, RingSeries] = {}
        self.gpus: dict[int, GpuFacts] = {}
        self.deployments: dict[str, DeploymentFacts] = {}
        self.gpu_status: dict = {}
        self.host_mem_total: int | None = None
        self.latest_time: float | None = None
        self.layout_version = 0

    def get(self, key: str) -> RingSeries:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = RingSeries(key, self._capacity)
        return series

    def ingest_many(self, snapshots: list) -> int:
        """Ingest a backfill (oldest first); returns how many were new."""
        return sum(self.ingest(s) for s in snapshots)

    def ingest(self, snapshot: dict) -> bool:
        """Add one StatsSnapshot (as decoded JSON). False when it is not newer than the latest."""
        if not isinstance(snapshot, dict) or not isinstance(snapshot.get("time"), (int, float)):
            return False
        t = float(snapshot["time"])
        if self.latest_time is not None and t <= self.latest_time:
            return False
        self.latest_time = t
        changed = False

        host = snapshot.get("host") or {}
        self.get(HOST_CPU).append(t, host.get("cpu_pct"))
        self.get(HOST_MEM).append(t, host.get("mem_used_bytes"))
        self.host_mem_total = host.get("mem_total_bytes") or self.host_mem_total

        status = snapshot.get("gpu_status") or {}
        if (status.get("available"), status.get("reason")) != (self.gpu_status.get("available"),
                                                               self.gpu_status.get("reason")):
            changed = True
        self.gpu_status = status
        for gpu in snapshot.get("gpus") or []:
            i = gpu.get("index", 0)
            facts = GpuFacts(i, gpu.get("name") or f"GPU {i}", gpu.get("memory_total_bytes"), gpu.get("power_limit_w"))
            if self.gpus.get(i) != facts:
                changed = changed or i not in self.gpus
                self.gpus[i] = facts
            self.get(gpu_key(i, "util")).append(t, gpu.get("utilization_pct"))
            self.get(gpu_key(i, "mem")).append(t, gpu.get("memory_used_bytes"))
            self.get(gpu_key(i, "mem_total")).append(t, gpu.get("memory_total_bytes"))
            self.get(gpu_key(i, "temp")).append(t, gpu.get("temperature_c"))
            self.get(gpu_key(i, "power")).append(t, gpu.get("power_w"))

        seen = snapshot.get("deployments") or {}
        for dep_id, sample in seen.items():
            before = self.deployments.get(dep_id)
            facts = DeploymentFacts(dep_id, bool(sample.get("running_on_cpu")), bool(sample.get("wants_gpu")),
                                    True, t)
            if before is None or (before.running_on_cpu, before.wants_gpu, before.present) != (
                    facts.running_on_cpu, facts.wants_gpu, True):
                changed = True
            self.deployments[dep_id] = facts
            self.get(deployment_key(dep_id, "cpu")).append(t, sample.get("cpu_pct"))
            self.get(deployment_key(dep_id, "mem")).append(t, sample.get("mem_used_bytes"))
            self.get(deployment_key(dep_id, "vram")).append(t, sample.get("vram_bytes"))
        for dep_id, facts in list(self.deployments.items()):
            if dep_id in seen:
                continue
            if facts.present:
                facts.present, changed = False, True
                for what in ("cpu", "mem", "vram"):  # a gap, so the line does not bridge the downtime
                    self.get(deployment_key(dep_id, what)).append(t, None)
            if facts.last_seen < t - self.window_s:
                del self.deployments[dep_id]
                for what in ("cpu", "mem", "vram"):
                    self.series.pop(deployment_key(dep_id, what), None)
                changed = True

        horizon = t - self.window_s
        for series in self.series.values():
            series.trim_before(horizon)
        if changed:
            self.layout_version += 1
        return True

"""Immutable stats records: what the sampler measured at one instant, as the API hands it out."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """One deployment's container, as the engine lists it, for the sampler to measure.

    ``container_id`` is Docker's full 64-hex id: cgroup folders are named by it.
    """

    container_id: str
    deployment_id: str
    wants_gpu: bool
    ready: bool


class GpuProcess(_Frozen):
    """A process holding a GPU context; ``deployment_id`` is set when it runs in a deployment's container."""

    pid: int
    used_memory_bytes: int | None = Field(
        description="GPU memory the process holds; None where the driver does not say (MIG, WDDM)")
    deployment_id: str | None = None


class GpuSample(_Frozen):
    """One GPU at one instant. A field the device does not support is None."""

    index: int
    uuid: str | None
    name: str | None
    utilization_pct: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    processes: list[GpuProcess] = Field(default_factory=list)


class GpuStatus(_Frozen):
    """Whether NVML answers; ``reason`` says in plain words why not."""

    available: bool
    driver_version: str | None = None
    reason: str | None = None


class HostSample(_Frozen):
    """The host at one instant. Rates are None on the first sample (no earlier one to compare)."""

    cpu_pct: float | None = Field(description="all CPUs together, 0..100")
    cpu_count: int
    per_cpu_pct: list[float]
    mem_used_bytes: int
    mem_total_bytes: int
    mem_available_bytes: int
    swap_used_bytes: int
    disk_used_bytes: int | None = Field(description="the data folder's filesystem")
    disk_total_bytes: int | None
    net_rx_bytes_per_s: float | None
    net_tx_bytes_per_s: float | None
    load_avg: tuple[float, float, float] | None = Field(description="1, 5 and 15 minutes")


class DeploymentSample(_Frozen):
    """One deployment's container at one instant; figures its cgroup does not give are None."""

    deployment_id: str
    container_id: str
    cpu_pct: float | None = Field(description="percent of one core, like `docker stats` (200 = two cores)")
    mem_used_bytes: int | None = Field(description="usage without reclaimable page cache, like `docker stats`")
    mem_limit_bytes: int | None = Field(description="None when the container has no memory limit")
    vram_bytes: int | None = Field(description="GPU memory held by its processes; None without NVML")
    gpu_indices: list[int] = Field(default_factory=list)
    wants_gpu: bool
    running_on_cpu: bool = Field(
        description="wants a GPU and is ready, yet holds no GPU memory (only judged when NVML answers)")


class ModelRequestStats(_Frozen):
    """Running totals of proxied requests for one served model since the backend started."""

    requests: int
    errors: int
    completion_tokens: int
    prompt_tokens: int
    avg_ttft_s: float | None
    ttft_s_sum: float
    ttft_count: int
    decode_tokens_per_s: float | None = Field(
        None, description="output tokens per second after the first token, over all successful requests")
    by_status: dict[int, int] = Field(default_factory=dict)


class RequestsSummary(_Frozen):
    """Proxied inference traffic: requests in progress now, totals per served model."""

    in_flight: int = 0
    models: dict[str, ModelRequestStats] = Field(default_factory=dict)


class StatsSnapshot(_Frozen):
    """Everything measured in one sampler tick. ``seq`` counts ticks from 1 with no gaps."""

    time: float = Field(description="seconds since the epoch")
    seq: int
    host: HostSample
    gpus: list[GpuSample] = Field(default_factory=list)
    gpu_status: GpuStatus
    deployments: dict[str, DeploymentSample] = Field(default_factory=dict)
    requests: RequestsSummary = Field(default_factory=RequestsSummary)


class StatsHistory(_Frozen):
    """The snapshots of the last ``seconds``, oldest first."""

    seconds: float
    interval: float
    snapshots: list[StatsSnapshot]

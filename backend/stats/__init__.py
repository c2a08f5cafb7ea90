"""Live stats: a background sampler of host, GPU (NVML) and container (cgroup) figures, as immutable snapshots."""

from .models import (
    ContainerRef,
    DeploymentSample,
    GpuProcess,
    GpuSample,
    GpuStatus,
    HostSample,
    ModelRequestStats,
    RequestsSummary,
    StatsHistory,
    StatsSnapshot,
)
from .sampler import StatsSampler, Subscription

__all__ = [
    "ContainerRef",
    "DeploymentSample",
    "GpuProcess",
    "GpuSample",
    "GpuStatus",
    "HostSample",
    "ModelRequestStats",
    "RequestsSummary",
    "StatsHistory",
    "StatsSampler",
    "StatsSnapshot",
    "Subscription",
]

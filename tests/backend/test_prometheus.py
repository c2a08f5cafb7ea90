"""backend.prometheus: the snapshot through a prometheus-client collector, one registry and one text per app."""

from __future__ import annotations

import time

import prometheus_client

from backend.prometheus import Exposition, render_prometheus
from backend.stats.models import (DeploymentSample, GpuSample, GpuStatus, HostSample, ModelRequestStats,
                                  RequestsSummary, StatsSnapshot)
from tests.backend.stats.test_routes import parse_prometheus

# Every family /metrics has always exposed: (name as on its TYPE line, type, help text).
FAMILIES = [
    ("modeldeck_host_cpu_percent", "gauge", "Host CPU use over all cores, 0-100."),
    ("modeldeck_host_cpu_count", "gauge", "Logical CPUs of the host."),
    ("modeldeck_host_memory_used_bytes", "gauge", "Host memory in use (total minus available)."),
    ("modeldeck_host_memory_available_bytes", "gauge", "Host memory available without swapping."),
    ("modeldeck_host_memory_total_bytes", "gauge", "Host memory in total."),
    ("modeldeck_host_swap_used_bytes", "gauge", "Host swap in use."),
    ("modeldeck_host_disk_used_bytes", "gauge", "Used space on the data folder's filesystem."),
    ("modeldeck_host_disk_total_bytes", "gauge", "Size of the data folder's filesystem."),
    ("modeldeck_host_network_receive_bytes_per_second", "gauge", "Bytes received per second, all interfaces."),
    ("modeldeck_host_network_transmit_bytes_per_second", "gauge", "Bytes sent per second, all interfaces."),
    ("modeldeck_gpu_available", "gauge", "1 when NVML answers, else 0."),
    ("modeldeck_gpu_info", "gauge", "Constant 1, labelled with each GPU's identity."),
    ("modeldeck_gpu_utilization_percent", "gauge", "GPU utilization, 0-100."),
    ("modeldeck_gpu_memory_used_bytes", "gauge", "GPU memory in use."),
    ("modeldeck_gpu_memory_total_bytes", "gauge", "GPU memory in total."),
    ("modeldeck_gpu_temperature_celsius", "gauge", "GPU core temperature."),
    ("modeldeck_gpu_power_watts", "gauge", "GPU power draw."),
    ("modeldeck_gpu_power_limit_watts", "gauge", "GPU enforced power limit."),
    ("modeldeck_deployment_cpu_percent", "gauge", "Deployment container CPU use, percent of one core."),
    ("modeldeck_deployment_memory_used_bytes", "gauge", "Deployment container memory use, without page cache."),
    ("modeldeck_deployment_memory_limit_bytes", "gauge", "Deployment container memory limit."),
    ("modeldeck_deployment_vram_bytes", "gauge", "GPU memory held by the deployment's processes."),
    ("modeldeck_deployment_running_on_cpu", "gauge",
     "1 when the deployment wants a GPU and is ready, yet holds no GPU memory."),
    ("modeldeck_requests_total", "counter", "Proxied inference requests, by served model and HTTP status."),
    ("modeldeck_request_ttft_seconds", "summary", "Time to first token of proxied requests."),
    ("modeldeck_completion_tokens_total", "counter", "Completion tokens generated, by served model."),
    ("modeldeck_prompt_tokens_total", "counter", "Prompt tokens read, by served model."),
    ("modeldeck_decode_tokens_per_second", "gauge",
     "Output tokens per second after the first token, as clients received them, by served model."),
    ("modeldeck_requests_in_flight", "gauge", "Proxied inference requests in progress."),
]


def snapshot(seq: int = 1) -> StatsSnapshot:
    host = HostSample(cpu_pct=12.5, cpu_count=16, per_cpu_pct=[1.0] * 16, mem_used_bytes=10**10,
                      mem_total_bytes=6 * 10**10, mem_available_bytes=5 * 10**10, swap_used_bytes=0,
                      disk_used_bytes=10**11, disk_total_bytes=10**12, net_rx_bytes_per_s=1234.5,
                      net_tx_bytes_per_s=None, load_avg=None)
    gpu = GpuSample(index=0, uuid="GPU-0", name='Odd "name"\\', utilization_pct=41.0, memory_used_bytes=2**30,
                    memory_total_bytes=24 * 2**30, temperature_c=50.0, power_w=150.0, power_limit_w=None)
    dep = DeploymentSample(deployment_id="d0", container_id="c", cpu_pct=3.0, mem_used_bytes=2**28,
                           mem_limit_bytes=None, vram_bytes=0, wants_gpu=True, running_on_cpu=True)
    model = ModelRequestStats(requests=10, errors=1, completion_tokens=100, prompt_tokens=50, avg_ttft_s=0.2,
                              ttft_s_sum=2.0, ttft_count=10, decode_tokens_per_s=None, by_status={200: 9, 503: 1})
    return StatsSnapshot(time=time.time(), seq=seq, host=host, gpus=[gpu], gpu_status=GpuStatus(available=True),
                         deployments={"d0": dep}, requests=RequestsSummary(in_flight=2, models={"m\n1": model}))


def test_names_types_and_help_texts_are_the_ones_scrapers_know():
    text = render_prometheus(snapshot())
    types, samples = parse_prometheus(text)
    helps = dict(line[len("# HELP "):].split(" ", 1) for line in text.splitlines() if line.startswith("# HELP "))
    assert [(n, types[n], helps[n]) for n in types] == FAMILIES
    values = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    assert values[("modeldeck_gpu_info", (("gpu", "0"), ("name", 'Odd "name"\\'), ("uuid", "GPU-0")))] == 1
    assert values[("modeldeck_requests_total", (("model", "m\n1"), ("status", "503")))] == 1
    assert values[("modeldeck_request_ttft_seconds_sum", (("model", "m\n1"),))] == 2.0
    assert values[("modeldeck_request_ttft_seconds_count", (("model", "m\n1"),))] == 10
    assert values[("modeldeck_host_disk_total_bytes", ())] == 10**12
    # None is left out, not written as NaN or 0.
    left_out = {"modeldeck_gpu_power_limit_watts", "modeldeck_host_network_transmit_bytes_per_second",
                "modeldeck_deployment_memory_limit_bytes", "modeldeck_decode_tokens_per_second"}
    assert not left_out & {n for n, _, _ in samples}


def test_one_text_per_snapshot_on_a_registry_of_the_apps_own():
    current: list[StatsSnapshot | None] = [None]
    exposition = Exposition(lambda: current[0])
    assert exposition.text() is None, "nothing to say before the first tick"
    current[0] = snapshot(1)
    text = exposition.text()
    assert exposition.text() is text, "the same snapshot is not rendered twice"
    current[0] = snapshot(2)
    assert exposition.text() is not text and exposition.text() == render_prometheus(current[0]).encode()
    assert exposition.registry is not prometheus_client.REGISTRY
    assert b"modeldeck_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)

"""Tests of backend.stats.sampler: the thread, the ring buffer, subscribers, GPU process mapping."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time

import pytest

from backend.metrics import RequestLog, RequestMetrics
from backend.stats import ContainerRef, StatsSampler

from tests.support.waiting import wait_until, wait_until_async

from .helpers import IDLE, FakeNvml, fake_gpu

GiB = 2**30


def _no_containers() -> list[ContainerRef]:
    return []


@pytest.fixture()
def sampler_factory():
    """Build samplers that are stopped at teardown, pass or fail."""
    made: list[StatsSampler] = []

    def make(*args, **kwargs) -> StatsSampler:
        s = StatsSampler(*args, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_real_nvml_without_gpu_keeps_sampling(sampler_factory, tmp_path):
    s = sampler_factory(_no_containers, interval=0.05, data_path=tmp_path)
    assert s.latest() is None
    s.start()
    wait_until(lambda: (s.latest() or None) and s.latest().seq >= 3, what="three snapshots")
    snap = s.latest()
    assert snap.gpu_status.available is False
    assert "NVIDIA" in snap.gpu_status.reason
    assert snap.gpus == []
    assert snap.host.mem_total_bytes > 0
    assert s.running


def test_stop_joins_quickly_even_with_a_long_interval(sampler_factory):
    s = sampler_factory(_no_containers, interval=30.0)
    s.start()
    wait_until(s.latest, what="the first snapshot")
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 2.0
    assert not s.running


def test_ring_buffer_is_bounded_and_seq_has_no_gaps(sampler_factory):
    s = sampler_factory(_no_containers, interval=0.02, history_seconds=1)
    s.start()
    wait_until(lambda: s.latest() and s.latest().seq >= 80, timeout=20, what="80 ticks")
    items = s.history(10_000)
    assert len(items) == 50  # history_seconds / interval
    seqs = [x.seq for x in items]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert [x.time for x in items] == sorted(x.time for x in items)
    # Only what falls in the window.
    recent = s.history(0.2)
    assert recent and all(x.time >= time.time() - 0.5 for x in recent) and len(recent) < len(items)


def test_failing_container_source_keeps_the_last_list(sampler_factory):
    calls = []
    ref = ContainerRef("e" * 64, "dep-a", wants_gpu=False, ready=True)

    def source():
        calls.append(1)
        if len(calls) > 1:
            raise ConnectionError("engine went away")
        return [ref]

    s = sampler_factory(source, interval=0.05)
    s.start()
    wait_until(lambda: s.latest() and s.latest().seq >= 3, what="three snapshots")
    dep = s.latest().deployments["dep-a"]
    # The container does not exist: figures are None, nothing raised.
    assert (dep.cpu_pct, dep.mem_used_bytes, dep.vram_bytes, dep.running_on_cpu) == (None, None, None, False)


def test_request_log_totals_are_summarised():
    log = RequestLog()
    log.started()
    log.started()
    log.record(RequestMetrics(model="demo", deployment_id="d1", endpoint="chat/completions", stream=True,
                              status=200, started_at=time.time(), duration_s=1.0, ttft_s=0.2,
                              completion_tokens=10, prompt_tokens=5))
    log.started()
    log.record(RequestMetrics(model="demo", deployment_id="d1", endpoint="chat/completions", stream=False,
                              status=502, started_at=time.time(), duration_s=0.1, error="boom"))
    log.record(RequestMetrics(model="other", deployment_id=None, endpoint="completions", stream=False,
                              status=200, started_at=time.time(), duration_s=0.5, ttft_s=0.4,
                              completion_tokens=3))
    snap = StatsSampler(_no_containers, request_log=log, nvml=FakeNvml([])).sample_once()
    r = snap.requests
    assert r.in_flight == 0
    demo = r.models["demo"]
    assert (demo.requests, demo.errors, demo.completion_tokens, demo.prompt_tokens) == (2, 1, 10, 5)
    assert demo.avg_ttft_s == pytest.approx(0.2) and demo.ttft_count == 1
    assert demo.by_status == {200: 1, 502: 1}
    assert r.models["other"].avg_ttft_s == pytest.approx(0.4)


@pytest.mark.docker
def test_gpu_processes_map_to_deployments(run_container):
    on_gpu_id, on_gpu_pid = run_container(IDLE)
    on_cpu_id, _ = run_container(IDLE)
    refs = [
        ContainerRef(on_gpu_id, "llama-gpu", wants_gpu=True, ready=True),
        ContainerRef(on_cpu_id, "llama-fell-back", wants_gpu=True, ready=True),
        ContainerRef(on_cpu_id, "cpu-only", wants_gpu=False, ready=True),
    ]
    nvml = FakeNvml([
        # Our own PID is a GPU process outside any deployment.
        fake_gpu(0, compute=[(on_gpu_pid, 3 * GiB), (os.getpid(), GiB)]),
        fake_gpu(1, compute=[(on_gpu_pid, GiB)], graphics=[(on_gpu_pid, GiB)]),
    ])
    snap = StatsSampler(lambda: refs, interval=0.1, nvml=nvml).sample_once()

    assert snap.gpu_status.available
    assert [g.index for g in snap.gpus] == [0, 1]
    owners = {(g.index, p.pid): p.deployment_id for g in snap.gpus for p in g.processes}
    assert owners == {(0, on_gpu_pid): "llama-gpu", (0, os.getpid()): None, (1, on_gpu_pid): "llama-gpu"}

    gpu_dep = snap.deployments["llama-gpu"]
    assert gpu_dep.vram_bytes == 4 * GiB  # summed over both GPUs, counted once per GPU
    assert gpu_dep.gpu_indices == [0, 1]
    assert gpu_dep.running_on_cpu is False
    assert gpu_dep.mem_used_bytes and gpu_dep.mem_used_bytes > 0  # cgroup figures came too

    fell_back = snap.deployments["llama-fell-back"]
    assert fell_back.vram_bytes == 0 and fell_back.gpu_indices == []
    assert fell_back.running_on_cpu is True

    assert snap.deployments["cpu-only"].running_on_cpu is False  # never wanted a GPU


@pytest.mark.docker
def test_running_on_cpu_needs_ready_and_a_working_nvml(run_container):
    cid, _ = run_container(IDLE)
    starting = [ContainerRef(cid, "starting", wants_gpu=True, ready=False)]
    snap = StatsSampler(lambda: starting, nvml=FakeNvml([fake_gpu(0)])).sample_once()
    assert snap.deployments["starting"].running_on_cpu is False  # still loading: no verdict yet

    ready = [ContainerRef(cid, "ready", wants_gpu=True, ready=True)]
    no_driver = FakeNvml([fake_gpu(0)], init_error=FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    snap = StatsSampler(lambda: ready, nvml=no_driver).sample_once()
    dep = snap.deployments["ready"]
    # Without NVML nothing can be said about GPU use.
    assert dep.running_on_cpu is False and dep.vram_bytes is None
    assert snap.gpu_status.reason == "No NVIDIA driver found (libnvidia-ml.so not loadable)"


def test_unknown_process_memory_still_counts_as_on_gpu(monkeypatch):
    import backend.stats.sampler as sampler_mod

    cid = "d" * 64
    monkeypatch.setattr(sampler_mod, "container_id_of_pid", lambda pid: cid if pid == 4242 else None)
    refs = [ContainerRef(cid, "mig", wants_gpu=True, ready=True)]
    snap = StatsSampler(lambda: refs, nvml=FakeNvml([fake_gpu(0, compute=[(4242, None)])])).sample_once()
    dep = snap.deployments["mig"]
    assert dep.running_on_cpu is False and dep.vram_bytes == 0 and dep.gpu_indices == [0]


def test_gpu_interval_reuses_the_last_reading():
    nvml = FakeNvml([fake_gpu(0)])
    calls = []
    original = nvml.nvmlDeviceGetMemoryInfo
    nvml.nvmlDeviceGetMemoryInfo = lambda h: calls.append(h) or original(h)
    s = StatsSampler(_no_containers, interval=0.01, gpu_interval=60.0, nvml=nvml)
    snaps = [s.sample_once() for _ in range(5)]
    assert len(calls) == 1
    assert all(x.gpus[0].memory_used_bytes == GiB for x in snaps)


# -- subscribers -------------------------------------------------------------------


def test_subscriber_gets_latest_first_then_every_sample(sampler_factory):
    s = sampler_factory(_no_containers, interval=0.02)
    s.start()
    wait_until(s.latest, what="the first snapshot")

    async def consume():
        async with s.subscribe() as sub:
            first = await sub.next(timeout=5)
            assert first.seq <= s.latest().seq
            seqs = [first.seq]
            async for snap in sub:
                seqs.append(snap.seq)
                if len(seqs) == 6:
                    break
            assert s.subscriber_count == 1
        assert s.subscriber_count == 0
        return seqs

    seqs = asyncio.run(consume())
    assert seqs == list(range(seqs[0], seqs[0] + 6))


def test_slow_subscriber_drops_old_samples(sampler_factory):
    s = sampler_factory(_no_containers, interval=0.01)
    s.start()

    async def lag():
        sub = s.subscribe(maxsize=4)
        start = (s.latest().seq if s.latest() else 0)
        # Never read while 60 samples go by; the loop keeps running the feeding callbacks.
        while not (s.latest() and s.latest().seq >= start + 60):
            await asyncio.sleep(0.01)  # not reading is the test: the loop runs on meanwhile
            assert sub.qsize() <= 4
        await wait_until_async(lambda: sub.dropped >= 50, 2, what="50 samples dropped for the slow subscriber")
        assert sub.qsize() == 4
        got = [(await sub.next(timeout=1)).seq for _ in range(4)]
        sub.close()
        return got

    got = asyncio.run(lag())
    assert got == sorted(got) and got[-1] >= got[0] + 3  # the newest ones, in order
    assert s.subscriber_count == 0


def test_stop_ends_subscriptions(sampler_factory):
    s = sampler_factory(_no_containers, interval=0.02)
    s.start()
    wait_until(s.latest, what="the first snapshot")

    async def consume():
        sub = s.subscribe()
        n = 0
        threading.Timer(0.2, s.stop).start()
        async for _ in sub:  # ends when the sampler stops
            n += 1
        return n

    assert asyncio.run(asyncio.wait_for(consume(), 5)) >= 1
    assert s.subscriber_count == 0


def test_dropped_subscription_is_not_kept(sampler_factory):
    s = sampler_factory(_no_containers, interval=0.02)

    async def forget():
        s.subscribe()  # never closed, never referenced

    asyncio.run(forget())
    gc.collect()
    assert s.subscriber_count == 0

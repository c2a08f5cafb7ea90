"""The stats sampler: one background thread measures everything, keeps recent snapshots, feeds subscribers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .containers import ContainerSource, ContainerUsage, container_id_of_pid
from .gpu import GpuReading, GpuSource
from .host import HostSource
from .models import (
    ContainerRef,
    DeploymentSample,
    GpuProcess,
    GpuSample,
    ModelRequestStats,
    RequestsSummary,
    StatsSnapshot,
)

log = logging.getLogger(__name__)

STOP_JOIN_S = 2.0
DEFAULT_SUBSCRIBER_QUEUE = 8


class Subscription:
    """A live feed of snapshots for one consumer on an event loop; an async iterator.

    Its queue is bounded: when the consumer falls behind, the oldest snapshots are
    dropped (and counted in ``dropped``) so a slow consumer never grows memory.
    Close it (``close()``, ``await aclose()`` or ``async with``) when done; iteration
    ends when it, or the sampler, is closed.
    """

    _END = object()

    def __init__(self, sampler: StatsSampler, loop: asyncio.AbstractEventLoop, maxsize: int):
        self._sampler = sampler
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=maxsize)
        self._closed = False
        self._ended = False
        self.dropped = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        """Snapshots waiting to be read."""
        return self._queue.qsize()

    def _offer(self, item: Any) -> None:
        # Runs on the subscriber's loop (via call_soon_threadsafe), so the queue is only
        # ever touched from that loop.
        if self._ended:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)
        if item is self._END:
            self._ended = True

    def _deliver(self, item: Any) -> bool:
        """Hand ``item`` to the loop from any thread; False when the loop is gone."""
        try:
            self._loop.call_soon_threadsafe(self._offer, item)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StatsSnapshot:
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is self._END:
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float | None = None) -> StatsSnapshot | None:
        """The next snapshot, or None when ``timeout`` seconds pass without one.

        Raises:
            StopAsyncIteration: the subscription or the sampler was closed.
        """
        try:
            return await asyncio.wait_for(self.__anext__(), timeout)
        except asyncio.TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving snapshots and end iteration; safe to call more than once, from any thread."""
        if self._closed:
            return
        self._closed = True
        self._sampler._unsubscribe(self)
        self._deliver(self._END)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


class StatsSampler:
    """Samples host, GPUs and deployment containers on one background thread.

    Request handlers never measure anything: they read ``latest()``, ``history()`` or
    ``subscribe()``. NVML is initialised in the sampler's thread, on its first tick.
    """

    def __init__(
        self,
        container_source: Callable[[], list[ContainerRef]],
        request_log: Any | None = None,
        interval: float = 1.0,
        history_seconds: int = 960,
        gpu_interval: float = 1.0,
        nvml: Any = None,
        data_path: Path | None = None,
    ):
        """Args:
            container_source: returns the deployments' containers to measure; called on
                the sampler's thread, once per tick (it may block briefly).
            request_log: a ``backend.metrics.RequestLog`` whose totals go into each
                snapshot's ``requests``; None leaves them empty.
            interval: seconds between snapshots.
            history_seconds: how far back ``history()`` reaches.
            gpu_interval: seconds between NVML reads (at least one tick; in between, the
                last GPU reading is reused).
            nvml: a pynvml-like object (tests); the real ``pynvml`` when None.
            data_path: folder whose filesystem's disk use is reported.
        Raises:
            ValueError: for a non-positive interval or history.
        """
        if interval <= 0 or history_seconds <= 0 or gpu_interval <= 0:
            raise ValueError("interval, gpu_interval and history_seconds must be positive")
        self._container_source = container_source
        self._request_log = request_log
        self.interval = float(interval)
        self.history_seconds = history_seconds
        self.gpu_interval = float(gpu_interval)
        self._host = HostSource(data_path)
        self._gpu = GpuSource(nvml)
        self._containers = ContainerSource()

        self._buffer: deque[StatsSnapshot] = deque(maxlen=max(1, int(history_seconds / interval)))
        self._lock = threading.Lock()
        # Weak, so that a consumer that drops its subscription without closing it
        # does not stay registered (and fed) forever.
        self._subscribers: weakref.WeakValueDictionary[int, Subscription] = weakref.WeakValueDictionary()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0

        self._refs: list[ContainerRef] = []
        self._gpu_reading: GpuReading | None = None
        self._next_gpu_at = 0.0
        self._pid_containers: dict[int, str | None] = {}
        self._last_error: str | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (no-op when it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modeldeck-stats", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_JOIN_S) -> None:
        """Stop the thread, waiting up to ``timeout`` seconds, and end every subscription."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("stats sampler did not stop within %.1f s", timeout)
        self.close_subscriptions()

    def close_subscriptions(self) -> None:
        """End every subscription now (their iterations stop), e.g. before a server drains connections."""
        with self._lock:
            subs = list(self._subscribers.values())
        for sub in subs:
            sub.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- reading -------------------------------------------------------------------

    def latest(self) -> StatsSnapshot | None:
        """The newest snapshot, or None before the first tick completes."""
        with self._lock:
            return self._buffer[-1] if self._buffer else None

    def history(self, seconds: float) -> list[StatsSnapshot]:
        """Snapshots taken in the last ``seconds`` (wall clock), oldest first."""
        cutoff = time.time() - seconds
        with self._lock:
            items = list(self._buffer)
        return [s for s in items if s.time >= cutoff]

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIBER_QUEUE) -> Subscription:
        """A feed of snapshots for the running event loop, starting with the latest one.

        Args:
            maxsize: how many unread snapshots to keep before dropping the oldest.
        Returns:
            The subscription; close it when done.
        Raises:
            RuntimeError: when called with no running event loop.
        """
        loop = asyncio.get_running_loop()
        sub = Subscription(self, loop, maxsize)
        with self._lock:
            latest = self._buffer[-1] if self._buffer else None
            self._subscribers[id(sub)] = sub
        if latest is not None:
            sub._offer(latest)
        return sub

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.pop(id(sub), None)

    # -- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    snapshot = self.sample_once()
                except Exception as exc:
                    # Log a recurring failure once, not once per second.
                    message = f"{type(exc).__name__}: {exc}"
                    if message != self._last_error:
                        log.exception("stats tick failed")
                        self._last_error = message
                else:
                    self._last_error = None
                    self._publish(snapshot)
                next_tick += self.interval
                delay = next_tick - time.monotonic()
                if delay < 0:  # fell behind: skip the missed ticks rather than burst
                    next_tick = time.monotonic()
                    delay = 0
                self._stop.wait(delay)
        finally:
            self._gpu.close()

    def _publish(self, snapshot: StatsSnapshot) -> None:
        with self._lock:
            self._buffer.append(snapshot)
            subs = list(self._subscribers.values())
        for sub in subs:
            if not sub._deliver(snapshot):
                self._unsubscribe(sub)

    def sample_once(self) -> StatsSnapshot:
        """Measure everything once and return the snapshot, without publishing it.

        Called by the sampler's thread; tests may call it directly instead of ``start()``.
        """
        try:
            self._refs = list(self._container_source())
        except Exception as exc:
            # The engine may be briefly unreachable: keep measuring the last known list.
            log.debug("container source failed, keeping the last list: %s", exc)
        refs = self._refs

        host = self._host.sample()
        now = time.monotonic()
        if self._gpu_reading is None or now >= self._next_gpu_at:
            self._gpu_reading = self._gpu.sample()
            self._next_gpu_at = now + self.gpu_interval - self.interval / 2
            self._map_pids(self._gpu_reading)
        reading = self._gpu_reading
        usage = self._containers.sample([r.container_id for r in refs])

        owner = self._owner_lookup(refs)
        gpus, held = self._gpus_with_owners(reading, owner)
        deployments = {
            r.deployment_id: self._deployment(r, usage.get(r.container_id), held.get(r.deployment_id),
                                              reading.status.available)
            for r in refs
        }
        self._seq += 1
        return StatsSnapshot(
            time=time.time(),
            seq=self._seq,
            host=host,
            gpus=gpus,
            gpu_status=reading.status,
            deployments=deployments,
            requests=self._requests(),
        )

    def _map_pids(self, reading: GpuReading) -> None:
        pids = {p.pid for procs in reading.processes.values() for p in procs}
        cache = {pid: cid for pid, cid in self._pid_containers.items() if pid in pids}
        for pid in pids - cache.keys():
            cache[pid] = container_id_of_pid(pid)
        self._pid_containers = cache

    @staticmethod
    def _owner_lookup(refs: list[ContainerRef]) -> Callable[[str | None], str | None]:
        by_id = {r.container_id: r.deployment_id for r in refs}

        def owner(container_id: str | None) -> str | None:
            if container_id is None:
                return None
            if container_id in by_id:
                return by_id[container_id]
            # A source may hand out short ids; /proc always has the full one.
            for cid, dep in by_id.items():
                if len(cid) >= 12 and container_id.startswith(cid):
                    return dep
            return None

        return owner

    def _gpus_with_owners(self, reading: GpuReading, owner) -> tuple[list[GpuSample], dict]:
        """GPU samples with processes mapped to deployments, and what each deployment holds.

        Returns:
            ``(gpus, held)`` where ``held[deployment_id] = (vram_bytes, gpu_indices, holds_any)``.
        """
        gpus: list[GpuSample] = []
        held: dict[str, tuple[int, set[int], bool]] = {}
        for gpu in reading.gpus:
            procs = []
            for p in reading.processes.get(gpu.index, []):
                dep = owner(self._pid_containers.get(p.pid))
                procs.append(GpuProcess(pid=p.pid, used_memory_bytes=p.used_memory_bytes, deployment_id=dep))
                if dep is not None:
                    vram, indices, holds = held.get(dep, (0, set(), False))
                    indices.add(gpu.index)
                    # Unknown usage (None) still means a GPU context exists.
                    holds = holds or p.used_memory_bytes is None or p.used_memory_bytes > 0
                    held[dep] = (vram + (p.used_memory_bytes or 0), indices, holds)
            gpus.append(gpu.model_copy(update={"processes": procs}))
        return gpus, held

    @staticmethod
    def _deployment(ref: ContainerRef, usage: ContainerUsage | None, held, gpu_available: bool
                    ) -> DeploymentSample:
        vram, indices, holds = held or (0, set(), False)
        return DeploymentSample(
            deployment_id=ref.deployment_id,
            container_id=ref.container_id,
            cpu_pct=usage.cpu_pct if usage else None,
            mem_used_bytes=usage.mem_used_bytes if usage else None,
            mem_limit_bytes=usage.mem_limit_bytes if usage else None,
            vram_bytes=vram if gpu_available else None,
            gpu_indices=sorted(indices),
            wants_gpu=ref.wants_gpu,
            running_on_cpu=gpu_available and ref.wants_gpu and ref.ready and not holds,
        )

    def _requests(self) -> RequestsSummary:
        rl = self._request_log
        if rl is None:
            return RequestsSummary()
        models = {
            name: ModelRequestStats(
                requests=t.requests,
                errors=t.errors,
                completion_tokens=t.completion_tokens,
                prompt_tokens=t.prompt_tokens,
                avg_ttft_s=(t.ttft_s_sum / t.ttft_count) if t.ttft_count else None,
                ttft_s_sum=t.ttft_s_sum,
                ttft_count=t.ttft_count,
                decode_tokens_per_s=t.decode_tokens_per_s,
                by_status=dict(t.by_status),
            )
            for name, t in rl.totals().items()
        }
        return RequestsSummary(in_flight=rl.in_flight, models=models)

"""Models on demand: load a stopped deployment when a request names it, unload it when idle, make room by memory.

One object per backend (``Lifecycle``), owned by ``DeploymentService``:

- **Settings per deployment** — ``on_demand``, ``idle_ttl_s``, ``pinned``: the labels written at launch,
  overridden by later changes kept in ``<home>/lifecycle.json`` (owner-only, written atomically) under the
  deployment id and its container id; an entry whose container is gone is dropped by the refresh loop.
- **Traffic** — the proxy calls ``begin``/``end`` around every /v1 request (streams end when their last
  byte is sent): one dict update each, no I/O. In-flight counts and last-use times feed the idle
  time-out and the least-recently-used order of eviction.
- **Loads** — ``request_load`` is single flight per deployment: the first caller starts one thread that
  makes room, starts the container and waits for its readiness probe; everyone else waits on the same
  load (``_Load``), bounded by the recipe's start-up time.
- **Room** — before any start (on demand, a click, a launch) the deployment's need is compared with what
  is free now: NVML's free memory per GPU (through the stats sampler) for GPU deployments, the host's
  available memory (capped by ``MODELDECK_HOST_MEMORY_BUDGET``) for CPU ones. Idle, unpinned, on-demand
  deployments holding memory there are stopped, least recently used first, until it fits; when it
  cannot fit even then, nothing is stopped and ``DoesNotFit`` names who holds the memory.
- **Events** — every load, failed load, unload and eviction: the last 500 in memory (``GET /api/lifecycle``),
  the last of each kind per deployment in lifecycle.json, the backend log and /metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.deployment_status import Deployment, LifecycleEvent, MemoryNeed
from backend.engine import ContainerInfo, Engine
from backend.errors import DeploymentNotFound, LaunchFailed, ModelDeckError
from backend.labels import DeploymentLabels, id_filter
from backend.launch_plan import MAX_IDLE_TTL_S, home_id
from backend.readiness import ReadinessProbe
from backend.settings import Settings
from backend.stats.models import StatsSnapshot

if TYPE_CHECKING:
    from backend.registry import DeploymentRegistry

log = logging.getLogger(__name__)

EVENTS_KEPT = 500
LOG_TAIL_LINES = 30
#: How often an on-demand load asks the server whether it is ready: the wait after ready is what a
#: client pays on top of the server's own start, so it is short (a loopback GET).
LOAD_PROBE_INTERVAL_S = 0.02
#: Buckets of ``modeldeck_model_load_seconds``.
LOAD_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Extra wait beyond the start-up time for a client whose load also had to stop others first.
WAIT_SLACK_S = 30.0


class DoesNotFit(ModelDeckError):
    """The deployment needs more memory than is free, even after unloading every deployment that may be."""

    status = 409
    code = "does_not_fit"


class LifecycleUpdate(BaseModel):
    """A change of a deployment's on-demand settings (PATCH /api/deployments/{id}); fields left out stay."""

    model_config = ConfigDict(extra="forbid")

    on_demand: bool | None = Field(None, description="A /v1 request starts it when it is unloaded.")
    idle_ttl_s: float | None = Field(None, ge=0, le=MAX_IDLE_TTL_S, description=(
        "Unload after this many idle seconds; null: the backend's default; 0: never (at most 30 days)."))
    pinned: bool | None = Field(None, description="Never unloaded by ModelDeck.")

    @model_validator(mode="after")
    def _something(self) -> "LifecycleUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of on_demand, idle_ttl_s, pinned")
        for name in ("on_demand", "pinned"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} must be true or false")
        return self


class LifecycleEvents(BaseModel):
    """Lifecycle events after a sequence number, oldest first; ``last_seq`` is the newest there is."""

    events: list[LifecycleEvent]
    last_seq: int


@dataclass(frozen=True)
class Knobs:
    """A deployment's on-demand settings as they apply now."""

    on_demand: bool = True
    idle_ttl_s: float | None = None
    pinned: bool = False


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 * 0.95 else f"{n / 2**20:.0f} MiB"


class _Load:
    """One start of one deployment, shared by every request that waits for it."""

    def __init__(self, dep_id: str, trigger: str, reason: str):
        self.dep_id, self.trigger, self.reason = dep_id, trigger, reason
        self.t0 = time.monotonic()
        self.started = threading.Event()  # the container was started (or the load ended before)
        self.done = threading.Event()
        self.error: ModelDeckError | None = None
        self.started_ok = False  # the container was started (a later failure is the server's, not the start's)
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def finish(self, error: ModelDeckError | None) -> None:
        with self._lock:
            self.error = error
            self.started.set()
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(lambda f=fut: f.done() or f.set_result(None))
            except RuntimeError:
                pass  # that loop is closed: nobody waits any more

    async def wait(self, timeout: float) -> bool:
        """Wait on the event loop (no thread per waiter) until the load ends; whether it ended."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return True
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except asyncio.TimeoutError:
            return False


class _Metrics:
    """The counters and the load-time histogram behind /metrics (read by ``backend.prometheus``)."""

    def __init__(self):
        self.loads: dict[tuple[str, str], int] = {}
        self.unloads: dict[tuple[str, str], int] = {}
        self.failures: dict[str, int] = {}
        self.load_seconds: dict[str, tuple[list[int], float, int]] = {}  # model -> (bucket counts, sum, count)

    def observe_load(self, model: str, seconds: float) -> None:
        counts, total, n = self.load_seconds.get(model, ([0] * len(LOAD_BUCKETS), 0.0, 0))
        counts = [c + (seconds <= b) for c, b in zip(counts, LOAD_BUCKETS)]
        self.load_seconds[model] = (counts, total + seconds, n + 1)


class Lifecycle:
    """Loads, unloads and swaps deployments by traffic and memory; see the module's docstring."""

    def __init__(self, settings: Settings, engine: Engine, registry: DeploymentRegistry, probe: ReadinessProbe, *,
                 startup_timeout_of: Callable[[DeploymentLabels], float],
                 estimate: Callable[[DeploymentLabels], tuple[int | None, str]] = lambda labels: (None, "unknown"),
                 snapshot: Callable[[], StatsSnapshot | None] = lambda: None,
                 host_available: Callable[[], int] = lambda: psutil.virtual_memory().available):
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.probe = probe
        self.startup_timeout_of = startup_timeout_of
        self._estimate = estimate
        #: The stats sampler's latest snapshot (set by the app); None: nothing measured.
        self.snapshot = snapshot
        self._host_available = host_available
        self.path = settings.home / "lifecycle.json"
        self._home = home_id(settings)
        self._lock = threading.RLock()
        self._room_lock = threading.Lock()  # one "make room, then start" at a time
        self._ops: dict[str, threading.Lock] = {}  # per deployment: one start or stop at a time
        self._loads: dict[str, _Load] = {}
        self._unloading: set[str] = set()  # idle deployments being stopped now
        # deployment -> (container id, started_at, why) of its last failed load
        self._failed: dict[str, tuple[str, str | None, str]] = {}
        #: A new number whenever what ``/v1/models`` lists may change (a load begun or ended, a failure, new
        #: settings), taken after the change; from a counter, so two threads never take the same one.
        self._versions = itertools.count(1)
        self.version = 0
        # Written by the proxy on the event loop (one dict update per request), read by the loop's sweep.
        self.in_flight: dict[str, int] = {}
        self._last_request: dict[str, float] = {}  # wall time a request last ended
        self._idle_since: dict[str, float] = {}  # wall time since which nothing happened (load, request end)
        self._events: deque[LifecycleEvent] = deque(maxlen=EVENTS_KEPT)
        self._seq = 0
        self.metrics = _Metrics()
        self._estimates: dict[tuple[str, str], tuple[float, int | None, str]] = {}
        self._stored: dict[str, dict[str, Any]] = self._read()

    # -- lifecycle.json ------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("could not read %s (%s); starting with the launch-time settings", self.path, exc)
            return {}
        deployments = data.get("deployments") if isinstance(data, dict) else None
        return {k: v for k, v in (deployments or {}).items() if isinstance(v, dict)}

    def _write(self) -> None:
        """Write lifecycle.json atomically (a temporary file renamed over it), readable by the owner only."""
        with self._lock:
            self.version = next(self._versions)  # the stored settings changed
            text = json.dumps({"version": 1, "deployments": self._stored}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".lifecycle-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            log.exception("could not write %s", self.path)
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _entry(self, dep_id: str, c: ContainerInfo) -> dict[str, Any]:
        """The stored entry of ``dep_id`` for container ``c`` (a new one when absent or of another container).
        Call with ``_lock`` held."""
        entry = self._stored.get(dep_id)
        if entry is None or entry.get("container_id") != c.id:
            entry = self._stored[dep_id] = {"container_id": c.id}
        return entry

    # -- settings --------------------------------------------------------------------------

    def knobs(self, dep_id: str, c: ContainerInfo) -> Knobs:
        """The settings of ``dep_id``: the launch's labels, then the changes stored for this container."""
        labels = DeploymentLabels.decode(c.labels, dep_id)
        entry = self._stored.get(dep_id)
        if entry is None or entry.get("container_id") != c.id or "knobs" not in entry:
            return Knobs(labels.on_demand, labels.idle_ttl_s, labels.pinned)
        k = entry["knobs"]
        return Knobs(bool(k.get("on_demand", labels.on_demand)), k.get("idle_ttl_s", labels.idle_ttl_s),
                     bool(k.get("pinned", labels.pinned)))

    def effective_ttl(self, knobs: Knobs) -> float | None:
        """Seconds of idleness after which it is unloaded now; None: never."""
        ttl = knobs.idle_ttl_s if knobs.idle_ttl_s is not None else self.settings.idle_ttl_s
        return ttl if ttl and ttl > 0 else None

    def update(self, dep_id: str, change: LifecycleUpdate) -> None:
        """Apply a PATCH: the fields given replace the current ones, kept in lifecycle.json.

        Raises:
            DeploymentNotFound: no container has this id.
        """
        found = self.engine.list(labels=id_filter(dep_id))
        if not found:
            raise DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")
        c = found[0]
        with self._lock:
            now = self.knobs(dep_id, c)
            values = {"on_demand": now.on_demand, "idle_ttl_s": now.idle_ttl_s, "pinned": now.pinned}
            values.update({k: getattr(change, k) for k in change.model_fields_set})
            self._entry(dep_id, c)["knobs"] = values
        self._write()
        log.info("lifecycle of %s set to %s", dep_id, values)

    # -- traffic (the proxy, on the event loop; no I/O) ---------------------------------------

    def begin(self, dep_id: str) -> None:
        """A /v1 request for ``dep_id`` began (while it is in flight, nothing unloads the deployment)."""
        in_flight = self.in_flight
        in_flight[dep_id] = in_flight.get(dep_id, 0) + 1

    def end(self, dep_id: str) -> None:
        """That request's answer was sent in full (a stream: its last byte); idle from now."""
        in_flight = self.in_flight
        in_flight[dep_id] = in_flight.get(dep_id, 1) - 1
        self._last_request[dep_id] = time.time()

    def load_failed(self, dep_id: str, c: ContainerInfo) -> str | None:
        """Why the last on-demand load of this run of ``c`` failed; None when it did not."""
        failed = self._failed.get(dep_id)
        return failed[2] if failed is not None and failed[:2] == (c.id, c.started_at) else None

    def loading(self, dep_id: str) -> bool:
        load = self._loads.get(dep_id)
        return load is not None and not load.done.is_set()

    def _last_used(self, dep_id: str) -> float:
        return max(self._last_request.get(dep_id, 0.0), self._idle_since.get(dep_id, 0.0))

    # -- loading ------------------------------------------------------------------------------

    def request_load(self, dep_id: str, trigger: str, reason: str) -> _Load:
        """The load of ``dep_id`` in progress, or a new one started now (single flight)."""
        with self._lock:
            load = self._loads.get(dep_id)
            if load is not None and not load.done.is_set():
                return load
            load = self._loads[dep_id] = _Load(dep_id, trigger, reason)
            self.version = next(self._versions)
        threading.Thread(target=self._run_load, args=(load,), name=f"load-{dep_id}", daemon=True).start()
        return load

    def wait_timeout(self, dep_id: str) -> float:
        """How long a client may wait for a load of ``dep_id``: its start-up time, plus time to make room."""
        c = self.registry.container(dep_id)
        labels = DeploymentLabels.decode(c.labels if c else {}, dep_id)
        return self.startup_timeout_of(labels) + WAIT_SLACK_S

    def start_click(self, dep_id: str) -> None:
        """A click on Start: the same load as a request's, answered once the container is started.

        Raises:
            DoesNotFit, LaunchFailed, DeploymentNotFound, EngineUnavailable: it could not be started.
        """
        load = self.request_load(dep_id, "click", "Start was clicked")
        load.started.wait(self.wait_timeout(dep_id))
        if load.error is not None and not load.started_ok:
            raise load.error

    def start_with_room(self, dep_id: str, labels: DeploymentLabels, start: Callable[[], None], reason: str) -> None:
        """Make room for ``dep_id`` (see ``make_room``), then ``start`` it, with no other start in between.

        Raises:
            DoesNotFit: see ``make_room``; ``start`` was not called.
        """
        with self._room_lock:
            self.make_room(dep_id, labels)
            log.debug("starting %s (%s)", dep_id, reason)
            start()

    def _ops_lock(self, dep_id: str) -> threading.Lock:
        with self._lock:
            return self._ops.setdefault(dep_id, threading.Lock())

    def _run_load(self, load: _Load) -> None:
        dep_id = load.dep_id
        served = dep_id
        error: ModelDeckError | None = None
        try:
            with self._ops_lock(dep_id):
                # Every engine call before the start is paid by the waiting client: a stopped container as the
                # cache has it is started as it is (a start of one that runs meanwhile changes nothing).
                cached = self.registry.container(dep_id)
                c = cached if cached is not None and cached.state in ("exited", "created") else \
                    self.engine.inspect(cached.id if cached is not None else f"modeldeck-{dep_id}")
                labels = DeploymentLabels.decode(c.labels, dep_id)
                served = labels.served_name
                if c.state == "paused":
                    raise LaunchFailed(f"'{served}' is paused.", hint="Unpause its container (docker unpause).")
                if c.state == "running" and self.registry.is_ready(dep_id):
                    load.finish(None)  # ready already (a click on a running deployment): nothing to record
                    self.version = next(self._versions)
                    return
                if c.state != "running":
                    self.start_with_room(dep_id, labels, lambda: self.engine.start(c.id), load.reason)
            load.started_ok = True
            load.started.set()
            info = self._wait_ready(dep_id, c.id, labels)
            duration = time.monotonic() - load.t0
            self._idle_since[dep_id] = time.time()
            # Recorded before it is routed: whoever sees it ready sees why it loaded.
            self._record("load", load.trigger, dep_id, served, load.reason, duration=duration)
            self.registry.mark_ready(dep_id, info)
        except ModelDeckError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a load must always end its waiters
            log.exception("loading %s failed", dep_id)
            error = ModelDeckError(f"Unexpected error while loading '{served}': {exc}")
        if error is not None and load.started_ok:
            # Shown failed, and not loaded by requests again, until it is started another way (its start
            # time changes): a model that cannot load must not be retried by every request.
            try:
                info = self.engine.inspect(c.id)
                self._failed[dep_id] = (c.id, info.started_at, error.message)
                self.version = next(self._versions)
                self.registry.update(dep_id)
            except ModelDeckError:
                pass
        if error is not None:
            self._record("load_failed", load.trigger, dep_id, served, f"{load.reason}: {error.message}",
                         duration=time.monotonic() - load.t0)
        load.finish(error)
        self.version = next(self._versions)  # no longer "loading" in /v1/models

    def _wait_ready(self, dep_id: str, container_id: str, labels: DeploymentLabels) -> ContainerInfo:
        """Wait until the started container answers its readiness probe; the container as it runs.

        Raises:
            LaunchFailed: it exited, is being restarted after a crash, or did not answer in its start-up
                time (then it is stopped, keeping its logs); the message has the exit code, details the log tail.
        """
        timeout = self.startup_timeout_of(labels)
        deadline = time.monotonic() + timeout
        info = self.engine.inspect(container_id)  # the host port Docker bound at this start
        next_inspect = time.monotonic() + 0.25
        while True:
            if time.monotonic() >= next_inspect:
                info = self.engine.inspect(container_id)
                next_inspect = time.monotonic() + 0.25
                if info.state in ("exited", "dead", "restarting"):
                    why = "was killed: out of memory" if info.oom_killed else f"exited with code {info.exit_code}"
                    # Stopped for good (its restart policy would start it again), kept with its logs.
                    self._stop_quietly(container_id)
                    self.registry.update(dep_id)
                    raise LaunchFailed(f"The model server of '{labels.served_name}' {why} while loading.",
                                       exit_code=info.exit_code,
                                       log_tail=self.engine.logs(container_id, tail=LOG_TAIL_LINES),
                                       hint="Read its log lines; a memory limit that is too small is a usual cause.")
            if self.probe.check(info.host_port, labels).ok:
                return info
            if time.monotonic() > deadline:
                tail = self.engine.logs(container_id, tail=LOG_TAIL_LINES)
                self._stop_quietly(container_id)
                self.registry.update(dep_id)
                raise LaunchFailed(f"The model server of '{labels.served_name}' did not become ready within "
                                   f"{timeout:.0f} s; it was stopped again.", log_tail=tail,
                                   hint="Large models take long to load: raise MODELDECK_READINESS_TIMEOUT_S, "
                                        "or read its logs.")
            time.sleep(LOAD_PROBE_INTERVAL_S)

    def _stop_quietly(self, container_id: str) -> None:
        try:
            self.engine.stop(container_id, timeout=5)
        except ModelDeckError:
            pass

    # -- unloading ------------------------------------------------------------------------------

    def unload(self, dep_id: str, trigger: str, reason: str, for_deployment: str | None = None,
               idle_for: float | None = None) -> bool:
        """Stop ``dep_id``'s container (it stays, so loading again is a start); whether it was stopped.

        A request that began meanwhile keeps it (TTL), except for a click, which always stops.
        """
        with self._ops_lock(dep_id):
            c = self.registry.container(dep_id)
            if c is None or c.state != "running":
                return False
            if idle_for is not None and time.time() - self._last_used(dep_id) < idle_for:
                return False  # used again since it was found idle
            self.registry.mark_unready(c.id)
            if trigger != "click" and self.in_flight.get(dep_id, 0) > 0:
                self.registry.mark_ready(dep_id, c)  # a request arrived after the check: keep serving
                return False
            self.engine.stop(c.id)
            kind = "evict" if trigger == "eviction" else "unload"
            self._record(kind, trigger, dep_id, DeploymentLabels.decode(c.labels, dep_id).served_name, reason,
                         for_deployment=for_deployment)
            self.registry.update(dep_id)
        return True

    # -- memory ---------------------------------------------------------------------------------

    def _gpu_indices(self, labels: DeploymentLabels, snap: StatsSnapshot | None) -> list[int]:
        gpus = list(snap.gpus) if snap is not None else []
        if labels.gpus == ("all",):
            return [g.index for g in gpus]
        out = []
        for ref in labels.gpus:
            for g in gpus:
                if ref == str(g.index) or ref == g.uuid:
                    out.append(g.index)
        return out

    def _measured(self, dep_id: str) -> dict[str, Any] | None:
        entry = self._stored.get(dep_id)
        return entry.get("measured") if entry else None

    def need_of(self, dep_id: str, labels: DeploymentLabels) -> MemoryNeed:
        """What ``dep_id`` counts as needing: GPU memory measured last time it ran, else the fit-check estimate;
        host memory: its mem_limit (the most it may grow to), else measured, else the estimate."""
        where = "gpu" if labels.gpus else "host"
        measured = self._measured(dep_id) or {}
        if where == "host" and labels.mem_limit:
            return MemoryNeed(need_bytes=labels.mem_limit, where="host",
                              basis=f"mem_limit {_gib(labels.mem_limit)} (the most its container may hold)")
        if measured.get(where):
            what = "GPU memory" if where == "gpu" else "resident memory"
            return MemoryNeed(need_bytes=int(measured[where]), where=where, gpus=list(labels.gpus),
                              basis=f"measured: {_gib(measured[where])} of {what} when it last ran "
                                    f"({measured.get('at', '?')})")
        key = (labels.recipe, labels.model)
        cached = self._estimates.get(key)
        if cached is None or time.monotonic() - cached[0] > 60:
            try:
                needed, basis = self._estimate(labels)
            except Exception as exc:  # noqa: BLE001 - an estimate is advice, never a failure
                needed, basis = None, f"no estimate ({exc})"
            cached = self._estimates[key] = (time.monotonic(), needed, basis)
        _, needed, basis = cached
        return MemoryNeed(need_bytes=needed, where=where, gpus=list(labels.gpus),
                          basis=f"estimate: {basis}" if needed else f"unknown: {basis}")

    def _own(self, c: ContainerInfo) -> bool:
        """Launched from this backend's home: another backend on the same engine (another home) manages its
        own deployments, so this one never unloads them and does not count them in its budget."""
        return DeploymentLabels.decode(c.labels).launched_from in ("", self._home)

    def _running(self) -> dict[str, ContainerInfo]:
        return {d: c for d, c in self.registry.containers().items() if c.state == "running" and self._own(c)}

    def make_room(self, dep_id: str, labels: DeploymentLabels) -> None:
        """Make sure ``dep_id`` fits before it starts, stopping idle on-demand deployments (LRU first) if needed.

        Called by ``start_with_room``, under ``_room_lock``. An unknown need (no measurement, no mem_limit,
        no estimate) starts without a check.

        Raises:
            DoesNotFit: it cannot fit even with every deployment that may be unloaded gone; nothing was stopped.
        """
        need = self.need_of(dep_id, labels)
        if not need.need_bytes:
            return
        snap = self.snapshot()
        running = {d: c for d, c in self._running().items() if d != dep_id}
        run_labels = {d: DeploymentLabels.decode(c.labels, d) for d, c in running.items()}
        needs = {d: self.need_of(d, run_labels[d]) for d in running}
        if need.where == "gpu":
            places = self._gpu_free(snap, labels, running, run_labels, needs)
            if places is None:
                return  # NVML does not answer: nothing to compare with
            per_gpu = need.need_bytes / max(1, len(places))
            holds = {d: self._gpu_holds(d, snap, run_labels[d], needs[d]) for d in running}
        else:
            places = {"host": self._host_free(running, run_labels, needs)}
            per_gpu = need.need_bytes
            holds = {d: {"host": needs[d].need_bytes or 0} for d in running if needs[d].where == "host"}
        free = dict(places)
        if all(free[p] >= per_gpu for p in free):
            return
        candidates = []
        for d in sorted(holds, key=self._last_used):
            k = self.knobs(d, running[d])
            if (k.on_demand and not k.pinned and self.in_flight.get(d, 0) == 0 and not self.loading(d)
                    and self.registry.is_ready(d)  # never one that is still launching or loading
                    and any(holds[d].get(p, 0) for p in free)):
                candidates.append(d)
        chosen = []
        for d in candidates:
            if all(free[p] >= per_gpu for p in free):
                break
            if any(free[p] < per_gpu and holds[d].get(p, 0) for p in free):
                chosen.append(d)
                for p in free:
                    free[p] += holds[d].get(p, 0)
        if not all(free[p] >= per_gpu for p in free):
            raise self._does_not_fit(dep_id, labels, need, places, per_gpu, holds, running, snap)
        for d in chosen:
            where = ", ".join(f"GPU {p}" if p != "host" else "host memory" for p in places if holds[d].get(p))
            free_now = min(places[p] for p in places)
            why = (f"made room for '{labels.served_name}' in {where}: needs {_gib(per_gpu)}, "
                   f"{_gib(max(0, free_now))} free")
            self.unload(d, "eviction", why, for_deployment=dep_id)

    def _host_free(self, running, run_labels, needs) -> float:
        """Host memory free for a CPU deployment: available now less what started ones will still take,
        and within the budget less what running CPU deployments count as needing."""
        snap = self.snapshot()
        pending = 0
        held = 0
        for d in running:
            if needs[d].where != "host" or not needs[d].need_bytes:
                continue
            held += needs[d].need_bytes
            sample = snap.deployments.get(d) if snap is not None else None
            rss = sample.mem_used_bytes if sample is not None and sample.mem_used_bytes else 0
            pending += max(0, needs[d].need_bytes - rss)
        free = self._host_available() - pending
        if self.settings.host_memory_budget:
            free = min(free, self.settings.host_memory_budget - held)
        return free

    def _gpu_free(self, snap, labels, running, run_labels, needs) -> dict[int, float] | None:
        if snap is None or not snap.gpu_status.available or not snap.gpus:
            return None
        indices = self._gpu_indices(labels, snap)
        if not indices:
            return None
        by_index = {g.index: g for g in snap.gpus}
        free: dict[int, float] = {}
        for i in indices:
            g = by_index[i]
            if g.memory_total_bytes is None or g.memory_used_bytes is None:
                return None
            free[i] = g.memory_total_bytes - g.memory_used_bytes
        for d in running:
            if needs[d].where != "gpu" or not needs[d].need_bytes:
                continue
            held = self._gpu_holds(d, snap, run_labels[d], needs[d], measured_only=True)
            share = needs[d].need_bytes / max(1, len(self._gpu_indices(run_labels[d], snap)))
            for i in free:
                if i in self._gpu_indices(run_labels[d], snap):
                    free[i] -= max(0, share - held.get(i, 0))  # started, not loaded yet
        return free

    def _gpu_holds(self, dep_id, snap, labels, need: MemoryNeed, measured_only: bool = False) -> dict[int, float]:
        """Per GPU: what ``dep_id`` frees when stopped (measured now, or its need while it is still loading)."""
        held: dict[int, float] = {}
        if snap is not None:
            for g in snap.gpus:
                for p in g.processes:
                    if p.deployment_id == dep_id and p.used_memory_bytes:
                        held[g.index] = held.get(g.index, 0) + p.used_memory_bytes
        if measured_only or not need.need_bytes:
            return held
        indices = self._gpu_indices(labels, snap)
        share = need.need_bytes / max(1, len(indices))
        return {i: max(held.get(i, 0), share) for i in indices}

    def _does_not_fit(self, dep_id, labels, need, places, per_gpu, holds, running, snap) -> DoesNotFit:
        holders = []
        for d, h in sorted(holds.items(), key=lambda kv: -sum(kv[1].values())):
            size = sum(h.get(p, 0) for p in places)
            if not size:
                continue
            k = self.knobs(d, running[d])
            why = ("pinned" if k.pinned else "not on demand" if not k.on_demand
                   else f"{self.in_flight.get(d, 0)} request(s) in flight" if self.in_flight.get(d, 0)
                   else "loading" if self.loading(d) else "idle")
            holders.append({"deployment_id": d, "bytes": int(size), "state": why,
                            "text": f"deployment '{d}' {_gib(size)} ({why})"})
        if need.where == "gpu" and snap is not None:
            for g in snap.gpus:
                if g.index not in places:
                    continue
                for p in g.processes:
                    if p.deployment_id is None and p.used_memory_bytes:
                        holders.append({"pid": p.pid, "gpu": g.index, "bytes": p.used_memory_bytes,
                                        "text": f"process {p.pid} {_gib(p.used_memory_bytes)} on GPU {g.index} "
                                                "(not ModelDeck's)"})
        where = ("host memory" if need.where == "host" else
                 ", ".join(f"GPU {p} ({_gib(max(0, v))} free)" for p, v in places.items()))
        free = min(places.values())
        budget = ""
        if need.where == "host" and self.settings.host_memory_budget:
            budget = f" (MODELDECK_HOST_MEMORY_BUDGET {_gib(self.settings.host_memory_budget)})"
        held_by = "; ".join(h["text"] for h in holders) or "nothing ModelDeck can see"
        return DoesNotFit(
            f"'{labels.served_name}' needs {_gib(per_gpu)} of {where}{budget}, {_gib(max(0, free))} is free, "
            f"and unloading every idle, unpinned on-demand deployment would not make enough room; nothing was "
            f"unloaded. Held by: {held_by}.",
            hint="Stop one of those deployments, unpin one or turn on its 'load on request', lower this "
                 "deployment's mem_limit, or raise MODELDECK_HOST_MEMORY_BUDGET.",
            details={"need_bytes": need.need_bytes, "basis": need.basis, "free_bytes": int(max(0, free)),
                     "holders": holders})

    # -- the refresh loop -------------------------------------------------------------------

    def sweep(self) -> None:
        """One step of the refresh loop: drop settings of gone containers, note measurements, unload the idle."""
        containers = self.registry.containers()
        if not self.registry.engine_up:
            return
        snap = self.snapshot()
        changed = False
        now = time.time()
        with self._lock:
            live = {d: c.id for d, c in containers.items()}
            for d in [d for d, e in self._stored.items() if live.get(d) != e.get("container_id")]:
                del self._stored[d]
                changed = True
            if snap is not None:
                for d, sample in snap.deployments.items():
                    c = containers.get(d)
                    if c is None or c.id != sample.container_id or not self.registry.is_ready(d):
                        continue
                    where = "gpu" if sample.wants_gpu else "host"
                    value = sample.vram_bytes if where == "gpu" else sample.mem_used_bytes
                    if not value:
                        continue
                    m = self._entry(d, c).setdefault("measured", {})
                    # The most seen while it ran this time: what it takes once loaded and used.
                    if value > m.get(where, 0) or m.get("started_at") != c.started_at:
                        if m.get("started_at") != c.started_at or value > m.get(where, 0) * 1.05:
                            changed = True
                        m.update({where: int(value), "started_at": c.started_at, "at": _iso(now)})
        if changed:
            self._write()
        for d, c in containers.items():
            if not (c.state == "running" and self.registry.is_ready(d) and self._own(c)):
                continue
            self._idle_since.setdefault(d, now)
            k = self.knobs(d, c)
            ttl = self.effective_ttl(k)
            if ttl is None or k.pinned or self.in_flight.get(d, 0) or self.loading(d):
                continue
            idle = now - self._last_used(d)
            if idle >= ttl and d not in self._unloading:
                # A thread of its own: a server may take seconds to stop, and the loop must go on.
                self._unloading.add(d)
                threading.Thread(target=self._unload_idle, args=(d, ttl, f"idle for {idle:.0f} s (idle_ttl_s {ttl:g})"),
                                 name=f"unload-{d}", daemon=True).start()

    def _unload_idle(self, dep_id: str, ttl: float, reason: str) -> None:
        try:
            self.unload(dep_id, "ttl", reason, idle_for=ttl)
        except ModelDeckError as exc:
            log.warning("could not unload idle %s: %s", dep_id, exc)
        finally:
            self._unloading.discard(dep_id)

    # -- events -----------------------------------------------------------------------------

    def _record(self, kind: str, trigger: str, dep_id: str, served: str, reason: str, *,
                duration: float | None = None, for_deployment: str | None = None) -> LifecycleEvent:
        with self._lock:
            self._seq += 1
            ev = LifecycleEvent(seq=self._seq, at=_iso(time.time()), deployment_id=dep_id, served_name=served,
                                kind=kind, trigger=trigger, reason=reason,
                                duration_s=round(duration, 3) if duration is not None else None,
                                for_deployment=for_deployment)
            self._events.append(ev)
            m = self.metrics
            if kind == "load":
                m.loads[(served, trigger)] = m.loads.get((served, trigger), 0) + 1
                m.observe_load(served, duration or 0.0)
            elif kind == "load_failed":
                m.failures[served] = m.failures.get(served, 0) + 1
            else:
                why = {"eviction": "eviction", "ttl": "ttl"}.get(trigger, "click")
                m.unloads[(served, why)] = m.unloads.get((served, why), 0) + 1
            c = self.registry.container(dep_id)
            if c is not None:
                self._entry(dep_id, c).setdefault("last", {})[kind] = ev.model_dump()
        log.info("lifecycle: %s %s (%s): %s%s", kind, served, trigger, reason,
                 f" in {duration:.2f} s" if duration is not None and kind == "load" else "")
        self._write()
        return ev

    def record_launch(self, dep_id: str, served: str, duration: float) -> None:
        """A launch reached ready: its first load."""
        self._idle_since[dep_id] = time.time()
        self._record("load", "launch", dep_id, served, "launched", duration=duration)

    def record_stop(self, dep_id: str, served: str) -> None:
        """Stop was clicked."""
        self._record("unload", "click", dep_id, served, "Stop was clicked")

    def events(self, after: int = 0, limit: int = EVENTS_KEPT) -> LifecycleEvents:
        with self._lock:
            picked = [e for e in self._events if e.seq > after][:limit]
            return LifecycleEvents(events=picked, last_seq=self._seq)

    # -- the view ------------------------------------------------------------------------------

    def annotate(self, view: Deployment, c: ContainerInfo | None) -> Deployment:
        """``view`` with its on-demand fields filled in."""
        if c is None:
            return view
        k = self.knobs(view.id, c)
        ttl = self.effective_ttl(k)
        in_flight = self.in_flight.get(view.id, 0)
        last_req = self._last_request.get(view.id)
        unload_at = None
        if ttl is not None and not k.pinned and view.ready and not in_flight and not self.loading(view.id):
            since = self._last_used(view.id) or time.time()
            unload_at = _iso(since + ttl)
        labels = DeploymentLabels.decode(c.labels, view.id)
        last = (self._stored.get(view.id) or {}).get("last", {}) \
            if (self._stored.get(view.id) or {}).get("container_id") == c.id else {}

        def event(kind: str) -> LifecycleEvent | None:
            raw = last.get(kind)
            try:
                return LifecycleEvent.model_validate(raw) if raw else None
            except ValueError:
                return None

        update: dict[str, Any] = {}
        failed = self.load_failed(view.id, c)
        if failed is not None and view.status == "stopped":
            update = {"status": "failed", "message": f"loading it on request failed: {failed}"}
        elif self.loading(view.id) and view.status in ("stopped", "loading"):
            load = self._loads.get(view.id)
            update = {"status": "loading", "message": f"loading on request ({load.reason})" if load else "loading"}
        return view.model_copy(update={
            **update, "on_demand": k.on_demand, "idle_ttl_s": k.idle_ttl_s, "effective_idle_ttl_s": ttl,
            "pinned": k.pinned,
            "loads_on_request": k.on_demand and view.status == "stopped" and failed is None
            and not self.loading(view.id),
            "in_flight": in_flight, "last_request_at": _iso(last_req), "unload_at": unload_at,
            "memory": self.need_of(view.id, labels), "last_load": event("load"), "last_unload": event("unload"),
            "last_eviction": event("evict")})

"""The registry: the backend's cache of Docker's labelled containers, refreshed by one loop and read by everyone else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

from backend.deployment_status import STOP_EXIT_CODES, ContainerFacts, Deployment, derive, launch_in_flight
from backend.engine import ContainerInfo, Engine
from backend.errors import DeploymentConflict, DeploymentNotFound, EngineUnavailable
from backend.labels import SERVED_NAME_LABEL, DeploymentLabels, id_filter
from backend.launches import LaunchProgress
from backend.proxy import Upstream
from backend.readiness import ReadinessProbe
from backend.stats.models import ContainerRef

log = logging.getLogger(__name__)


def _not_found(dep_id: str) -> DeploymentNotFound:
    return DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")


class DeploymentRegistry:
    """What is deployed, as last read from Docker, and which servers answered their readiness probe.

    ``refresh`` is the body of the backend's one refresh loop (``backend/app.py``): it re-reads
    the labelled containers and probes the running ones not known ready. Everything else reads
    the cache without I/O — the list and get routes, ``/v1`` routing (``lookup``,
    ``ready_models``: this is the proxy's ``UpstreamDirectory``) and the stats sampler
    (``container_refs``). An action on one deployment re-reads that one container (``update``)
    so that its answer shows what the action did.

    It also holds the progress of launches (in flight, and failed before a container
    existed, until removed), so that a launch shows in the list from its first event.
    Every field below changes only under ``_lock``.
    """

    def __init__(self, engine: Engine, probe: ReadinessProbe,
                 startup_timeout_s: Callable[[DeploymentLabels], float] = lambda labels: 600.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 native_apis: Callable[[str], frozenset[str]] = lambda recipe: frozenset()):
        self.engine = engine
        #: recipe name -> the APIs its server answers natively (the catalog's ``native_apis``).
        self._native_apis = native_apis
        self._probe = probe
        self._startup_timeout_s = startup_timeout_s
        self._clock = clock
        #: Called (outside the lock) with a container that answered its probe, and with one that
        #: runs but does not answer: the launcher finishes or resumes launches a killed backend left.
        self.on_ready: Callable[[ContainerInfo], None] = lambda c: None
        self.on_unready: Callable[[str, ContainerInfo], None] = lambda dep_id, c: None
        #: The on-demand side (``backend.lifecycle.Lifecycle``), set by the service: the proxy finds it here,
        #: and it fills in each view's on-demand fields. None: nothing loads on request.
        self.lifecycle = None
        #: Other machines' models (``backend.federation.RemoteModels``), set by the app: asked only for a
        #: model no local deployment serves, so a local model's request pays nothing for them.
        self.remote = None
        self._lock = threading.RLock()
        self._filled = threading.Event()  # a first refresh was tried
        self._containers: dict[str, ContainerInfo] = {}  # by deployment id
        self._ready: dict[str, str] = {}  # container id -> started_at when it answered readiness
        self._launches: dict[str, LaunchProgress] = {}
        self._updated_at: dict[str, float] = {}  # deployment id -> when an action last re-read it
        self.engine_up = False
        self._engine_error: EngineUnavailable | None = None
        # Containers running when the engine was last seen before it went away (id -> started_at),
        # and those found stopped when it came back: Docker's shutdown stops running containers.
        self._running_before_outage: dict[str, str | None] | None = None
        self._stopped_in_outage: dict[str, str | None] = {}
        #: Bumped by every change of what the directory answers (see ``version``).
        self._version = 0
        #: served name -> (deployment id, container, its ready Upstream): ``lookup``'s memo.
        self._ready_memo: dict[str, tuple[str, ContainerInfo, Upstream]] = {}

    # -- the one loop -----------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the labelled containers from Docker and probe readiness of the unready running ones.

        Called by the refresh loop (and once by a first reader, see ``ensure_filled``); the
        probes run outside the lock, so readers never wait for a server.
        """
        began = time.monotonic()
        try:
            containers = self.engine.list()
        except EngineUnavailable as exc:
            with self._lock:
                if self._engine_error is None:  # the engine just went away: remember what ran
                    self._running_before_outage = {c.id: c.started_at for c in self._containers.values()
                                                   if c.state in ("running", "restarting")}
                self.engine_up, self._engine_error = False, exc
            self._filled.set()
            return
        by_id = {DeploymentLabels.decode(c.labels, c.name).id: c for c in containers}
        with self._lock:
            self.engine_up, self._engine_error = True, None
            # Stopped while the engine was away: running before it went, found stopped from that same
            # start now; remembered until the container starts again or is gone.
            before, self._running_before_outage = self._running_before_outage or {}, None
            self._stopped_in_outage = {
                c.id: c.started_at for c in containers if c.state in ("exited", "dead")
                and any(c.id in seen and seen[c.id] == c.started_at for seen in (before, self._stopped_in_outage))}
            # An action that re-read a deployment after this refresh began knows better.
            fresher = {d: self._containers[d] for d, at in self._updated_at.items()
                       if at > began and d in self._containers}
            gone = {d for d, at in self._updated_at.items() if at > began and d not in self._containers}
            self._containers = {**{d: c for d, c in by_id.items() if d not in gone}, **fresher}
            self._version += 1
            self._updated_at = {d: at for d, at in self._updated_at.items() if at > began}
            live = {c.id for c in self._containers.values()}
            self._ready = {cid: started for cid, started in self._ready.items() if cid in live}
            for c in self._containers.values():
                if c.state != "running":
                    self._ready.pop(c.id, None)
            to_probe = [(d, c) for d, c in self._containers.items()
                        if c.state == "running" and self._ready.get(c.id) != (c.started_at or "")
                        and not launch_in_flight(self._launches.get(d))]
        self._filled.set()
        for dep_id, c in to_probe:
            if self._probe.check(c.host_port, DeploymentLabels.decode(c.labels, c.name)).ok:
                with self._lock:
                    now = self._containers.get(dep_id)
                    if now is None or now.id != c.id or now.started_at != c.started_at:
                        continue  # restarted or removed while it was probed: probe again next time
                    self._ready[c.id] = c.started_at or ""
                    self._version += 1
                self.on_ready(c)
            else:
                with self._lock:
                    self._ready.pop(c.id, None)
                    self._version += 1
                self.on_unready(dep_id, c)

    def ensure_filled(self) -> None:
        """Refresh once when nothing was ever read: a registry without its loop (a script, a test,
        the first request racing the app's start) answers what Docker has, not an empty list."""
        if not self._filled.is_set():
            self.refresh()

    def update(self, dep_id: str) -> None:
        """Re-read one deployment's container now (after an action on it), keeping its readiness
        only while it runs from the same start.

        Raises:
            EngineUnavailable: the engine does not answer.
        """
        found = self.engine.list(labels=id_filter(dep_id))
        with self._lock:
            self._version += 1
            self._updated_at[dep_id] = time.monotonic()
            if found:
                c = self._containers[dep_id] = found[0]
                if c.state != "running" or self._ready.get(c.id) != (c.started_at or ""):
                    self._ready.pop(c.id, None)
            else:
                old = self._containers.pop(dep_id, None)
                if old is not None:
                    self._ready.pop(old.id, None)

    # -- launches (written by the launcher) ---------------------------------------------

    def claim_launch(self, dep_id: str, config_hash: str, start: Callable[[set[int]], LaunchProgress]
                     ) -> tuple[Deployment, LaunchProgress | None, bool]:
        """Record a new launch of ``dep_id``, or answer the one that exists: atomically.

        ``start`` is called under the lock with the host ports deployments and launches hold
        now; it makes the new launch's progress (or raises, e.g. PortInUse). Returns the view,
        the launch progress (None: an existing deployment, adopted) and whether it is new.

        Raises:
            DeploymentConflict: a launch in flight, or a deployment, has this id with another
                configuration.
        """
        with self._lock:
            running = self._launches.get(dep_id)
            existing = self._containers.get(dep_id)
            if launch_in_flight(running):
                if running.config_hash != config_hash:
                    raise DeploymentConflict(f"'{dep_id}' is being launched with another configuration.",
                                             hint="Wait for that launch, or choose another served name.")
                return self._view(dep_id, existing, running), running, False
            if existing is not None:
                if DeploymentLabels.decode(existing.labels, existing.name).config_hash != config_hash:
                    raise DeploymentConflict(
                        f"A deployment named '{dep_id}' exists with another configuration.",
                        hint="Remove it first, or choose another served name.")
                return self._view(dep_id, existing, running), running, False
            reserved = {c.host_port for c in self._containers.values() if c.host_port}
            reserved |= {lp.host_port for lp in self._launches.values() if launch_in_flight(lp) and lp.host_port}
            lp = start(reserved)
            self._launches[dep_id] = lp
            self._version += 1
            return self._view(dep_id, None, lp), lp, True

    def resume_launch(self, dep_id: str, lp: LaunchProgress) -> bool:
        """Record ``lp`` as the launch of ``dep_id`` unless one is in flight; whether it was recorded."""
        with self._lock:
            if launch_in_flight(self._launches.get(dep_id)):
                return False
            self._launches[dep_id] = lp
            self._version += 1
            return True

    def mark_ready(self, dep_id: str, info: ContainerInfo) -> None:
        """A launch found its server ready: routed from now on, before anyone hears "ready"."""
        with self._lock:
            self._ready[info.id] = info.started_at or ""
            self._containers[dep_id] = info
            self._version += 1
            self._updated_at[dep_id] = time.monotonic()

    def mark_unready(self, container_id: str) -> None:
        """Stop routing to a container an action is about to stop or restart."""
        with self._lock:
            self._ready.pop(container_id, None)
            self._version += 1

    def forget(self, dep_id: str) -> None:
        """Drop a removed deployment and its launch."""
        with self._lock:
            self._launches.pop(dep_id, None)
            self._version += 1
            old = self._containers.pop(dep_id, None)
            if old is not None:
                self._ready.pop(old.id, None)
            self._updated_at[dep_id] = time.monotonic()

    def launch_progress(self, dep_id: str) -> LaunchProgress | None:
        with self._lock:
            return self._launches.get(dep_id)

    def container(self, dep_id: str) -> ContainerInfo | None:
        """The deployment's container as last read (no I/O)."""
        with self._lock:
            return self._containers.get(dep_id)

    def containers(self) -> dict[str, ContainerInfo]:
        """Every deployment's container as last read, by deployment id (no I/O)."""
        with self._lock:
            return dict(self._containers)

    def is_ready(self, dep_id: str) -> bool:
        with self._lock:
            c = self._containers.get(dep_id)
            return c is not None and self._is_ready(c)

    def host_ports(self) -> set[int]:
        """Host ports deployments and launches in flight hold now."""
        with self._lock:
            ports = {c.host_port for c in self._containers.values() if c.host_port}
            return ports | {lp.host_port for lp in self._launches.values() if launch_in_flight(lp) and lp.host_port}

    # -- reading ------------------------------------------------------------------------

    def _is_ready(self, c: ContainerInfo) -> bool:
        """Running, and answered its readiness probe since it last started (call with ``_lock`` held)."""
        return c.state == "running" and self._ready.get(c.id) == (c.started_at or "")

    def _view(self, dep_id: str, c: ContainerInfo | None, lp: LaunchProgress | None) -> Deployment:
        """Call with ``_lock`` held."""
        if c is None:
            return derive(dep_id, None, lp, self._clock())
        facts = ContainerFacts(c, ready=self._is_ready(c), stopped_in_outage=c.id in self._stopped_in_outage,
                               startup_timeout_s=self._startup_timeout_s(DeploymentLabels.decode(c.labels, c.name)))
        return derive(dep_id, facts, lp, self._clock())

    def list(self) -> list[Deployment]:
        """Every deployment: labelled containers plus launches that have no container yet.

        While the engine does not answer, this is the last state seen, each deployment marked
        ``stale`` with the engine's error: a list to read, not an error alone.

        Raises:
            EngineUnavailable: the engine does not answer and no state was ever seen (there is
                nothing to show but the error).
        """
        self.ensure_filled()
        with self._lock:
            # Any call that found the engine gone (the engine status route, a launch) counts
            # at once; the loop's next round records it too.
            error = self._engine_error or self.engine.last_error
            if error is not None and not self._containers and not self._launches:
                raise error
            ids = sorted(set(self._containers) | set(self._launches))
            views = [self._view(i, self._containers.get(i), self._launches.get(i)) for i in ids]
            containers = [self._containers.get(i) for i in ids]
        if self.lifecycle is not None:  # outside the lock: the lifecycle takes its own
            views = [self.lifecycle.annotate(v, c) for v, c in zip(views, containers)]
        if error is not None:
            why = f"{error.message} {error.hint or ''}".strip()
            views = [v.model_copy(update={"stale": True, "engine_error": why}) for v in views]
        return views

    def get(self, dep_id: str) -> Deployment:
        """One deployment by id (from the cache, like ``list``).

        Raises:
            DeploymentNotFound: no labelled container and no launch has this id.
            EngineUnavailable: see ``list``.
        """
        for d in self.list():
            if d.id == dep_id:
                return d
        raise _not_found(dep_id)

    def container_refs(self) -> list[ContainerRef]:
        """The running containers, for the stats sampler."""
        with self._lock:
            return [ContainerRef(container_id=c.id, deployment_id=d, ready=self._is_ready(c),
                                 wants_gpu=bool(DeploymentLabels.decode(c.labels, d).gpus))
                    for d, c in self._containers.items() if c.state == "running"]

    # UpstreamDirectory (backend.proxy): answered from the cache, no I/O on the request path.

    def _upstream(self, dep_id: str, c: ContainerInfo) -> Upstream:
        """Call with ``_lock`` held."""
        labels = DeploymentLabels.decode(c.labels, dep_id)
        ready = self._is_ready(c)
        lp = self._launches.get(dep_id)
        state = "ready" if ready else (lp.last.phase if launch_in_flight(lp) and lp.last else c.state)
        on_demand = False
        if not ready and self.lifecycle is not None and not launch_in_flight(lp):
            # Only for a model that is not ready: the hot path (a ready model) pays nothing.
            on_demand = self.lifecycle.knobs(dep_id, c).on_demand and (
                c.state == "running" or self.lifecycle.loading(dep_id)
                or (self._stopped(c) and self.lifecycle.load_failed(dep_id, c) is None))
        return Upstream(deployment_id=dep_id, served_name=labels.served_name,
                        base_url=f"http://127.0.0.1:{c.host_port}{labels.openai_base}", ready=ready, state=state,
                        native_apis=self._native_apis(labels.recipe), recipe=labels.recipe, loads_on_request=on_demand)

    def lookup(self, model: str) -> Upstream | None:
        # Every /v1 request asks: a ready model is answered from a memo that is checked against the cache (the
        # same container object, still ready from the same start) instead of a scan that decodes labels.
        hit = self._ready_memo.get(model)
        if hit is not None:
            dep_id, c, upstream = hit
            if self._containers.get(dep_id) is c and self._is_ready(c):
                return upstream
        with self._lock:
            for dep_id, c in self._containers.items():
                if c.labels.get(SERVED_NAME_LABEL) == model:
                    upstream = self._upstream(dep_id, c)
                    if upstream.ready:
                        if len(self._ready_memo) > 1024:  # names of models long gone
                            self._ready_memo.clear()
                        self._ready_memo[model] = (dep_id, c, upstream)
                    return upstream
        return self.remote.lookup(model) if self.remote is not None else None

    @property
    def version(self) -> tuple[int, int, int]:
        """Changes whenever ``listed_models`` may answer differently: this cache's changes, the on-demand
        side's (loads begun and ended, settings), the nodes' listings. The data plane keeps ``/v1/models``'s
        bytes while it stays the same."""
        lifecycle, remote = self.lifecycle, self.remote
        return (self._version, getattr(lifecycle, "version", 0) if lifecycle is not None else 0,
                getattr(remote, "version", 0) if remote is not None else 0)

    def ready_models(self) -> list[Upstream]:
        with self._lock:
            local = [u for u in (self._upstream(d, c) for d, c in self._containers.items()) if u.ready]
            if self.remote is None:
                return local
            # A local model shadows a node's of the same name (``lookup`` finds it first).
            names = {c.labels.get(SERVED_NAME_LABEL) for c in self._containers.values()}
        return local + [u for u in self.remote.ready_models() if u.served_name not in names]

    def listed_models(self) -> list[tuple[Upstream, str]]:
        """What ``/v1/models`` lists: ready models and on-demand ones a request would load, with their state
        ("ready", "loading", "unloaded")."""
        out = []
        with self._lock:
            for d, c in self._containers.items():
                u = self._upstream(d, c)
                if u.ready:
                    out.append((u, "ready"))
                elif u.loads_on_request:
                    loading = c.state == "running" or self.lifecycle.loading(d)
                    out.append((u, "loading" if loading else "unloaded"))
        if self.remote is None:
            return out
        with self._lock:  # a local model shadows a node's of the same name: requests for it stay here
            names = {c.labels.get(SERVED_NAME_LABEL) for c in self._containers.values()}
        return out + [(u, s) for u, s in self.remote.listed_models() if u.served_name not in names]

    def _stopped(self, c: ContainerInfo) -> bool:
        """Stopped, not failed (as ``deployment_status`` says "stopped"): a request may start it again.
        Call with ``_lock`` held."""
        return c.state in ("exited", "dead") and (
            c.id in self._stopped_in_outage or (c.exit_code in STOP_EXIT_CODES and not c.oom_killed))

"""Deployments: the service the routes call, composed of the registry (what is deployed) and the launcher.

The parts, and who calls whom:

- ``backend.deployment_status.derive`` — pure: a container's facts and its launch in, the
  ``Deployment`` the API shows out;
- ``backend.registry.DeploymentRegistry`` — the cache of Docker's labelled containers,
  refreshed by the app's one loop; list, get, ``/v1`` routing and the stats read it;
- ``backend.launcher.Launcher`` — launch, image, readiness (``backend.readiness``, the one
  probe the registry uses too), interrupted launches, log following;
- this module — wires them together and runs the actions on one deployment (stop, start,
  restart, remove, logs, spec), each answering what the action did.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from backend.catalog import Catalog
from backend.deployment_status import Deployment, Status
from backend.engine import ContainerInfo, Engine
from backend.errors import DeploymentConflict, DeploymentNotFound, EngineUnavailable
from backend.fitcheck import estimate_memory
from backend.labels import DeploymentLabels, id_filter
from backend.launch_plan import LaunchRequest
from backend.launcher import Launcher, LocalFallback
from backend.launches import LaunchProgress
from backend.lifecycle import Lifecycle, LifecycleEvents, LifecycleUpdate
from backend.readiness import ReadinessProbe
from backend.registry import DeploymentRegistry
from backend.settings import Settings
from backend.spec import ContainerSpec


def _not_found(dep_id: str) -> DeploymentNotFound:
    return DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")


class DeploymentService:
    """Launches recipes and answers what is deployed, from Docker's labelled containers.

    Nothing about a deployment is kept only here: Docker holds the containers and their
    labels; ``registry`` caches them (refreshed by ``refresh``, the app's loop), ``launcher``
    brings new ones to ready.
    """

    def __init__(self, engine: Engine, catalog: Catalog, settings: Settings):
        self.engine = engine
        self.catalog = catalog
        self.settings = settings
        self.probe = ReadinessProbe()
        self.registry = DeploymentRegistry(engine, self.probe,
                                           startup_timeout_s=lambda labels: self.launcher.startup_timeout_of(labels),
                                           native_apis=catalog.native_apis)
        self.launcher = Launcher(engine, catalog, settings, self.registry, self.probe)
        self.registry.on_ready = self.launcher.finish_interrupted
        self.registry.on_unready = self.launcher.resume_interrupted
        self.lifecycle = Lifecycle(settings, engine, self.registry, self.probe,
                                   startup_timeout_of=self.launcher.startup_timeout_of, estimate=self._estimate)
        self.registry.lifecycle = self.lifecycle
        self.launcher.start_with_room = self.lifecycle.start_with_room
        self.launcher.on_launched = self.lifecycle.record_launch
        self.launcher.on_adopt = self._adopted

    def _estimate(self, labels: DeploymentLabels) -> tuple[int | None, str]:
        """The fit check's estimate of what ``labels``' model needs (files on disk only)."""
        recipe = self.catalog.recipes.get(labels.recipe)
        if recipe is None:
            return None, f"its recipe '{labels.recipe}' is not in the catalog"
        estimate = estimate_memory(recipe, labels.model, self.settings)
        return estimate.bytes_needed, estimate.basis

    def _adopted(self, dep_id: str, req: LaunchRequest) -> None:
        """A launch of an existing configuration: its on-demand values apply like a PATCH."""
        try:
            self.lifecycle.update(dep_id, LifecycleUpdate(on_demand=req.on_demand, idle_ttl_s=req.idle_ttl_s,
                                                          pinned=req.pinned))
        except DeploymentNotFound:
            pass  # its launch has not created the container yet: the labels will say it

    def close(self) -> None:
        self.probe.close()

    @property
    def machine_gpus(self) -> Callable[[], int | None]:
        """How many GPUs the machine has (the stats sampler's NVML view; None: unknown). Set by the app."""
        return self.launcher.machine_gpus

    @machine_gpus.setter
    def machine_gpus(self, count: Callable[[], int | None]) -> None:
        self.launcher.machine_gpus = count

    @property
    def engine_up(self) -> bool:
        return self.registry.engine_up

    @engine_up.setter
    def engine_up(self, up: bool) -> None:
        self.registry.engine_up = up

    # -- reading (the registry's cache) ---------------------------------------------------

    def refresh(self) -> None:
        """The refresh loop's step: re-read Docker, probe the servers not known ready, unload the idle."""
        self.registry.refresh()
        self.lifecycle.sweep()

    def list(self) -> list[Deployment]:
        """See ``DeploymentRegistry.list``."""
        return self.registry.list()

    def get(self, dep_id: str) -> Deployment:
        """See ``DeploymentRegistry.get``; an id the cache lacks is looked up in Docker once.

        A container made a moment ago outside this backend (the plan's ``docker run`` line,
        another backend) is found at once rather than at the next refresh.
        """
        try:
            return self.registry.get(dep_id)
        except DeploymentNotFound:
            try:
                self.registry.update(dep_id)
            except EngineUnavailable:
                raise _not_found(dep_id) from None
            return self.registry.get(dep_id)

    def launch_progress(self, dep_id: str) -> LaunchProgress | None:
        return self.registry.launch_progress(dep_id)

    # -- launching --------------------------------------------------------------------------

    def launch(self, req: LaunchRequest) -> tuple[Deployment, LaunchProgress | None]:
        """See ``Launcher.launch``."""
        return self.launcher.launch(req)

    def plan_launch(self, req: LaunchRequest) -> tuple[ContainerSpec, list[str]]:
        """See ``Launcher.plan_launch``."""
        return self.launcher.plan_launch(req)

    # -- actions ------------------------------------------------------------------------------

    def _container_of(self, dep_id: str) -> ContainerInfo:
        """The deployment's container as Docker has it now (an action must not act on a stale id).

        Raises:
            DeploymentNotFound: no labelled container has this id.
        """
        found = self.engine.list(labels=id_filter(dep_id))
        if not found:
            raise _not_found(dep_id)
        return found[0]

    def _after(self, dep_id: str) -> Deployment:
        """The deployment as the action left it: its container read again, not the last refresh."""
        self.registry.update(dep_id)
        return self.registry.get(dep_id)

    def stop(self, dep_id: str) -> Deployment:
        c = self._container_of(dep_id)
        self.registry.mark_unready(c.id)
        self.engine.stop(c.id)
        if c.state == "running":  # recorded before the answer, so the answer shows it
            self.lifecycle.record_stop(dep_id, DeploymentLabels.decode(c.labels, dep_id).served_name)
        return self._after(dep_id)

    def start(self, dep_id: str) -> Deployment:
        """Start a stopped deployment, making room first like an on-demand load (the same single-flight load).

        Raises:
            DoesNotFit: it does not fit even after unloading what may be unloaded (nothing was).
        """
        self._container_of(dep_id)  # 404 first
        self.lifecycle.start_click(dep_id)
        return self._after(dep_id)

    def update_lifecycle(self, dep_id: str, change: LifecycleUpdate) -> Deployment:
        """PATCH: change on_demand, idle_ttl_s or pinned (kept in lifecycle.json)."""
        self.lifecycle.update(dep_id, change)
        return self._after(dep_id)

    def lifecycle_events(self, after: int, limit: int) -> LifecycleEvents:
        return self.lifecycle.events(after, limit)

    def restart(self, dep_id: str) -> Deployment:
        c = self._container_of(dep_id)
        self.registry.mark_unready(c.id)
        self.engine.restart(c.id)
        return self._after(dep_id)

    def remove(self, dep_id: str) -> None:
        """Remove the container (cache volumes stay) and forget a failed launch of that id.

        Raises:
            DeploymentConflict: its launch is still preparing the image (nothing to remove yet).
            DeploymentNotFound: no container and no launch has this id.
        """
        lp = self.registry.launch_progress(dep_id)
        if lp is not None and not lp.done and lp.container_id is None:
            raise DeploymentConflict(f"'{dep_id}' is still being prepared.",
                                     hint="Wait until its image is ready, then remove it.")
        found = self.engine.list(labels=id_filter(dep_id))
        if not found and lp is None:
            raise _not_found(dep_id)
        for c in found:
            self.registry.mark_unready(c.id)
            self.engine.remove(c.id)
        self.registry.forget(dep_id)

    def logs(self, dep_id: str, tail: int = 200) -> list[str]:
        return self.engine.logs(self._container_of(dep_id).id, tail=tail)

    async def follow_logs(self, dep_id: str, tail: int = 200) -> AsyncIterator[str]:
        """The deployment's last ``tail`` log lines, then each new one; see ``Launcher.follow_logs``.

        Raises:
            DeploymentNotFound: no labelled container has this id (raised now, not while iterating).
        """
        container = await asyncio.to_thread(self._container_of, dep_id)
        return await self.launcher.follow_logs(container.id, tail)

    def spec(self, dep_id: str) -> ContainerSpec:
        return self.engine.spec_of(self._container_of(dep_id).id)


__all__ = ["Deployment", "DeploymentService", "LaunchRequest", "LocalFallback", "Status"]

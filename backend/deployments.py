"""Deployments: launching recipes as containers, and the list of deployments derived from Docker at any moment."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import queue
from datetime import datetime, timezone
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal

import httpx
from pydantic import BaseModel

from backend.base_image import missing_base_hint, pick_base_image
from backend.catalog import Catalog, Recipe
from backend.engine import GPU_RUNTIME_HINT, ContainerInfo, Engine, ProgressEvent
from backend.errors import (DeploymentConflict, DeploymentNotFound, EngineUnavailable, GpuRuntimeMissing,
                            ImageUnavailable, InvalidLaunch, LaunchFailed, ModelDeckError, PortInUse)
from backend.launch_plan import LaunchRequest, build_tag, choose_gpus, fill_placeholders, home_id, plan
from backend.launches import LaunchProgress
from backend.local_images import LocalBuild, build_events, load_local_build, source_cache_dir
from backend.netutil import port_free
from backend.proxy import Upstream
from backend.secrets_store import stored_values
from backend.settings import Settings
from backend.spec import LABEL_PREFIX, ContainerSpec
from backend.stats.models import ContainerRef

log = logging.getLogger(__name__)

Status = Literal["pulling", "building", "creating", "starting", "loading", "ready", "restarting",
                 "stopped", "failed", "created", "paused", "unknown"]
#: Exit codes of a server that was asked to stop (SIGTERM, SIGINT, SIGKILL after the grace period).
STOP_EXIT_CODES = frozenset({0, 130, 137, 143})
LOG_TAIL_LINES = 30
#: How long a registry may stay silent before a pull counts as failed (and a local build, if any, stands in).
PULL_ANSWER_TIMEOUT_S = 20.0


@dataclasses.dataclass(frozen=True)
class LocalFallback:
    """A recipe's image built here from source: chosen, or standing by for a pull that fails."""

    build: LocalBuild
    cpu_only_gpus: bool  # GPUs were asked for: the CPU-only build must not stand in silently
    replan: Callable[[str], ContainerSpec] | None = None  # the spec to create with another image


class Deployment(BaseModel):
    """A model deployment as the API shows it: derived from its container, plus launch progress."""

    id: str
    name: str
    container_id: str | None
    recipe: str
    model: str
    served_name: str
    image: str
    status: Status
    ready: bool
    state: str
    message: str = ""
    host_port: int | None = None
    endpoint: str | None = None
    gpus: list[str] = []
    exit_code: int | None = None
    oom_killed: bool = False
    restart_count: int = 0
    created: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    config_hash: str = ""
    #: True while the engine does not answer: this is the last state seen, not the present one.
    stale: bool = False
    #: Why the engine could not be asked (with what to do), while ``stale``.
    engine_error: str | None = None


def _free_port(reserved: set[int]) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in reserved:
            return port
    raise PortInUse("No free port found on 127.0.0.1.", hint="Give a port explicitly.")


class DeploymentService:
    """Launches recipes and answers what is deployed, from Docker's labelled containers.

    Nothing about a deployment is kept only here: Docker holds the containers and their
    labels; this object caches the last list (refreshed by ``refresh``), knows which
    containers answered their readiness probe, and holds the progress of launches in
    flight (and of launches that failed before a container existed, until removed).
    """

    def __init__(self, engine: Engine, catalog: Catalog, settings: Settings):
        self.engine = engine
        self.catalog = catalog
        self.settings = settings
        self._lock = threading.RLock()
        self._launches: dict[str, LaunchProgress] = {}
        self._containers: dict[str, ContainerInfo] = {}  # by deployment id
        self._ready: dict[str, str] = {}  # container id -> started_at when it answered readiness
        self._stopping: set[str] = set()
        self._resumed: set[tuple[str, str]] = set()  # (container id, started_at) whose launch was resumed
        #: How many GPUs the machine has (the stats sampler's NVML view; None: unknown). Set by the app.
        self.machine_gpus: Callable[[], int | None] = lambda: None
        self.engine_up = False
        self._engine_error: EngineUnavailable | None = None
        # Containers running when the engine was last seen before it went away (id -> started_at),
        # and those found stopped when it came back: Docker's shutdown stops running containers.
        self._running_before_outage: dict[str, str | None] | None = None
        self._stopped_in_outage: dict[str, str | None] = {}
        self._probe = httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0), trust_env=False)

    def close(self) -> None:
        self._probe.close()

    # -- the list -------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the labelled containers from Docker and probe readiness of the unready ones."""
        try:
            containers = self.engine.list()
        except EngineUnavailable as exc:
            with self._lock:
                if self._engine_error is None:  # the engine just went away: remember what ran
                    self._running_before_outage = {c.id: c.started_at for c in self._containers.values()
                                                   if c.state in ("running", "restarting")}
                self.engine_up, self._engine_error = False, exc
            return
        by_id = {c.labels.get(f"{LABEL_PREFIX}id", c.name): c for c in containers}
        with self._lock:
            self.engine_up, self._engine_error = True, None
            # Stopped while the engine was away: running before it went, found stopped from that same
            # start now; remembered until the container starts again or is gone.
            before, self._running_before_outage = self._running_before_outage or {}, None
            self._stopped_in_outage = {
                c.id: c.started_at for c in containers if c.state in ("exited", "dead")
                and any(c.id in seen and seen[c.id] == c.started_at for seen in (before, self._stopped_in_outage))}
            self._containers = by_id
            launching = {d for d, lp in self._launches.items() if not lp.done}
        for dep_id, c in by_id.items():
            if c.state != "running":
                self._ready.pop(c.id, None)
            elif self._ready.get(c.id) != c.started_at and dep_id not in launching:
                if self._answers(c):
                    self._ready[c.id] = c.started_at or ""
                    self._finish_interrupted_launch(c)
                else:
                    self._ready.pop(c.id, None)
                    self._resume_interrupted_launch(dep_id, c)

    def _finish_interrupted_launch(self, c: ContainerInfo) -> None:
        """Turn on restarts for a server that became ready after its launch thread died.

        A launch switches the restart policy from "no" to on-failure once the server is
        ready; a backend killed in between leaves "no", so the next backend that finds the
        server ready does that last step.
        """
        if c.restart_policy not in ("", "no"):
            return
        try:
            self.engine.enable_restarts(c.id, ContainerSpec.restart_max)
            log.info("completed the interrupted launch of %s: restarts on failure enabled", c.name)
        except ModelDeckError as exc:
            log.warning("could not enable restarts for %s: %s", c.name, exc)

    def _launch_abandoned(self, c: ContainerInfo) -> bool:
        """A server whose launch thread died (backend killed) and that never became ready in time.

        Its restart policy is still the launch-time "no" and no launch of it runs here; once
        it has run longer than its recipe's start-up timeout, nobody will ever declare it
        ready, so it is shown as failed instead of "loading" forever.
        """
        if c.restart_policy not in ("", "no") or not c.started_at:
            return False
        dep_id = c.labels.get(f"{LABEL_PREFIX}id", c.name)
        lp = self._launches.get(dep_id)
        if lp is not None and not lp.done:
            return False
        recipe = self.catalog.recipes.get(c.labels.get(f"{LABEL_PREFIX}recipe", ""))
        timeout = self.settings.readiness_timeout_s or (recipe.server.startup_timeout if recipe else 600.0)
        try:
            started = datetime.fromisoformat(c.started_at[:19]).replace(tzinfo=timezone.utc)
        except ValueError:
            return False
        return (datetime.now(timezone.utc) - started).total_seconds() > timeout

    def _is_ready(self, c: ContainerInfo) -> bool:
        """Running, and answered its readiness probe since it last started (a restart means: probe again)."""
        return c.state == "running" and self._ready.get(c.id) == (c.started_at or "")

    def _answers(self, c: ContainerInfo, *, model_check: bool = True) -> bool:
        """Whether the server answers its readiness paths, and (``model_check``) has its model."""
        if not c.host_port:
            return False
        paths = [c.labels.get(f"{LABEL_PREFIX}health_path") or "/health",
                 c.labels.get(f"{LABEL_PREFIX}models_path") or None]
        try:
            for path in filter(None, paths):
                if self._probe.get(f"http://127.0.0.1:{c.host_port}{path}").status_code != 200:
                    return False
        except httpx.HTTPError:
            return False
        check = _model_check_of(c.labels)
        return not model_check or check is None or self._model_answers(c.host_port, check)[0]

    def _model_answers(self, host_port: int, check: dict) -> tuple[bool, str]:
        """Ask the server whether it has the model (the recipe's ``readiness.model_check``); (yes, why not)."""
        try:
            r = self._probe.request(check["method"], f"http://127.0.0.1:{host_port}{check['path']}",
                                    json=check.get("body") if check["method"] != "GET" else None)
        except httpx.HTTPError as exc:
            return False, f"{check['method']} {check['path']} did not answer ({type(exc).__name__})"
        if r.status_code == 200:
            return True, ""
        return False, f"{check['method']} {check['path']} answered {r.status_code}: {r.text[:200]}"

    def _resume_interrupted_launch(self, dep_id: str, c: ContainerInfo) -> None:
        """Finish a launch whose backend died while preparing the model (Ollama's pull).

        The server answers its health path but not its model check, its restart policy is
        still the launch-time "no", and no launch of it runs here: the calls after start-up
        (``post_start``) are made again — Ollama resumes a pull from the parts it has — and
        the deployment becomes ready only when the model check answers, or is shown failed.
        """
        recipe = self.catalog.recipes.get(c.labels.get(f"{LABEL_PREFIX}recipe", ""))
        key = (c.id, c.started_at or "")
        if (recipe is None or not recipe.post_start or _model_check_of(c.labels) is None
                or c.restart_policy not in ("", "no") or key in self._resumed
                # Another backend on this engine (another home) may be preparing it right now.
                or c.labels.get(f"{LABEL_PREFIX}launched_from") != home_id(self.settings)
                or not self._answers(c, model_check=False)):
            return
        try:
            spec = self.engine.spec_of(c.id)
        except ModelDeckError:
            return
        labels = c.labels
        lp = LaunchProgress(dep_id, labels.get(f"{LABEL_PREFIX}config_hash", ""), recipe=recipe.name,
                            model=labels.get(f"{LABEL_PREFIX}model", ""), image=c.image,
                            served_name=labels.get(f"{LABEL_PREFIX}served_name", dep_id), host_port=c.host_port)
        lp.container_id = c.id
        with self._lock:
            running = self._launches.get(dep_id)
            if running is not None and not running.done:
                return
            self._resumed.add(key)
            self._launches[dep_id] = lp
        log.info("resuming the interrupted launch of %s (preparing its model again)", c.name)
        lp.emit("loading", "The launch was interrupted while the model was being prepared; preparing it again")
        threading.Thread(target=self._run_launch, args=(recipe, spec, lp), kwargs={"resume": True},
                         name=f"resume-{dep_id}", daemon=True).start()

    def _view(self, dep_id: str, c: ContainerInfo | None, lp: LaunchProgress | None) -> Deployment:
        if c is None:  # a launch that has not created its container yet, or failed before
            last = lp.last if lp else None
            return Deployment(
                id=dep_id, name=f"modeldeck-{dep_id}", container_id=None, recipe=lp.recipe if lp else "",
                model=lp.model if lp else "", served_name=lp.served_name if lp else dep_id, image=lp.image if lp else "",
                status=(last.phase if last and last.phase != "queued" else "creating"), ready=False, state="none",
                message=last.message if last else "", config_hash=lp.config_hash if lp else "")
        ready = self._is_ready(c)
        if lp is not None and not lp.done:
            status, message = lp.last.phase if lp.last else "creating", lp.last.message if lp.last else ""
            if status == "queued":
                status = "creating"
        elif ready:
            status, message = "ready", "answering"
        elif c.state == "running" and self._launch_abandoned(c):
            status, message = "failed", ("never answered within its start-up time after the launch was "
                                         "interrupted; read its logs, then remove it and launch again")
        elif c.state == "running":
            status, message = "loading", "running; waiting for the server to answer"
        elif c.state == "restarting":
            status, message = "restarting", f"crashed (exit code {c.exit_code}); Docker is restarting it"
        elif c.state in ("exited", "dead"):
            if c.oom_killed:
                status, message = "failed", "killed: out of memory"
            elif c.id in self._stopped_in_outage:
                status, message = "stopped", (f"stopped while the Docker engine was down (exit code {c.exit_code}): "
                                              "the engine's shutdown stops running containers; start it again")
            elif c.exit_code in STOP_EXIT_CODES:
                # 137 is also what `docker kill` leaves: say the code, so a kill is not hidden.
                status, message = "stopped", "stopped" if not c.exit_code else f"stopped (exit code {c.exit_code})"
            else:
                status, message = "failed", f"exited with code {c.exit_code}"
            if lp is not None and lp.last and lp.last.phase == "failed":
                status, message = "failed", lp.last.message
        elif c.state == "created":
            # No launch of this process is creating it (that case is handled above): the
            # launch that created it failed or was interrupted (the backend was killed)
            # before the container started. It never ran, so it has no logs to keep.
            status, message = "failed", "the launch was interrupted before the server started; remove it " \
                                        "and launch again"
            if lp is not None and lp.last and lp.last.phase == "failed":
                message = lp.last.message
        elif c.state == "paused":
            status, message = "paused", "paused"
        else:
            status, message = "unknown", c.state
        labels = c.labels
        base = labels.get(f"{LABEL_PREFIX}openai_base", "/v1")
        return Deployment(
            id=dep_id, name=c.name, container_id=c.id, recipe=labels.get(f"{LABEL_PREFIX}recipe", ""),
            model=labels.get(f"{LABEL_PREFIX}model", ""), served_name=labels.get(f"{LABEL_PREFIX}served_name", dep_id),
            image=c.image, status=status, ready=ready, state=c.state, message=message, host_port=c.host_port,
            endpoint=f"http://127.0.0.1:{c.host_port}{base}" if c.host_port else None,
            gpus=[g for g in labels.get(f"{LABEL_PREFIX}gpus", "").split(",") if g],
            exit_code=c.exit_code, oom_killed=c.oom_killed, restart_count=c.restart_count, created=c.created,
            started_at=c.started_at, finished_at=c.finished_at,
            config_hash=labels.get(f"{LABEL_PREFIX}config_hash", ""))

    def list(self, refresh: bool = True) -> list[Deployment]:
        """Every deployment: labelled containers plus launches that have no container yet.

        While the engine does not answer, this is the last state seen, each deployment marked
        ``stale`` with the engine's error: a list to read, not an error alone.

        Raises:
            EngineUnavailable: when ``refresh``, the engine does not answer and no state was ever
                seen (there is nothing to show but the error).
        """
        if refresh:
            self.refresh()
        with self._lock:
            containers = dict(self._containers)
            launches = dict(self._launches)
            error = self._engine_error
        if refresh and error is not None and not containers and not launches:
            raise error
        ids = sorted(set(containers) | set(launches))
        views = [self._view(i, containers.get(i), launches.get(i)) for i in ids]
        if error is not None:
            why = f"{error.message} {error.hint or ''}".strip()
            views = [v.model_copy(update={"stale": True, "engine_error": why}) for v in views]
        return views

    def get(self, dep_id: str, refresh: bool = True) -> Deployment:
        """One deployment by id.

        Raises:
            DeploymentNotFound: no labelled container and no launch has this id.
        """
        for d in self.list(refresh=refresh):
            if d.id == dep_id:
                return d
        raise DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")

    def launch_progress(self, dep_id: str) -> LaunchProgress | None:
        with self._lock:
            return self._launches.get(dep_id)

    # -- launching ------------------------------------------------------------------

    def launch(self, req: LaunchRequest) -> tuple[Deployment, LaunchProgress | None]:
        """Start launching ``req`` in the background and return at once.

        A second launch of the same configuration while the first runs (or after it is up)
        returns the existing deployment instead of creating another container.

        Raises:
            RecipeNotFound, InvalidLaunch, GpuRuntimeMissing, PortInUse, DeploymentConflict,
            EngineUnavailable: before anything is created.
        """
        recipe = self.catalog.get(req.recipe)
        status = self.engine.status()
        if not status.reachable:
            raise EngineUnavailable(status.reason or "The Docker engine does not answer.", hint=status.hint)
        gpus = choose_gpus(recipe, req.gpus, status.gpu_runtime)
        image, fallback = self._planned_image(recipe, req, gpus)
        # Outside the lock: a refresh talks to Docker and probes servers (seconds), and the
        # /v1 lookups on the event loop take this lock. The checks below read what it cached.
        self.refresh()
        with self._lock:
            reserved = self._reserved_ports()
            make_spec = functools.partial(plan, recipe, req, self.settings, host_port=req.port or 0,
                                          gpu_runtime=status.gpu_runtime, machine_gpus=self.machine_gpus())
            spec = make_spec(image=image)
            dep_id = spec.labels[f"{LABEL_PREFIX}id"]
            config_hash = spec.labels[f"{LABEL_PREFIX}config_hash"]

            running = self._launches.get(dep_id)
            if running is not None and not running.done:
                if running.config_hash != config_hash:
                    raise DeploymentConflict(f"'{dep_id}' is being launched with another configuration.",
                                             hint="Wait for that launch, or choose another served name.")
                return self._view(dep_id, self._containers.get(dep_id), running), running
            existing = self._containers.get(dep_id)
            if existing is not None:
                if existing.labels.get(f"{LABEL_PREFIX}config_hash") != config_hash:
                    raise DeploymentConflict(
                        f"A deployment named '{dep_id}' exists with another configuration.",
                        hint="Remove it first, or choose another served name.")
                return self._view(dep_id, existing, running), running

            if spec.gpu_ids and not status.gpu_runtime:
                raise GpuRuntimeMissing(
                    "GPUs were asked for, but this Docker engine has no NVIDIA GPU runtime.", hint=GPU_RUNTIME_HINT)
            if req.port is not None:
                if req.port in reserved:
                    raise PortInUse(f"Port {req.port} is already used by another ModelDeck deployment.",
                                    hint="Pick another port, or leave it empty to choose a free one.")
                if not port_free(req.port):
                    raise PortInUse(f"Port {req.port} on 127.0.0.1 is taken by another program.",
                                    hint="Pick another port, or leave it empty to choose a free one.")
                host_port = req.port
            else:
                host_port = _free_port(reserved)
            # Secrets the recipe names and neither the request nor the environment gives come
            # from the ones entered in ModelDeck (the Hugging Face token): in memory only.
            spec = dataclasses.replace(spec, host_port=host_port, secret_values=stored_values(
                self.settings.home, recipe.env.secrets, spec.secret_values))
            lp = LaunchProgress(dep_id, config_hash, recipe=recipe.name, model=req.model, image=spec.image,
                                served_name=spec.labels[f"{LABEL_PREFIX}served_name"], host_port=host_port)
            self._launches[dep_id] = lp
            if fallback is not None:  # the spec to create if the local build stands in for the pull
                secret_values = spec.secret_values
                fallback = dataclasses.replace(fallback, replan=lambda tag: dataclasses.replace(
                    make_spec(image=tag), host_port=host_port, secret_values=secret_values))
        lp.emit("queued", f"Launching {recipe.title}: {req.model}")
        threading.Thread(target=self._run_launch, args=(recipe, spec, lp), kwargs={"fallback": fallback},
                         name=f"launch-{dep_id}", daemon=True).start()
        return self._view(dep_id, None, lp), lp

    def _base_image(self) -> str:
        """The base image builds start from, chosen now from what the engine has (backend/base_image.py)."""
        return pick_base_image(self.settings.demo_base_image, self.engine.image_exists)

    def _ensure_base_image(self, lp: LaunchProgress) -> str:
        """The base image for a build, pulled first when it is not here.

        Raises:
            ImageUnavailable: it is not here and could not be pulled; the hint says to run
                scripts/make-base-image (or to fix MODELDECK_DEMO_BASE_IMAGE).
        """
        base = self._base_image()
        if self.engine.image_exists(base):
            return base
        lp.emit("pulling", f"Pulling the base image {base}")
        try:
            self._relay(self._pull_within(base, PULL_ANSWER_TIMEOUT_S), lp)
        except ImageUnavailable as exc:
            raise ImageUnavailable(
                f"No base image to build from: {base} is not on this machine and could not be pulled "
                f"({exc.message})", hint=missing_base_hint(base, self.settings.demo_base_image),
                details=exc.details) from None
        return base

    def _reserved_ports(self) -> set[int]:
        """Host ports deployments and running launches hold (call with ``_lock`` held)."""
        reserved = {c.host_port for c in self._containers.values() if c.host_port}
        return reserved | {lp.host_port for lp in self._launches.values() if not lp.done and lp.host_port}

    def _planned_image(self, recipe: Recipe, req: LaunchRequest, gpus: tuple[str, ...]
                       ) -> tuple[str | None, LocalFallback | None]:
        """The image a launch of ``req`` runs (a registry reference, or the tag of a build made
        here), and the recipe's local build where it is chosen or stands by (see ``_choose_image``).

        Raises:
            InvalidLaunch: the recipe's build folder is missing; see ``_choose_image``.
        """
        if recipe.image.build:
            context = self.settings.catalog_dir / recipe.image.build
            if not context.is_dir():
                raise InvalidLaunch(f"Build folder {context} of recipe '{recipe.name}' is missing.")
            return build_tag(recipe, context, self._base_image()), None
        return self._choose_image(recipe, req, gpus)

    def _choose_image(self, recipe: Recipe, req: LaunchRequest, gpus: tuple[str, ...]
                      ) -> tuple[str | None, LocalFallback | None]:
        """For a recipe with a published image: the image to plan with, and its local build if any.

        With ``image_source`` "auto": the published image when it is here; else the local
        build when it is here (and no GPUs are asked for: it is CPU-only); else the published
        image, with the local build standing by for a pull that fails. "published" and "local"
        pick one.

        Raises:
            InvalidLaunch: "local" for a recipe without a local build, or with GPUs.
            RecipeError: the recipe's local build folder is missing or broken.
        """
        published = recipe.image_for(use_gpu=bool(gpus))
        if recipe.image.local_build is None:
            if req.image_source == "local":
                raise InvalidLaunch(f"{recipe.title} has no local build; it runs from its published image only.",
                                    hint="Leave image_source at 'auto'.")
            return published, None
        build = load_local_build(self.settings.catalog_dir, recipe.image.local_build)
        if req.image_source == "local":
            if gpus:
                raise InvalidLaunch(
                    f"The {recipe.title} image built here from source is CPU-only: it cannot use the GPUs asked for.",
                    hint="Launch with no GPUs (gpus: []) to run it on the CPU, or choose the published image.")
            return build.tag, LocalFallback(build, cpu_only_gpus=False)
        if req.image_source == "published" or self.engine.image_exists(published):
            return published, None
        if not gpus and self.engine.image_exists(build.tag):
            return build.tag, LocalFallback(build, cpu_only_gpus=False)
        return published, LocalFallback(build, cpu_only_gpus=bool(gpus))

    def plan_launch(self, req: LaunchRequest) -> tuple[ContainerSpec, list[str]]:
        """The exact container a launch of ``req`` would create now, and warnings; creates and pulls nothing.

        The host port is the one asked for, or one free at this moment (a launch picks its
        own when it runs). Where the engine cannot give what the launch needs (no engine, no
        GPU runtime, a port in use), the plan is still made and a warning says so.

        Raises:
            RecipeNotFound, InvalidLaunch: as ``launch`` would, before anything else.
        """
        recipe = self.catalog.get(req.recipe)
        status = self.engine.status()
        warnings: list[str] = []
        if not status.reachable:
            warnings.append(f"The Docker engine does not answer ({status.reason}): a launch would fail now.")
        gpus = choose_gpus(recipe, req.gpus, status.gpu_runtime)
        image, local = self._planned_image(recipe, req, gpus)
        with self._lock:
            reserved = self._reserved_ports()
        spec = plan(recipe, req, self.settings, image=image, host_port=req.port or 0,
                    gpu_runtime=status.gpu_runtime, machine_gpus=self.machine_gpus())
        if req.port is not None:
            if req.port in reserved or not port_free(req.port):
                warnings.append(f"Port {req.port} on 127.0.0.1 is in use now: a launch would be refused.")
            host_port = req.port
        else:
            host_port = _free_port(reserved)
        if spec.gpu_ids and status.reachable and not status.gpu_runtime:
            warnings.append("GPUs are asked for, but this Docker engine has no NVIDIA GPU runtime: "
                            "a launch would be refused.")
        try:
            if status.reachable and not self.engine.image_exists(image):
                built_here = recipe.image.build or (local is not None and image == local.build.tag)
                warnings.append(f"Image {image} is not on this engine yet: a launch "
                                + ("builds it first." if built_here
                                   else "pulls it first." + (" Where no registry answers, it builds a CPU-only "
                                                             "image here from source instead."
                                                             if local is not None else "")))
        except EngineUnavailable:
            pass  # went away since status(): said above, or the next plan says it
        return dataclasses.replace(spec, host_port=host_port), warnings

    def _run_launch(self, recipe: Recipe, spec: ContainerSpec, lp: LaunchProgress, resume: bool = False,
                    fallback: LocalFallback | None = None) -> None:
        try:
            if not resume:  # a resumed launch has its running container already
                spec = self._ensure_image(recipe, spec, lp, fallback)
                lp.emit("creating", f"Creating container {spec.name}")
                lp.container_id = self.engine.create(spec)
                lp.emit("starting", f"Starting on 127.0.0.1:{spec.host_port}")
                self.engine.start(lp.container_id)
            self._wait_ready(recipe, spec, lp)
            self._post_start(recipe, spec, lp)
            self._check_model(spec, lp)
            self.engine.enable_restarts(lp.container_id, spec.restart_max)
            info = self.engine.inspect(lp.container_id)
            self._ready[info.id] = info.started_at or ""
            # Put the container into the cache /v1 routes from before anyone hears "ready":
            # a client that sends its first request the moment it reads the event must find it.
            with self._lock:
                self._containers[lp.deployment_id] = info
            lp.emit("ready", f"Ready at http://127.0.0.1:{spec.host_port}{recipe.server.openai_base}",
                    details={"endpoint": f"http://127.0.0.1:{spec.host_port}{recipe.server.openai_base}"})
        except ModelDeckError as exc:
            self._fail(lp, exc)
        except Exception as exc:  # noqa: BLE001 - a launch thread must always end its log
            log.exception("launch of %s failed", lp.deployment_id)
            self._fail(lp, ModelDeckError(f"Unexpected error while launching: {exc}"))
        finally:
            self.refresh()

    def _fail(self, lp: LaunchProgress, exc: ModelDeckError) -> None:
        details = dict(exc.details)
        if lp.container_id:
            try:
                # Stop the crash loop the restart policy would run, but keep the container
                # so that its logs and exit code stay visible.
                self.engine.stop(lp.container_id, timeout=3)
            except ModelDeckError:
                pass
        lp.emit("failed", exc.message, details={**details, "hint": exc.hint, "code": exc.code})

    def _ensure_image(self, recipe: Recipe, spec: ContainerSpec, lp: LaunchProgress,
                      fallback: LocalFallback | None = None) -> ContainerSpec:
        """Make ``spec.image`` present (pull or build); the spec to create, re-planned if the local build stood in.

        Raises:
            ImageUnavailable: the pull failed (and the local build, where there is one, too).
        """
        if self.engine.image_exists(spec.image):
            return spec
        if recipe.image.build:
            context = self.settings.catalog_dir / recipe.image.build
            base = self._ensure_base_image(lp)
            lp.emit("building", f"Building image {spec.image} from {base} (first launch only)")
            self._relay(self.engine.build(context, spec.image, {"BASE_IMAGE": base}), lp)
            return spec
        if fallback is not None and spec.image == fallback.build.tag:
            self._build_local(fallback.build, lp)
            return spec
        lp.emit("pulling", f"Pulling image {spec.image}")
        try:
            self._relay(self._pull_within(spec.image, PULL_ANSWER_TIMEOUT_S), lp)
            return spec
        except ImageUnavailable as exc:
            if fallback is None:
                raise
            if fallback.cpu_only_gpus:
                raise ImageUnavailable(
                    exc.message, details=exc.details,
                    hint=f"{exc.hint or ''} {recipe.title}'s image built here from source is CPU-only, so it does "
                         "not stand in when GPUs are asked for: launch with no GPUs (gpus: []) to run it on the "
                         "CPU.".strip()) from None
            tag = fallback.build.tag
            lp.emit("building", f"{exc.message} Using the CPU-only image built here from source instead: {tag}.")
        if not self.engine.image_exists(tag):
            self._build_local(fallback.build, lp)
        lp.image = tag
        return fallback.replan(tag) if fallback.replan is not None else dataclasses.replace(spec, image=tag)

    def _build_local(self, build: LocalBuild, lp: LaunchProgress) -> None:
        lp.emit("building", f"Building {build.tag} from {build.source.package} {build.source.version} "
                            "(first time only: downloads the source, then compiles for a few minutes)")
        cache = source_cache_dir(self.settings.cache_dirs)
        self._relay(build_events(self.engine, build, self._ensure_base_image(lp), cache), lp)

    def _pull_within(self, ref: str, seconds: float) -> Iterator[ProgressEvent]:
        """``engine.pull(ref)``, failing with ImageUnavailable when the registry says nothing for ``seconds``.

        Docker's pull has no time-out of its own: a registry that neither answers nor refuses
        (a firewall dropping packets) would hold the launch for minutes. Only the first answer
        is timed; a pull that has started may take as long as its layers need.
        """
        q: queue.Queue = queue.Queue()

        def run() -> None:
            try:
                for ev in self.engine.pull(ref):
                    q.put(ev)
                q.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                q.put(exc)

        threading.Thread(target=run, name=f"pull-{ref}", daemon=True).start()
        timeout: float | None = seconds
        while True:
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                raise ImageUnavailable(f"No registry answered for {ref} within {seconds:.0f} s.",
                                       hint="Check the network or proxy, or try 'docker pull' by hand.") from None
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            timeout = None
            yield item

    def _relay(self, events, lp: LaunchProgress) -> None:
        """Forward pull/build progress, at most ~10 events a second per layer."""
        layers: dict[str, tuple[int, int]] = {}
        last_sent: dict[str | None, float] = {}
        last_status: dict[str | None, str] = {}
        for ev in events:
            ev: ProgressEvent
            if ev.phase == "pulling" and ev.layer and ev.total:
                done = ev.total if ev.message in ("Download complete", "Pull complete") else (ev.current or 0)
                layers[ev.layer] = (done, ev.total)
            now = time.monotonic()
            changed = last_status.get(ev.layer) != ev.message
            if not changed and now - last_sent.get(ev.layer, 0) < 0.1:
                continue
            last_sent[ev.layer], last_status[ev.layer] = now, ev.message
            overall = (sum(c for c, _ in layers.values()), sum(t for _, t in layers.values())) if layers else (None, None)
            lp.emit(ev.phase, ev.message, layer=ev.layer, current=ev.current, total=ev.total,
                    overall_current=overall[0], overall_total=overall[1])

    def _wait_ready(self, recipe: Recipe, spec: ContainerSpec, lp: LaunchProgress) -> None:
        timeout = self.settings.readiness_timeout_s or recipe.server.startup_timeout
        deadline = time.monotonic() + timeout
        base = f"http://127.0.0.1:{spec.host_port}"
        paths = [recipe.readiness.health_path] + ([recipe.readiness.models_path] if recipe.readiness.models_path else [])
        lp.emit("loading", f"Waiting for the server to answer {paths[0]} (up to {timeout:.0f} s)")
        waiting_on = paths[0]
        while True:
            info = self.engine.inspect(lp.container_id)
            if info.state in ("exited", "dead", "restarting") or info.restart_count > 0:
                code = info.exit_code
                reason = "was killed: out of memory" if info.oom_killed else f"exited with code {code}"
                raise LaunchFailed(f"The model server {reason} before it was ready.", exit_code=code,
                                   log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                                   hint="Read the log lines below; a wrong model id or argument is the usual cause.")
            try:
                ok = True
                for path in paths:
                    r = self._probe.get(base + path)
                    if r.status_code != 200:
                        ok, waiting_on = False, path
                        break
                if ok:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise LaunchFailed(f"The model server did not answer {waiting_on} within {timeout:.0f} s.",
                                   log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                                   hint="Large models take long to load: raise the timeout, or check the logs.")
            time.sleep(recipe.readiness.interval)

    def _post_start(self, recipe: Recipe, spec: ContainerSpec, lp: LaunchProgress) -> None:
        gpus = spec.gpu_ids
        values = {"model": spec.labels[f"{LABEL_PREFIX}model"], "served_name": spec.labels[f"{LABEL_PREFIX}served_name"],
                  "port": str(recipe.server.port),
                  "gpu_count": str((self.machine_gpus() or 1) if gpus == ("all",) else len(gpus))}
        for call in recipe.post_start:
            body, path = fill_placeholders(call.body, values), fill_placeholders(call.path, values)
            lp.emit("loading", f"{call.method} {path} (preparing the model)")
            try:
                r = httpx.request(call.method, f"http://127.0.0.1:{spec.host_port}{path}", json=body,
                                  timeout=call.timeout, trust_env=False)
            except httpx.HTTPError as exc:
                raise LaunchFailed(f"Preparing the model failed: {path} did not answer ({exc}).") from None
            if r.status_code >= 400:
                raise LaunchFailed(f"Preparing the model failed: {path} answered {r.status_code}: {r.text[:300]}")

    def _check_model(self, spec: ContainerSpec, lp: LaunchProgress) -> None:
        """Ready only when the server says it has the model (recipes with ``readiness.model_check``).

        Raises:
            LaunchFailed: the server answers, but not that it has the model.
        """
        check = _model_check_of(spec.labels)
        if check is None:
            return
        lp.emit("loading", f"Checking that the server has the model ({check['method']} {check['path']})")
        ok, why = self._model_answers(spec.host_port, check)
        if not ok:
            raise LaunchFailed(f"The server does not have the model after preparing it: {why}.",
                               log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                               hint="Check the model name and the log lines below, then launch again.")

    # -- actions --------------------------------------------------------------------

    def _container_of(self, dep_id: str) -> ContainerInfo:
        found = self.engine.list(labels={f"{LABEL_PREFIX}id": dep_id})
        if not found:
            raise DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")
        return found[0]

    def stop(self, dep_id: str) -> Deployment:
        c = self._container_of(dep_id)
        self.engine.stop(c.id)
        self._ready.pop(c.id, None)
        return self.get(dep_id)

    def start(self, dep_id: str) -> Deployment:
        c = self._container_of(dep_id)
        self.engine.start(c.id)
        return self.get(dep_id)

    def restart(self, dep_id: str) -> Deployment:
        c = self._container_of(dep_id)
        self._ready.pop(c.id, None)
        self.engine.restart(c.id)
        return self.get(dep_id)

    def remove(self, dep_id: str) -> None:
        """Remove the container (cache volumes stay) and forget a failed launch of that id."""
        with self._lock:
            lp = self._launches.get(dep_id)
            if lp is not None and not lp.done and lp.container_id is None:
                raise DeploymentConflict(f"'{dep_id}' is still being prepared.",
                                         hint="Wait until its image is ready, then remove it.")
        found = self.engine.list(labels={f"{LABEL_PREFIX}id": dep_id})
        if not found and lp is None:
            raise DeploymentNotFound(f"No deployment '{dep_id}'.", hint="List deployments to see their ids.")
        for c in found:
            self.engine.remove(c.id)
            self._ready.pop(c.id, None)
        with self._lock:
            self._launches.pop(dep_id, None)
            self._containers.pop(dep_id, None)

    def logs(self, dep_id: str, tail: int = 200) -> list[str]:
        return self.engine.logs(self._container_of(dep_id).id, tail=tail)

    def spec(self, dep_id: str) -> ContainerSpec:
        return self.engine.spec_of(self._container_of(dep_id).id)

    # -- for the proxy and the stats --------------------------------------------------

    def container_refs(self) -> list[ContainerRef]:
        with self._lock:
            containers = list(self._containers.items())
        return [ContainerRef(container_id=c.id, deployment_id=d, ready=self._is_ready(c),
                             wants_gpu=bool(c.labels.get(f"{LABEL_PREFIX}gpus")))
                for d, c in containers if c.state == "running"]

    # UpstreamDirectory (backend.proxy): answered from the cache, no I/O on the request path.

    def _upstream(self, dep_id: str, c: ContainerInfo) -> Upstream:
        labels = c.labels
        ready = self._is_ready(c)
        lp = self._launches.get(dep_id)
        state = "ready" if ready else (lp.last.phase if lp is not None and not lp.done and lp.last else c.state)
        return Upstream(deployment_id=dep_id, served_name=labels.get(f"{LABEL_PREFIX}served_name", dep_id),
                        base_url=f"http://127.0.0.1:{c.host_port}{labels.get(f'{LABEL_PREFIX}openai_base', '/v1')}",
                        ready=ready, state=state)

    def lookup(self, model: str) -> Upstream | None:
        with self._lock:
            containers = list(self._containers.items())
        for dep_id, c in containers:
            if c.labels.get(f"{LABEL_PREFIX}served_name") == model:
                return self._upstream(dep_id, c)
        return None

    def ready_models(self) -> list[Upstream]:
        with self._lock:
            containers = list(self._containers.items())
        return [u for u in (self._upstream(d, c) for d, c in containers) if u.ready]


def _model_check_of(labels: dict[str, str]) -> dict | None:
    """The filled-in model check a launch wrote into the container's labels, or None."""
    raw = labels.get(f"{LABEL_PREFIX}model_check")
    if not raw:
        return None
    try:
        check = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(check, dict) or check.get("method") not in ("GET", "POST") \
            or not str(check.get("path", "")).startswith("/"):
        return None
    return check


__all__ = ["Deployment", "DeploymentService", "LaunchRequest"]

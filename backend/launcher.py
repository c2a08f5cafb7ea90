"""The launcher: turns a launch request into a ready container (image, create, start, readiness, model), and follows logs."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx

from backend.base_image import missing_base_hint, pick_base_image
from backend.catalog import Catalog, Recipe
from backend.deployment_status import Deployment
from backend.engine import GPU_RUNTIME_HINT, ContainerInfo, Engine, LogFollower, ProgressEvent
from backend.errors import (EngineUnavailable, GpuRuntimeMissing, ImageUnavailable, InvalidLaunch, LaunchFailed,
                            ModelDeckError, PortInUse)
from backend.labels import DeploymentLabels
from backend.launch_plan import LaunchRequest, build_tag, choose_gpus, fill_placeholders, home_id, plan
from backend.launches import LaunchProgress
from backend.local_images import LocalBuild, build_events, load_local_build, source_cache_dir
from backend.netutil import port_free
from backend.readiness import ReadinessProbe
from backend.registry import DeploymentRegistry
from backend.secrets_store import stored_values
from backend.settings import Settings
from backend.spec import ContainerSpec

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 30
#: How long a registry may stay silent before a pull counts as failed (and a local build, if any, stands in).
PULL_ANSWER_TIMEOUT_S = 20.0
#: Lines a log follower may hold for a reader that is slower than the container writes.
LOG_QUEUE_LINES = 10000


@dataclasses.dataclass(frozen=True)
class LocalFallback:
    """A recipe's image built here from source: chosen, or standing by for a pull that fails."""

    build: LocalBuild
    cpu_only_gpus: bool  # GPUs were asked for: the CPU-only build must not stand in silently
    replan: Callable[[str], ContainerSpec] | None = None  # the spec to create with another image


class Launcher:
    """Launches recipes as containers and brings them to ready; one thread per launch.

    It writes what it learns into the registry (the launch's progress, "ready"), and the
    registry calls it back (``finish_interrupted``, ``resume_interrupted``) when its loop finds
    a server that a killed backend's launch left behind. Readiness is the one
    ``ReadinessProbe`` the registry uses too.
    """

    def __init__(self, engine: Engine, catalog: Catalog, settings: Settings, registry: DeploymentRegistry,
                 probe: ReadinessProbe):
        self.engine = engine
        self.catalog = catalog
        self.settings = settings
        self.registry = registry
        self.probe = probe
        #: How many GPUs the machine has (the stats sampler's NVML view; None: unknown). Set by the app.
        self.machine_gpus: Callable[[], int | None] = lambda: None
        self._lock = threading.Lock()
        self._resumed: set[tuple[str, str]] = set()  # (container id, started_at) whose launch was resumed
        # Models on demand (set by the service to the Lifecycle's): a launch's start makes room first like
        # any start, a launch that reaches ready is its first load, and launching an existing configuration
        # again applies the request's on_demand, idle_ttl_s and pinned to it.
        self.start_with_room: Callable[[str, DeploymentLabels, Callable[[], None], str], None] = \
            lambda dep_id, labels, start, reason: start()
        self.on_launched: Callable[[str, str, float], None] = lambda dep_id, served, seconds: None
        self.on_adopt: Callable[[str, LaunchRequest], None] = lambda dep_id, req: None

    def startup_timeout_s(self, recipe: Recipe | None) -> float:
        """How long a server may take to answer: the setting, else its recipe's start-up time."""
        return self.settings.readiness_timeout_s or (recipe.server.startup_timeout if recipe else 600.0)

    def startup_timeout_of(self, labels: DeploymentLabels) -> float:
        return self.startup_timeout_s(self.catalog.recipes.get(labels.recipe))

    # -- launching ------------------------------------------------------------------

    def launch(self, req: LaunchRequest) -> tuple[Deployment, LaunchProgress | None]:
        """Start launching ``req`` in the background and return at once.

        A second launch of the same configuration while the first runs (or after it is up)
        returns the existing deployment instead of creating another container. With no port
        asked for, Docker assigns the host port when the container starts; the "starting"
        event and the deployment say which.

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
        make_spec = functools.partial(plan, recipe, req, self.settings, host_port=req.port or 0,
                                      gpu_runtime=status.gpu_runtime, machine_gpus=self.machine_gpus())
        spec = make_spec(image=image)
        labels = DeploymentLabels.decode(spec.labels)
        # Adopt or refuse against what Docker holds under this id now, not a refresh ago
        # (another backend may have launched it); outside the registry's lock: it asks Docker.
        self.registry.ensure_filled()
        self.registry.update(labels.id)
        # Secrets the recipe names and neither the request nor the environment gives come
        # from the ones entered in ModelDeck (the Hugging Face token): in memory only.
        spec = dataclasses.replace(spec, secret_values=stored_values(
            self.settings.home, recipe.env.secrets, spec.secret_values))

        def start(reserved: set[int]) -> LaunchProgress:
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
            return LaunchProgress(labels.id, labels.config_hash, recipe=recipe.name, model=req.model,
                                  image=spec.image, served_name=labels.served_name, host_port=req.port)

        view, lp, new = self.registry.claim_launch(labels.id, labels.config_hash, start)
        if not new:
            self.on_adopt(labels.id, req)
            return view, lp
        if fallback is not None:  # the spec to create if the local build stands in for the pull
            secret_values = spec.secret_values
            fallback = dataclasses.replace(fallback, replan=lambda tag: dataclasses.replace(
                make_spec(image=tag), secret_values=secret_values))
        lp.emit("queued", f"Launching {recipe.title}: {req.model}")
        threading.Thread(target=self._run_launch, args=(recipe, spec, lp), kwargs={"fallback": fallback},
                         name=f"launch-{labels.id}", daemon=True).start()
        return view, lp

    def plan_launch(self, req: LaunchRequest) -> tuple[ContainerSpec, list[str]]:
        """The exact container a launch of ``req`` would create now, and warnings; creates and pulls nothing.

        The host port is the one asked for, or 0 when none is: Docker assigns one when the
        container starts (``docker run -p 127.0.0.1::<port>``). Where the engine cannot give
        what the launch needs (no engine, no GPU runtime, a port in use), the plan is still
        made and a warning says so.

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
        spec = plan(recipe, req, self.settings, image=image, host_port=req.port or 0,
                    gpu_runtime=status.gpu_runtime, machine_gpus=self.machine_gpus())
        if req.port is not None and (req.port in self.registry.host_ports() or not port_free(req.port)):
            warnings.append(f"Port {req.port} on 127.0.0.1 is in use now: a launch would be refused.")
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
        return spec, warnings

    def _run_launch(self, recipe: Recipe, spec: ContainerSpec, lp: LaunchProgress, resume: bool = False,
                    fallback: LocalFallback | None = None) -> None:
        try:
            if not resume:  # a resumed launch has its running container already
                spec = self._ensure_image(recipe, spec, lp, fallback)
                lp.emit("creating", f"Creating container {spec.name}")
                lp.container_id = self.engine.create(spec)
                began = time.monotonic()
                labels = DeploymentLabels.decode(spec.labels)
                self.start_with_room(lp.deployment_id, labels, functools.partial(self.engine.start, lp.container_id),
                                     "launched")
                # The port Docker bound (the one asked for, or one it assigned at start); the
                # registry shows the container, and so its port, from this event on.
                self.registry.update(lp.deployment_id)
                lp.host_port = self.engine.inspect(lp.container_id).host_port
                lp.emit("starting", f"Starting on 127.0.0.1:{lp.host_port}" if lp.host_port else "Starting")
            labels = DeploymentLabels.decode(spec.labels)
            self._wait_ready(recipe, labels, lp)
            self._post_start(recipe, spec, labels, lp)
            self._check_model(labels, lp)
            self.engine.enable_restarts(lp.container_id, spec.restart_max)
            info = self.engine.inspect(lp.container_id)
            if not resume:  # its first load, recorded before anyone can see it ready
                try:
                    self.on_launched(lp.deployment_id, labels.served_name, time.monotonic() - began)
                except Exception:  # noqa: BLE001 - the launch succeeded; only its record failed
                    log.exception("recording the launch of %s failed", lp.deployment_id)
            # Into the cache /v1 routes from before anyone hears "ready": a client that sends
            # its first request the moment it reads the event must find it.
            self.registry.mark_ready(lp.deployment_id, info)
            endpoint = f"http://127.0.0.1:{info.host_port}{recipe.server.openai_base}"
            lp.emit("ready", f"Ready at {endpoint}", details={"endpoint": endpoint})
        except ModelDeckError as exc:
            self._fail(lp, exc)
        except Exception as exc:  # noqa: BLE001 - a launch thread must always end its log
            log.exception("launch of %s failed", lp.deployment_id)
            self._fail(lp, ModelDeckError(f"Unexpected error while launching: {exc}"))

    def _fail(self, lp: LaunchProgress, exc: ModelDeckError) -> None:
        details = dict(exc.details)
        if lp.container_id:
            try:
                # Stop the crash loop the restart policy would run, but keep the container
                # so that its logs and exit code stay visible.
                self.engine.stop(lp.container_id, timeout=3)
            except ModelDeckError:
                pass
        # Before anyone hears "failed": a reader that asks then must see the stopped container.
        try:
            self.registry.update(lp.deployment_id)
        except ModelDeckError:
            pass  # the engine went away: the refresh loop says so
        lp.emit("failed", exc.message, details={**details, "hint": exc.hint, "code": exc.code})

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


    # -- readiness ------------------------------------------------------------------

    def _wait_ready(self, recipe: Recipe, labels: DeploymentLabels, lp: LaunchProgress) -> None:
        """Wait until the new server answers its readiness paths (not yet its model: see ``_check_model``).

        Raises:
            LaunchFailed: it exited, crashed or was killed first, or did not answer in time.
        """
        timeout = self.startup_timeout_s(recipe)
        deadline = time.monotonic() + timeout
        lp.emit("loading", f"Waiting for the server to answer {labels.health_path} (up to {timeout:.0f} s)")
        while True:
            info = self.engine.inspect(lp.container_id)
            if info.state in ("exited", "dead", "restarting") or info.restart_count > 0:
                code = info.exit_code
                reason = "was killed: out of memory" if info.oom_killed else f"exited with code {code}"
                raise LaunchFailed(f"The model server {reason} before it was ready.", exit_code=code,
                                   log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                                   hint="Read the log lines below; a wrong model id or argument is the usual cause.")
            answer = self.probe.check(lp.host_port, labels, model_check=False)
            if answer.ok:
                return
            if time.monotonic() > deadline:
                raise LaunchFailed(f"The model server did not answer {answer.waiting_on} within {timeout:.0f} s.",
                                   log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                                   hint="Large models take long to load: raise the timeout, or check the logs.")
            time.sleep(recipe.readiness.interval)

    def _post_start(self, recipe: Recipe, spec: ContainerSpec, labels: DeploymentLabels, lp: LaunchProgress) -> None:
        gpus = spec.gpu_ids
        values = {"model": labels.model, "served_name": labels.served_name, "port": str(recipe.server.port),
                  "gpu_count": str((self.machine_gpus() or 1) if gpus == ("all",) else len(gpus))}
        for call in recipe.post_start:
            body, path = fill_placeholders(call.body, values), fill_placeholders(call.path, values)
            lp.emit("loading", f"{call.method} {path} (preparing the model)")
            try:
                r = httpx.request(call.method, f"http://127.0.0.1:{lp.host_port}{path}", json=body,
                                  timeout=call.timeout, trust_env=False)
            except httpx.HTTPError as exc:
                raise LaunchFailed(f"Preparing the model failed: {path} did not answer ({exc}).") from None
            if r.status_code >= 400:
                raise LaunchFailed(f"Preparing the model failed: {path} answered {r.status_code}: {r.text[:300]}")

    def _check_model(self, labels: DeploymentLabels, lp: LaunchProgress) -> None:
        """Ready only when the server says it has the model (recipes with ``readiness.model_check``).

        Raises:
            LaunchFailed: the server answers, but not that it has the model.
        """
        check = labels.model_check
        if check is None:
            return
        lp.emit("loading", f"Checking that the server has the model ({check['method']} {check['path']})")
        ok, why = self.probe.has_model(lp.host_port, check)
        if not ok:
            raise LaunchFailed(f"The server does not have the model after preparing it: {why}.",
                               log_tail=self.engine.logs(lp.container_id, tail=LOG_TAIL_LINES),
                               hint="Check the model name and the log lines below, then launch again.")

    # -- launches a killed backend left (called by the registry's refresh) ----------------

    def finish_interrupted(self, c: ContainerInfo) -> None:
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

    def resume_interrupted(self, dep_id: str, c: ContainerInfo) -> None:
        """Finish a launch whose backend died while preparing the model (Ollama's pull).

        The server answers its health path but not its model check, its restart policy is
        still the launch-time "no", and no launch of it runs here: the calls after start-up
        (``post_start``) are made again — Ollama resumes a pull from the parts it has — and
        the deployment becomes ready only when the model check answers, or is shown failed.
        """
        labels = DeploymentLabels.decode(c.labels, c.name)
        recipe = self.catalog.recipes.get(labels.recipe)
        key = (c.id, c.started_at or "")
        with self._lock:
            if key in self._resumed:
                return
        if (recipe is None or not recipe.post_start or labels.model_check is None
                or c.restart_policy not in ("", "no")
                # Another backend on this engine (another home) may be preparing it right now.
                or labels.launched_from != home_id(self.settings)
                or not self.probe.check(c.host_port, labels, model_check=False).ok):
            return
        try:
            spec = self.engine.spec_of(c.id)
        except ModelDeckError:
            return
        lp = LaunchProgress(dep_id, labels.config_hash, recipe=recipe.name, model=labels.model, image=c.image,
                            served_name=labels.served_name, host_port=c.host_port)
        lp.container_id = c.id
        with self._lock:
            if key in self._resumed or not self.registry.resume_launch(dep_id, lp):
                return
            self._resumed.add(key)
        log.info("resuming the interrupted launch of %s (preparing its model again)", c.name)
        lp.emit("loading", "The launch was interrupted while the model was being prepared; preparing it again")
        threading.Thread(target=self._run_launch, args=(recipe, spec, lp), kwargs={"resume": True},
                         name=f"resume-{dep_id}", daemon=True).start()

    # -- logs -----------------------------------------------------------------------------

    async def follow_logs(self, container_id: str, tail: int) -> AsyncIterator[str]:
        """The container's last ``tail`` log lines, then each new one as it is written.

        The stream is opened here (so an unknown container fails now, before a response
        starts); the lines end when the container stops or the engine goes away. Closing the
        iterator (``aclose``, or leaving an ``async for``) closes the engine's stream.

        Raises:
            DeploymentNotFound: no such ModelDeck container.
            EngineUnavailable: the engine does not answer.
        """
        follower = await asyncio.to_thread(self.engine.follow_logs, container_id, tail)
        return _lines(follower, container_id)


async def _lines(follower: LogFollower, name: str) -> AsyncIterator[str]:
    """``follower``'s lines on the event loop.

    The SDK's log stream blocks, so one thread of its own reads it (not the default pool:
    a stream may last hours, and the pool serves every sync route); ``close()`` from the
    loop ends its read, so the thread ends with the reader.
    """
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue(maxsize=LOG_QUEUE_LINES)

    def put(line: str | None) -> None:
        try:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        except RuntimeError:  # the loop is closed: nobody reads any more
            pass

    def pump() -> None:
        try:
            for line in follower:
                put(line)
        finally:
            put(None)

    threading.Thread(target=pump, name=f"logs-{name[:12]}", daemon=True).start()
    try:
        while (line := await lines.get()) is not None:
            yield line
    finally:
        follower.close()  # ends the SDK stream, so the pump thread exits too

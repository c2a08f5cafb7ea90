"""A deployment's status, derived from facts about its container and its launch: pure, no Docker, no clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel

from backend.engine import ContainerInfo
from backend.labels import DeploymentLabels
from backend.launches import LaunchProgress

Status = Literal["pulling", "building", "creating", "starting", "loading", "ready", "restarting",
                 "stopped", "failed", "created", "paused", "unknown", "unreachable"]
#: Exit codes of a server that was asked to stop (SIGTERM, SIGINT, SIGKILL after the grace period).
STOP_EXIT_CODES = frozenset({0, 130, 137, 143})
ABANDONED_MESSAGE = ("never answered within its start-up time after the launch was interrupted; read its logs, "
                     "then remove it and launch again")


class MemoryNeed(BaseModel):
    """What a deployment counts as needing when ModelDeck makes room for it, and where (docs/on-demand.md)."""

    need_bytes: int | None = None
    where: Literal["gpu", "host"] = "host"
    #: The GPUs it runs on (indices or UUIDs as launched; "all"); empty on the host.
    gpus: list[str] = []
    #: Where the number comes from: "measured ...", "mem_limit ...", "estimate ...", or why there is none.
    basis: str = ""


class LifecycleEvent(BaseModel):
    """One load, failed load, unload or eviction of a deployment, with why it happened."""

    seq: int
    at: str  # ISO 8601, UTC
    deployment_id: str
    served_name: str
    kind: Literal["load", "load_failed", "unload", "evict"]
    trigger: Literal["request", "click", "ttl", "eviction", "launch"]
    reason: str
    duration_s: float | None = None  # a load: from the request (or click) to ready
    for_deployment: str | None = None  # an eviction: the deployment that needed the room


class Deployment(BaseModel):
    """A model deployment as the API shows it: derived from its container, plus launch progress."""

    id: str
    name: str
    #: The machine it runs on: "local" (this backend's engine) or a node's name (then ``id`` is ``<its id>@<node>``).
    node: str = "local"
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
    # Models on demand (backend/lifecycle.py fills these in; docs/on-demand.md).
    on_demand: bool = True
    idle_ttl_s: float | None = None  # as set; None: the backend's default
    effective_idle_ttl_s: float | None = None  # what applies now; None: never unloaded when idle
    pinned: bool = False
    #: Stopped (not failed) and on demand: a /v1 request for it starts it.
    loads_on_request: bool = False
    in_flight: int = 0
    last_request_at: str | None = None
    #: When the idle time-out unloads it if no request comes; None: no time-out, pinned, not ready, or busy.
    unload_at: str | None = None
    memory: MemoryNeed | None = None
    last_load: LifecycleEvent | None = None
    last_unload: LifecycleEvent | None = None
    last_eviction: LifecycleEvent | None = None


@dataclass(frozen=True)
class ContainerFacts:
    """What is known about one deployment's container beyond what Docker says.

    Attributes:
        ready: it answered its readiness probe since it last started.
        stopped_in_outage: it was running when the engine went away and was found stopped
            from that same start when it came back (Docker's shutdown stopped it).
        startup_timeout_s: how long its server may take to answer (settings, else its recipe).
    """

    container: ContainerInfo
    ready: bool = False
    stopped_in_outage: bool = False
    startup_timeout_s: float = 600.0


def launch_in_flight(launch: LaunchProgress | None) -> bool:
    return launch is not None and not launch.done


def launch_abandoned(c: ContainerInfo, launch: LaunchProgress | None, startup_timeout_s: float,
                     now: datetime) -> bool:
    """A server whose launch thread died (backend killed) and that never became ready in time.

    Its restart policy is still the launch-time "no" and no launch of it runs here; once it
    has run longer than its start-up timeout, nobody will ever declare it ready, so it is
    shown failed instead of "loading" forever.
    """
    if c.restart_policy not in ("", "no") or not c.started_at or launch_in_flight(launch):
        return False
    try:
        started = datetime.fromisoformat(c.started_at[:19]).replace(tzinfo=timezone.utc)
    except ValueError:
        return False
    return (now - started).total_seconds() > startup_timeout_s


def _launch_phase(launch: LaunchProgress | None) -> tuple[str, str]:
    """The status and message of a launch in flight: its last event ("queued" shows as "creating")."""
    last = launch.last if launch is not None else None
    if last is None:
        return "creating", ""
    return ("creating" if last.phase == "queued" else last.phase), last.message


def _container_status(facts: ContainerFacts, launch: LaunchProgress | None, now: datetime) -> tuple[str, str]:
    c = facts.container
    failed_launch = launch.last if launch is not None and launch.last and launch.last.phase == "failed" else None
    if launch_in_flight(launch):
        return _launch_phase(launch)
    if facts.ready:
        return "ready", "answering"
    if c.state == "running":
        if launch_abandoned(c, launch, facts.startup_timeout_s, now):
            return "failed", ABANDONED_MESSAGE
        return "loading", "running; waiting for the server to answer"
    if c.state == "restarting":
        return "restarting", f"crashed (exit code {c.exit_code}); Docker is restarting it"
    if c.state in ("exited", "dead"):
        if failed_launch is not None:  # the launch's own report says more than the exit code
            return "failed", failed_launch.message
        if c.oom_killed:
            return "failed", "killed: out of memory"
        if facts.stopped_in_outage:
            return "stopped", (f"stopped while the Docker engine was down (exit code {c.exit_code}): "
                               "the engine's shutdown stops running containers; start it again")
        if c.exit_code in STOP_EXIT_CODES:
            # 137 is also what `docker kill` leaves: say the code, so a kill is not hidden.
            return "stopped", "stopped" if not c.exit_code else f"stopped (exit code {c.exit_code})"
        return "failed", f"exited with code {c.exit_code}"
    if c.state == "created":
        # No launch of this process is creating it (that case is handled above): the launch
        # that created it failed or was interrupted (the backend was killed) before the
        # container started. It never ran, so it has no logs to keep.
        if failed_launch is not None:
            return "failed", failed_launch.message
        return "failed", "the launch was interrupted before the server started; remove it and launch again"
    if c.state == "paused":
        return "paused", "paused"
    return "unknown", c.state


def derive(dep_id: str, facts: ContainerFacts | None, launch: LaunchProgress | None, now: datetime) -> Deployment:
    """The deployment ``dep_id`` as the API shows it.

    Args:
        facts: its container and what is known about it; None while a launch has not
            created the container yet (or failed before it could).
        launch: its launch progress, in flight or ended, if this backend holds one.
        now: the present (UTC), against which an interrupted launch's start-up time is measured.
    """
    if facts is None:
        status, message = _launch_phase(launch)
        return Deployment(
            id=dep_id, name=f"modeldeck-{dep_id}", container_id=None, recipe=launch.recipe if launch else "",
            model=launch.model if launch else "", served_name=launch.served_name if launch else dep_id,
            image=launch.image if launch else "", status=status, ready=False, state="none", message=message,
            config_hash=launch.config_hash if launch else "")
    c = facts.container
    status, message = _container_status(facts, launch, now)
    labels = DeploymentLabels.decode(c.labels, dep_id)
    return Deployment(
        id=dep_id, name=c.name, container_id=c.id, recipe=labels.recipe, model=labels.model,
        served_name=labels.served_name, image=c.image, status=status, ready=facts.ready, state=c.state,
        message=message, host_port=c.host_port,
        endpoint=f"http://127.0.0.1:{c.host_port}{labels.openai_base}" if c.host_port else None,
        gpus=list(labels.gpus), exit_code=c.exit_code, oom_killed=c.oom_killed, restart_count=c.restart_count,
        created=c.created, started_at=c.started_at, finished_at=c.finished_at, config_hash=labels.config_hash)

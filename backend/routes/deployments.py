"""Deployments API: launch with progress, list, actions, logs, compose export, and the fit check."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from backend.compose import render_compose
from backend.kubernetes_export import check_options as check_export_options, render_kubernetes
from backend.run_command import docker_run_args, render_docker_run
from backend.deployments import Deployment
from backend.deps import CatalogDep, DeploymentsDep, SettingsDep, StatsDep
from backend import federation
from backend.errors import DeploymentNotFound, EngineUnavailable
from backend.fitcheck import estimate_memory, fit_verdict
from backend.labels import DeploymentLabels
from backend.launch_plan import LaunchRequest
from backend.launches import LaunchEvent
from backend.lifecycle import LifecycleEvents, LifecycleUpdate
from backend.spec import SECURITY_OPT, ContainerSpec
from backend.sse import event_stream, sse_event

router = APIRouter(prefix="/api", tags=["deployments"])


class LaunchAccepted(BaseModel):
    """The answer to a launch: follow ``events_url`` for progress."""

    id: str
    existing: bool
    deployment: Deployment
    events_url: str


class LogLines(BaseModel):
    id: str
    lines: list[str]


class PlannedMount(BaseModel):
    source: str
    target: str
    kind: str
    read_only: bool


class LaunchPlanAnswer(BaseModel):
    """The container a launch would create, exactly, and the same as a `docker run` command line.

    Secrets appear by name only (``secrets``, and ``-e NAME`` in the command line).
    """

    id: str
    name: str
    image: str
    entrypoint: list[str] | None
    command: list[str]
    environment: dict[str, str]
    secrets: list[str]
    mounts: list[PlannedMount]
    gpus: list[str]
    shm_size: str | None
    ipc: str | None
    ulimits: dict[str, int]
    init: bool
    security_opt: list[str]
    restart: str
    labels: dict[str, str]
    host_ip: str
    #: 0 when ``host_port_automatic``: Docker assigns a free port when the container starts.
    host_port: int
    host_port_automatic: bool
    internal_port: int
    docker_run: str
    docker_run_args: list[str]
    warnings: list[str]


def _plan_answer(spec: ContainerSpec, warnings: list[str], automatic_port: bool) -> LaunchPlanAnswer:
    return LaunchPlanAnswer(
        id=DeploymentLabels.decode(spec.labels).id, name=spec.name, image=spec.image,
        entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None, command=list(spec.command),
        environment={k: v for k, v in spec.environment.items() if k not in spec.secret_env},
        secrets=list(spec.secret_env),
        mounts=[PlannedMount(source=m.source, target=m.target, kind=m.kind, read_only=m.read_only)
                for m in spec.mounts],
        gpus=list(spec.gpu_ids), shm_size=spec.shm_size, ipc=spec.ipc_mode, ulimits=dict(spec.ulimits),
        init=True, security_opt=list(SECURITY_OPT),
        restart=f"no while launching, then on-failure:{spec.restart_max} once ready",
        labels=spec.labels, host_ip=spec.host_ip, host_port=spec.host_port, host_port_automatic=automatic_port,
        internal_port=spec.internal_port, docker_run=render_docker_run(spec), docker_run_args=docker_run_args(spec),
        warnings=warnings)


class FitCheckRequest(BaseModel):
    recipe: str
    model: str
    gpu: int | None = None
    args: list[str] = []


class FitCheckAnswer(BaseModel):
    level: str
    message: str
    bytes_needed: int | None
    basis: str
    gpu: int | None
    gpu_free_bytes: int | None
    gpu_total_bytes: int | None
    #: Host memory free now (within MODELDECK_HOST_MEMORY_BUDGET when set): where a CPU model would run.
    host_free_bytes: int | None = None


@router.get("/deployments", operation_id="listDeployments", summary="List deployments (from Docker's labelled containers)")
def list_deployments(deployments: DeploymentsDep, request: Request) -> list[Deployment]:
    """This machine's deployments, then every node's as it last answered (ids ``<id>@<node>``; actions on
    those go to the node)."""
    federation = getattr(request.app.state, "federation", None)
    remote = federation.deployments() if federation is not None else []
    try:
        return deployments.list() + remote
    except EngineUnavailable:
        if not remote:
            raise
        return remote  # a machine without Docker that drives nodes still lists theirs


@router.post("/deployments", status_code=202, operation_id="launchDeployment",
             summary="Launch a model from a catalog recipe; returns at once, progress on the events stream")
def launch(req: LaunchRequest, deployments: DeploymentsDep, response: Response, request: Request) -> LaunchAccepted:
    if req.node not in (None, "local"):  # another machine, or placement ("auto"): backend/federation.py
        placed = anyio.from_thread.run(federation.launch_elsewhere, request, req)
        if not isinstance(placed, LaunchRequest):
            response.status_code, answer = placed
            return LaunchAccepted.model_validate(answer)
        req = placed
    dep, lp = deployments.launch(req)
    existing = lp is None or lp.done
    if lp is None:
        response.status_code = 200
    return LaunchAccepted(id=dep.id, existing=existing, deployment=dep,
                          events_url=f"/api/deployments/{dep.id}/events")


@router.post("/deployments/plan", operation_id="planDeployment",
             summary="The exact container a launch would create, and its `docker run` command line; "
                     "creates and pulls nothing")
def plan_deployment(req: LaunchRequest, deployments: DeploymentsDep, request: Request) -> LaunchPlanAnswer:
    if req.node not in (None, "local"):  # planned by the node that would run it
        planned = anyio.from_thread.run(federation.plan_elsewhere, request, req)
        if not isinstance(planned, LaunchRequest):
            return LaunchPlanAnswer.model_validate(planned)
        req = planned
    spec, warnings = deployments.plan_launch(req)
    return _plan_answer(spec, warnings, automatic_port=req.port is None)


@router.get("/deployments/{dep_id}", operation_id="getDeployment", summary="One deployment")
def get_deployment(dep_id: str, deployments: DeploymentsDep) -> Deployment:
    return deployments.get(dep_id)


@router.get("/deployments/{dep_id}/events", operation_id="followLaunchEvents",
            summary="Launch progress as Server-Sent Events (replayed from the start, ends at ready or failed)",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "`event: progress` frames"}})
async def launch_events(dep_id: str, deployments: DeploymentsDep) -> EventSourceResponse:
    lp = deployments.launch_progress(dep_id)
    if lp is None:
        dep = await run_in_threadpool(deployments.get, dep_id)  # 404 when unknown

        async def once() -> AsyncIterator[ServerSentEvent]:
            phase = "ready" if dep.ready else ("failed" if dep.status == "failed" else dep.status)
            event = LaunchEvent(seq=0, time=0.0, deployment_id=dep_id,
                                phase=phase if phase in ("ready", "failed") else "loading",
                                message=dep.message or dep.status)
            yield sse_event("progress", event.model_dump_json())
        return event_stream(once())

    async def frames() -> AsyncIterator[ServerSentEvent]:
        async for event in lp.follow():
            yield sse_event("progress", event.model_dump_json())
    return event_stream(frames())


@router.patch("/deployments/{dep_id}", operation_id="updateDeployment",
              summary="Change a deployment's on-demand settings: on_demand, idle_ttl_s, pinned (kept across restarts)",
              responses={404: {"description": "No deployment has this id."},
                         422: {"description": "A value is out of range, or no field was given."}})
def update_deployment(dep_id: str, change: LifecycleUpdate, deployments: DeploymentsDep) -> Deployment:
    return deployments.update_lifecycle(dep_id, change)


@router.get("/lifecycle", operation_id="listLifecycleEvents",
            summary="Loads, failed loads, unloads and evictions of deployments, with why, oldest first")
def list_lifecycle_events(deployments: DeploymentsDep, after: Annotated[int, Query(ge=0)] = 0,
                          limit: Annotated[int, Query(ge=1, le=500)] = 500) -> LifecycleEvents:
    return deployments.lifecycle_events(after, limit)


@router.post("/deployments/{dep_id}/stop", operation_id="stopDeployment", summary="Stop a deployment (keeps it)")
def stop(dep_id: str, deployments: DeploymentsDep) -> Deployment:
    return deployments.stop(dep_id)


@router.post("/deployments/{dep_id}/start", operation_id="startDeployment",
             summary="Start a stopped deployment (making room first: 409 does_not_fit names who holds the memory)")
def start(dep_id: str, deployments: DeploymentsDep) -> Deployment:
    return deployments.start(dep_id)


@router.post("/deployments/{dep_id}/restart", operation_id="restartDeployment", summary="Restart a deployment")
def restart(dep_id: str, deployments: DeploymentsDep) -> Deployment:
    return deployments.restart(dep_id)


@router.delete("/deployments/{dep_id}", status_code=204, operation_id="removeDeployment",
               summary="Remove a deployment's container (model caches stay)")
def remove(dep_id: str, deployments: DeploymentsDep) -> Response:
    deployments.remove(dep_id)
    return Response(status_code=204)


@router.get("/deployments/{dep_id}/logs", operation_id="getDeploymentLogs",
            summary="The container's log: the last lines, or with follow=true a live Server-Sent Events stream",
            response_model=LogLines,
            responses={200: {"content": {"text/event-stream": {}}, "description": "with follow=true: `event: log`"}})
async def logs(dep_id: str, deployments: DeploymentsDep,
               tail: Annotated[int, Query(ge=0, le=10000)] = 200, follow: bool = False):
    if not follow:
        lines = await run_in_threadpool(deployments.logs, dep_id, tail)
        return LogLines(id=dep_id, lines=lines)
    lines = await deployments.follow_logs(dep_id, tail)  # 404 now, before the stream starts
    return event_stream(_log_frames(lines))


async def _log_frames(lines: AsyncIterator[str]) -> AsyncIterator[ServerSentEvent]:
    """``event: log`` per line, then ``event: end`` when the container's stream ends."""
    try:
        async for line in lines:
            yield sse_event("log", json.dumps({"line": line}))
        yield sse_event("end", "{}")
    finally:
        await lines.aclose()  # closes the engine's stream when the client leaves


@router.get("/deployments/{dep_id}/compose", operation_id="exportCompose", response_class=PlainTextResponse,
            summary="A docker-compose.yml that reproduces this deployment outside ModelDeck (secrets as ${NAME})")
def compose(dep_id: str, deployments: DeploymentsDep) -> PlainTextResponse:
    text = render_compose(deployments.spec(dep_id))
    return PlainTextResponse(text, media_type="application/yaml", headers={
        "Content-Disposition": f'attachment; filename="{dep_id}-docker-compose.yml"'})


@router.get("/deployments/{dep_id}/kubernetes", operation_id="exportKubernetes", response_class=PlainTextResponse,
            summary="Kubernetes manifests for this deployment: Deployment, Service, a PersistentVolumeClaim per model "
                    "cache (secrets by reference to a Secret you create)",
            responses={200: {"content": {"text/yaml": {}}, "description": "Multi-document YAML"},
                       404: {"description": "No deployment has this id."},
                       422: {"description": "namespace, storage_class or cache_size is not one Kubernetes accepts."}})
def kubernetes(dep_id: str, deployments: DeploymentsDep, catalog: CatalogDep,
               namespace: Annotated[str, Query(max_length=63, description="Namespace of every object")] = "default",
               storage_class: Annotated[str, Query(max_length=253, description="StorageClass of the claims; "
                                                   "empty: the cluster's default")] = "",
               cache_size: Annotated[str, Query(max_length=32, description="Size each cache claim requests")] = "50Gi",
               ) -> PlainTextResponse:
    check_export_options(namespace, storage_class, cache_size)  # 422 before anything is looked up
    spec = deployments.spec(dep_id)
    recipe_name = DeploymentLabels.decode(spec.labels).recipe
    text = render_kubernetes(spec, catalog.recipes.get(recipe_name), namespace=namespace,
                             storage_class=storage_class or None, cache_size=cache_size)
    return PlainTextResponse(text, media_type="text/yaml", headers={
        "Content-Disposition": f'attachment; filename="{dep_id}-kubernetes.yaml"'})


@router.post("/fit-check", operation_id="fitCheck",
             summary="Estimate the GPU memory a model needs and compare it with what is free now")
def fit_check(body: FitCheckRequest, catalog: CatalogDep, settings: SettingsDep, stats: StatsDep) -> FitCheckAnswer:
    recipe = catalog.get(body.recipe)
    estimate = estimate_memory(recipe, body.model, settings)
    free = total = None
    snap = stats.latest() if stats is not None else None
    gpus = list(snap.gpus) if snap is not None else []
    gpu = next((g for g in gpus if g.index == body.gpu), gpus[0] if gpus and body.gpu is None else None)
    if body.gpu is not None and gpu is None:
        raise DeploymentNotFound(f"No GPU {body.gpu} on this machine.", hint="Pick one of the GPUs listed by /api/engine.")
    if gpu is not None:
        total = gpu.memory_total_bytes
        free = (gpu.memory_total_bytes - gpu.memory_used_bytes) if gpu.memory_total_bytes is not None else None
    verdict = fit_verdict(estimate, free, total, recipe, args=body.args)
    host_free = snap.host.mem_available_bytes if snap is not None else None
    if settings.host_memory_budget:
        host_free = min(host_free, settings.host_memory_budget) if host_free is not None else settings.host_memory_budget
    return FitCheckAnswer(level=verdict.level, message=verdict.message, bytes_needed=estimate.bytes_needed,
                          basis=estimate.basis, gpu=gpu.index if gpu else None, gpu_free_bytes=free,
                          gpu_total_bytes=total, host_free_bytes=host_free)

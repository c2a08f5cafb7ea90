"""Health, engine status with GPUs, and the runtime catalog."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from backend import __version__
from backend.catalog import Recipe
from backend.deps import CatalogDep, DeploymentsDep, EngineDep, HistoryDep, StatsDep

router = APIRouter(prefix="/api", tags=["system"])


class Health(BaseModel):
    status: str
    version: str


class GpuInfo(BaseModel):
    index: int
    name: str | None
    uuid: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None


class EngineStatusOut(BaseModel):
    """The Docker engine, and the GPUs the backend sees through NVML."""

    reachable: bool
    endpoint: str
    kind: str | None
    version: str | None
    api_version: str | None
    os: str | None
    runtimes: list[str]
    gpu_runtime: bool
    cdi_devices: list[str]
    cpus: int | None
    memory_bytes: int | None
    reason: str | None
    hint: str | None
    gpus: list[GpuInfo]
    gpu_available: bool
    gpu_reason: str | None
    # Set when the history database was unreadable at start: where it was moved aside
    # (a fresh, empty one took its place).
    history_recovered_from: str | None = None


class RecipeOut(BaseModel):
    """A runtime of the catalog, as the launch dialog needs it."""

    name: str | None
    title: str
    description: str
    homepage: str | None
    image: str | None
    gpu_image: str | None
    built_locally: bool
    gpu_need: str
    port: int
    default_model: str | None
    default_served_name: str | None
    served_name_is_model: bool
    secrets: list[str]
    caches: list[str]
    #: APIs the runtime's server answers itself beside chat completions (``anthropic_messages``,
    #: ``openai_responses``): where ``/v1/messages`` is passed through and ``/v1/responses`` is served.
    native_apis: list[str] = []

    @classmethod
    def of(cls, r: Recipe) -> "RecipeOut":
        return cls(name=r.name, title=r.title, description=r.description, homepage=r.homepage,
                   image=r.image.ref, gpu_image=r.image.gpu_ref, built_locally=r.image.build is not None,
                   gpu_need=r.gpu.need.value, port=r.server.port, default_model=r.defaults.model,
                   default_served_name=r.defaults.served_name, served_name_is_model=r.server.served_name_is_model,
                   secrets=list(r.env.secrets), caches=[c.kind for c in r.caches],
                   native_apis=list(r.server.native_apis))


class CatalogOut(BaseModel):
    recipes: list[RecipeOut]
    errors: dict[str, str]


@router.get("/health", operation_id="health", summary="Liveness check (no token needed)")
async def health() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/engine", operation_id="engineStatus",
            summary="Docker engine status (reachable, version, GPU runtime) and the GPUs present")
def engine_status(engine: EngineDep, stats: StatsDep, deployments: DeploymentsDep,
                  history: HistoryDep) -> EngineStatusOut:
    st = engine.status()
    deployments.engine_up = st.reachable
    snap = stats.latest() if stats is not None else None
    gpus = [GpuInfo(index=g.index, name=g.name, uuid=g.uuid, memory_total_bytes=g.memory_total_bytes,
                    memory_used_bytes=g.memory_used_bytes,
                    memory_free_bytes=(g.memory_total_bytes - g.memory_used_bytes)
                    if g.memory_total_bytes is not None and g.memory_used_bytes is not None else None)
            for g in (snap.gpus if snap else [])]
    return EngineStatusOut(
        reachable=st.reachable, endpoint=st.endpoint, kind=st.kind, version=st.version, api_version=st.api_version,
        os=st.os, runtimes=list(st.runtimes), gpu_runtime=st.gpu_runtime, cdi_devices=list(st.cdi_devices),
        cpus=st.cpus, memory_bytes=st.memory_bytes, reason=st.reason, hint=st.hint, gpus=gpus,
        gpu_available=bool(snap and snap.gpu_status.available),
        gpu_reason=snap.gpu_status.reason if snap else "stats not sampled yet",
        history_recovered_from=str(history.recovered_from) if history.recovered_from else None)


@router.get("/catalog", operation_id="listRecipes", summary="The runtime catalog, and recipe files that were refused")
def catalog(catalog: CatalogDep) -> CatalogOut:
    return CatalogOut(recipes=[RecipeOut.of(r) for r in catalog.recipes.values()], errors=catalog.errors)


@router.get("/catalog/{name}", operation_id="getRecipe", summary="One runtime recipe")
def recipe(name: str, catalog: CatalogDep) -> RecipeOut:
    return RecipeOut.of(catalog.get(name))

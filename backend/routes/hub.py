"""Hub routes: search the Hugging Face Hub, and a model's page with its variants and whether each fits now."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query

from backend.deps import CatalogDep, SettingsDep, StatsDep
from backend.hub import (HUB_DEADLINE_S, HubClient, HubModelDetail, HubSearchAnswer, HubUnreachable, check_repo_id,
                         check_revision, fit_variant, gpus_from_snapshot, host_available, variant_downloaded)

router = APIRouter(prefix="/api/hub", tags=["hub"])
T = TypeVar("T")

_ERRORS = {
    403: {"description": "A gated model the saved token may not read (hub_gated), or a token the Hub refused"},
    404: {"description": "No such repository or revision on the Hub"},
    422: {"description": "A bad repo id, revision or query; or a repository with no GGUF or safetensors weights "
                         "(hub_not_servable)"},
    502: {"description": "The Hub did not answer in time, or answered with an error (hub_unreachable)"},
}


async def _off_loop(client: HubClient, call: Callable[..., T], *args) -> T:
    """``call(*args)`` in a worker thread (huggingface_hub blocks), within ``HUB_DEADLINE_S``.

    Each HTTP call also has its own timeout; the deadline bounds a page that makes several.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(call, *args), HUB_DEADLINE_S)
    except TimeoutError:
        raise HubUnreachable(f"The Hugging Face Hub at {client.endpoint} did not answer within {HUB_DEADLINE_S:.0f} s.",
                             hint="Check the network connection (and HF_ENDPOINT / MODELDECK_HF_ENDPOINT if you set "
                                  "one), then try again.") from None


@router.get("/search", operation_id="searchHub", response_model=HubSearchAnswer, responses=_ERRORS,
            summary="Search the Hugging Face Hub for models by text, task and format")
async def search_hub(
    settings: SettingsDep,
    q: Annotated[str | None, Query(max_length=200, description="text the repo id contains")] = None,
    task: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9\-]{0,63}$",
                                      description="a pipeline tag, e.g. text-generation")] = None,
    format: Annotated[Literal["gguf", "safetensors"] | None, Query(description="weights format")] = None,
    sort: Literal["downloads", "likes", "updated"] = "downloads",
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
) -> HubSearchAnswer:
    """Repositories, most downloaded (or liked, or recently updated) first: downloads, likes, licence,
    whether it is gated, last update and the formats it has."""
    client = HubClient(settings)
    results = await _off_loop(client, client.search, q or None, task, format, sort, limit)
    return HubSearchAnswer(results=results, endpoint=client.endpoint)


@router.get("/models/{repo_id:path}", operation_id="getHubModel", response_model=HubModelDetail, responses=_ERRORS,
            summary="A model's variants (quantizations, shard sets) with sizes, runtimes, launch and fit now")
async def get_hub_model(
    settings: SettingsDep,
    catalog: CatalogDep,
    stats: StatsDep,
    repo_id: Annotated[str, Path(max_length=300, description="namespace/name")],
    revision: Annotated[str, Query(max_length=200)] = "main",
) -> HubModelDetail:
    """The repository at ``revision``, its variants and, per variant, a verdict per GPU and for the CPU
    from the launch memory model (backend/fitcheck.py) against the memory free now."""
    check_repo_id(repo_id)
    check_revision(revision)
    client = HubClient(settings)
    detail = await _off_loop(client, client.model, repo_id, revision, catalog)
    snapshot = stats.latest() if stats is not None else None
    gpus = gpus_from_snapshot(snapshot)
    host = host_available(snapshot)
    for variant in detail.variants:
        recipe = catalog.recipes.get(variant.launch.recipe)
        variant.fit = fit_variant(variant, recipe, gpus, host)
        variant.downloaded = variant_downloaded(settings, repo_id, detail.revision, variant)
    return detail


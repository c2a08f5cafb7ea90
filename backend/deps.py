"""FastAPI dependencies: the long-lived objects built by the app's lifespan, as Annotated aliases.

They are typed ``Any`` because FastAPI resolves annotations at import time and the
objects' classes import heavy modules (docker, sqlite, NVML); each alias names what it
hands out: settings, catalog, engine, deployments, http (the shared httpx.AsyncClient),
history, stats, request_log, upstreams.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request


def _state(name: str):
    # async: a plain attribute read; a sync dependency would cost a thread-pool hop per request.
    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)
    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Any, Depends(_state("settings"))]
CatalogDep = Annotated[Any, Depends(_state("catalog"))]
HistoryDep = Annotated[Any, Depends(_state("history"))]
HttpClientDep = Annotated[Any, Depends(_state("http"))]
RequestLogDep = Annotated[Any, Depends(_state("request_log"))]
EngineDep = Annotated[Any, Depends(_state("engine"))]
DeploymentsDep = Annotated[Any, Depends(_state("deployments"))]
StatsDep = Annotated[Any, Depends(_state("stats"))]
UpstreamsDep = Annotated[Any, Depends(_state("upstreams"))]

"""FastAPI dependencies: the long-lived objects built by the app's lifespan, as Annotated aliases.

Each alias hands out what ``create_app``'s lifespan put on ``app.state``, typed with its
class, so a route's signature says what it gets and a type checker sees the calls.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, Request

from backend.catalog import Catalog
from backend.deployments import DeploymentService
from backend.engine import Engine
from backend.history import HistoryStore
from backend.metrics import RequestLog
from backend.proxy import UpstreamDirectory
from backend.settings import Settings
from backend.stats.sampler import StatsSampler
from backend.suite_runner import SuiteRunner
from backend.suites import SuiteStore


def _state(name: str):
    # async: a plain attribute read; a sync dependency would cost a thread-pool hop per request.
    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)
    get.__name__ = f"get_{name}"
    return get


SettingsDep = Annotated[Settings, Depends(_state("settings"))]
CatalogDep = Annotated[Catalog, Depends(_state("catalog"))]
HistoryDep = Annotated[HistoryStore, Depends(_state("history"))]
SuitesDep = Annotated[SuiteStore, Depends(_state("suites"))]
SuiteRunsDep = Annotated[SuiteRunner, Depends(_state("suite_runs"))]
HttpClientDep = Annotated[httpx.AsyncClient, Depends(_state("http"))]
RequestLogDep = Annotated[RequestLog, Depends(_state("request_log"))]
EngineDep = Annotated[Engine, Depends(_state("engine"))]
DeploymentsDep = Annotated[DeploymentService, Depends(_state("deployments"))]
StatsDep = Annotated[StatsSampler, Depends(_state("stats"))]
#: The proxy's view of what is deployed: the deployments registry.
UpstreamsDep = Annotated[UpstreamDirectory, Depends(_state("upstreams"))]

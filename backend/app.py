"""The app factory: builds the long-lived objects once, wires routers, errors, security and offline docs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from backend import __version__
from backend.catalog import load_catalog
from backend.deployments import DeploymentService
from backend.downloads import DownloadManager
from backend.library import Library
from backend.engine import Engine
from backend import federation
from backend.errors import Flavour, ModelDeckError, domain_error_response, error_response
from backend.history import HistoryStore
from backend.metrics import RequestLog
from backend.nodes import NodeManager
from backend.prometheus import Exposition, LifecycleCollector
from backend.proxy import make_http_client
from backend.routes import anthropic as anthropic_routes
from backend.routes import deployments as deployments_routes
from backend.routes import downloads as downloads_routes
from backend.routes import library as library_routes
from backend.routes import nodes as nodes_routes
from backend.routes import history as history_routes
from backend.routes import hub as hub_routes
from backend.routes import openai as openai_routes
from backend.routes import responses as responses_routes
from backend.routes import runs as runs_routes
from backend.routes import setup as setup_routes
from backend.routes import stats as stats_routes
from backend.routes import suites as suites_routes
from backend.routes import system as system_routes
from backend.security import FrontDoor, SecurityMiddleware, ensure_token
from backend.settings import Settings, get_settings
from backend.stats.sampler import StatsSampler
from backend.suite_runner import SuiteRunner
from backend.suite_runs import RunStore
from backend.suites import SuiteStore

log = logging.getLogger("modeldeck")
REFRESH_INTERVAL_S = 1.5
DESCRIPTION = """\
The control API of ModelDeck: launch model servers from catalog recipes as Docker containers,
follow their progress, read their logs, watch GPU/CPU/memory, and use every ready model through
one OpenAI-compatible endpoint at `/v1`.

Every route except `GET /api/health` needs `Authorization: Bearer <token>`; the token is in the
file `token` in ModelDeck's folder (readable by you only).
"""


def _install_error_handlers(app: FastAPI) -> None:
    """Map domain errors to HTTP in one place; backend.errors chooses the shape from the path.

    /v1's HTTP and validation errors are OpenAI-specific (registered after these).
    """

    @app.exception_handler(ModelDeckError)
    async def on_domain_error(request: Request, exc: ModelDeckError) -> Response:
        return domain_error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid').removeprefix('Value error, ')}")
        return error_response(Flavour.MODELDECK, 422, "invalid_request",
                              "The request is not valid: " + "; ".join(problems),
                              "Fix the named fields and send it again; /docs shows every field.",
                              {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        hint = "See /docs for the routes this API has." if exc.status_code in (404, 405) else None
        return error_response(Flavour.MODELDECK, exc.status_code, f"http_{exc.status_code}", str(exc.detail),
                              hint, {})

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(Flavour.MODELDECK, 500, "internal_error",
                              f"Unexpected error: {type(exc).__name__}: {exc}",
                              "This is a bug in ModelDeck; the backend log has the details.", {})

    openai_routes.install_openai_error_handlers(app)


def _install_docs(app: FastAPI) -> None:
    """Swagger UI from the installed swagger-ui-bundle package, inlined: /docs works offline.

    The page is protected like every route (open it as ``/docs?token=<token>``); its script
    reads the token from its own address and sends it as a bearer header with every request,
    so the assets are inlined rather than served as separate, token-guarded files.
    """
    from swagger_ui_bundle import swagger_ui_path

    page: list[str] = []

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if not page:
            js = (swagger_ui_path / "swagger-ui-bundle.js").read_text(encoding="utf-8")
            css = (swagger_ui_path / "swagger-ui.css").read_text(encoding="utf-8")
            page.append(DOCS_PAGE.replace("/*CSS*/", css).replace("/*JS*/", js.replace("</script", "<\\/script")))
        return HTMLResponse(page[0])


DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ModelDeck API</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>/*CSS*/</style></head>
<body><div id="swagger-ui"></div><script>/*JS*/</script>
<script>
const token = new URLSearchParams(window.location.search).get("token") || "";
window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, persistAuthorization: true,
  requestInterceptor: (req) => { if (token) { req.headers["Authorization"] = "Bearer " + token; } return req; },
});
</script></body></html>
"""


async def _refresh_forever(service: DeploymentService) -> None:
    """The one loop that keeps the deployments registry (and so lists, /v1 routing and the stats)
    in step with Docker; readers never call Docker themselves."""
    while True:
        try:
            await asyncio.to_thread(service.refresh)
        except Exception:  # noqa: BLE001 - the loop must outlive any one failure
            log.exception("refreshing deployments failed")
        await asyncio.sleep(REFRESH_INTERVAL_S)


class _LazyMcp:
    """``/mcp``, loaded by its first request.

    The MCP SDK takes about half a second to import, which every backend start would pay (the
    desktop's first window waits for its backend; every test starts several) for an endpoint
    most sessions never call. The first request imports it off the event loop and starts the
    SDK's session manager in a task of its own, which also ends it at shutdown: an anyio task
    group must be left by the task that entered it, never by a request's.
    """

    def __init__(self, token: str):
        self._token = token
        self._ready: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def _serve(self, ready: asyncio.Future) -> None:
        try:
            module = await asyncio.to_thread(importlib.import_module, "backend.mcp_server")
            endpoint = module.McpEndpoint(self._token)
            async with endpoint.lifespan():
                ready.set_result(endpoint)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    async def __call__(self, scope, receive, send) -> None:
        if self._task is None or (self._task.done() and not self._stop.is_set()):  # first use, or it failed
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._serve(self._ready), name="mcp-session-manager")
        endpoint = await asyncio.shield(self._ready)
        await endpoint(scope, receive, send)

    async def aclose(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await self._task


def create_app(settings: Settings | None = None, *, engine: Engine | None = None, nvml=None) -> FastAPI:
    """Build the backend app.

    Args:
        settings: what to use instead of the environment's settings.
        engine: an Engine to use instead of connecting from settings (tests share one).
        nvml: a pynvml-like object for the stats sampler instead of the real NVML (tests without a GPU).
    """
    settings = settings or get_settings()
    token = settings.token or ensure_token(settings.token_path)
    mcp = _LazyMcp(token)  # /mcp: the MCP tools on Streamable HTTP, behind the same SecurityMiddleware

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.home.mkdir(parents=True, exist_ok=True)
        app.state.settings = settings
        app.state.catalog = catalog = load_catalog(settings.catalog_dir)
        for name, err in catalog.errors.items():
            log.warning("recipe refused: %s", err)
        app.state.engine = eng = engine or Engine(settings.docker_host)
        app.state.deployments = service = DeploymentService(eng, catalog, settings)
        app.state.upstreams = service.registry  # the proxy's directory: the registry's cache
        app.state.http = make_http_client()
        app.state.request_log = request_log = RequestLog()
        app.state.history = history = HistoryStore(settings.history_path)
        if history.recovered_from is not None:
            log.warning("history database was unreadable; moved aside to %s and started a fresh one",
                        history.recovered_from)
        # Prompt suites and their runs share one SQLite file beside the history.
        app.state.suites = suites = SuiteStore(settings.home / "suites.db")
        app.state.stats = sampler = StatsSampler(container_source=service.registry.container_refs, request_log=request_log,
                                                 data_path=settings.home, nvml=nvml)
        # Models on demand measure what each deployment holds from the sampler's snapshots (backend/lifecycle.py).
        service.lifecycle.snapshot = sampler.latest
        app.state.prometheus = Exposition(sampler.latest, extra=LifecycleCollector(service.lifecycle.metrics))
        # "All GPUs" becomes a count ({gpu_count}: TGI's --num-shard) from the GPUs NVML sees.
        service.machine_gpus = lambda: len(snap.gpus) if (snap := sampler.latest()) is not None and snap.gpus else None
        # Suite runs: their cells in the same file, answered through this backend's own /v1.
        app.state.suite_runs = runner = SuiteRunner(
            RunStore(settings.home / "suites.db"), service, token, settings.host, settings.port, snapshot=sampler.latest)
        await asyncio.to_thread(service.refresh)
        # Model downloads: jobs a stopped backend left resume now (backend/downloads.py).
        app.state.downloads = downloads = DownloadManager(settings, eng)
        await asyncio.to_thread(downloads.open)
        # What is on disk (backend/library.py): reads caches, and deployments for what uses them.
        app.state.library = Library(settings, eng, service.list, downloads.helper_image, lambda: downloads.generation)
        sampler.start()
        runner.open()  # resumes the runs a stopped backend left
        refresher = asyncio.create_task(_refresh_forever(service), name="deployments-refresh")
        # Other machines (backend/federation.py): their deployments listed, their models routed by /v1.
        app.state.federation = fed = federation.Federation(app.state)
        service.registry.remote = fed.models
        poller = asyncio.create_task(fed.run(), name="nodes-federation")
        # Other machines' backends over SSH tunnels or TLS (backend/nodes.py): reconnect in the background.
        app.state.nodes = nodes = NodeManager(settings.home)
        await nodes.start()
        try:
            yield
        finally:
            await mcp.aclose()
            plane = getattr(app.state, "data_plane", None)
            if plane is not None:
                plane.close()
            await nodes.close()
            await asyncio.to_thread(downloads.close)
            refresher.cancel()
            poller.cancel()
            await runner.close()
            runner.store.close()
            sampler.stop()
            await app.state.http.aclose()
            history.close()
            suites.close()
            service.close()
            if engine is None:
                eng.close()

    app = FastAPI(title="ModelDeck", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.include_router(federation.router)  # before the deployments routes: it takes the ids '<id>@<node>'
    for module in (system_routes, setup_routes, deployments_routes, stats_routes, history_routes, suites_routes,
                   runs_routes, downloads_routes, library_routes, openai_routes, responses_routes, anthropic_routes):
        app.include_router(module.router)
    app.include_router(hub_routes.router)
    app.include_router(nodes_routes.router)
    _install_error_handlers(app)
    _install_docs(app)
    app.router.routes.append(Route("/mcp", endpoint=mcp, include_in_schema=False))
    # One set of checks for the middleware and the /v1 data plane (backend/dataplane.py), which serves the
    # hot routes below the ASGI stack and hands everything else, refusals included, to this app.
    app.state.front_door = door = FrontDoor(token=token, max_body_bytes=settings.max_body_bytes,
                                            token_hint=str(settings.token_path))
    app.add_middleware(SecurityMiddleware, door=door)
    return app

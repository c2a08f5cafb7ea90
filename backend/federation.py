"""Federation: the deployments and models of other machines' ModelDeck backends (nodes), as part of this one.

A node is another machine's ``modeldeck-backend``, reached through ``app.state.nodes`` (``backend/nodes.py``:
a tunnel whose local end is ``base_url(name)``, and the node's own token). What this module adds:

- **One cache per node, filled by one loop** (``Federation.run``): every ``POLL_INTERVAL_S`` each node's
  ``GET /api/deployments`` and ``GET /v1/models`` are asked concurrently, each bounded by ``POLL_TIMEOUT_S``.
  Readers (the deployments list, ``/v1`` routing) read the last answer and never wait for a node, so a node
  that went away slows nothing down: its deployments are listed as last seen, marked ``unreachable``.
  Each round replaces a node's whole answer, so when it comes back its deployments are the node's own again
  (the same ids, nothing duplicated: the node's Docker labels are the record, as after a backend restart).
- **Ids ``<id>@<node>``**: a local id never holds ``@`` (it is a slug of the served name), so the id alone
  says where a deployment lives. Actions on such an id go to the node's API (``router``: one route,
  matched before the local ones, for every path under ``/api/deployments/<id>@<node>``).
- **``/v1`` routing** (``RemoteModels``): the registry asks it only for a model no local deployment serves,
  so a local model's request pays nothing. A remote upstream is an ``Upstream`` whose base URL is the
  tunnel plus ``/v1`` and whose headers carry the node's token; ``proxy.forward`` relays it byte for byte
  as it does a local server. The node's backend does the rest (on-demand loads, the Messages translation).
- **Placement** (``candidates``/``choose``): each machine's own fit check (``POST /api/fit-check``) on its
  live figures; the most free memory that fits wins, ties to this machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import JSONResponse, Response, StreamingResponse

from backend.deployment_status import Deployment
from backend.errors import ModelDeckError
from backend.launch_plan import LaunchRequest
from backend.proxy import Upstream

log = logging.getLogger(__name__)

LOCAL = "local"
AUTO = "auto"
POLL_INTERVAL_S = 2.0
POLL_TIMEOUT_S = 5.0
#: A node's action (stop, a launch's answer) may take as long as the node's Docker does.
ACTION_TIMEOUT_S = 120.0
#: A remote backend answers every /v1 API itself (passing through or translating), so the local
#: proxy never translates for it: the node's own catalog decides.
REMOTE_APIS = frozenset({"anthropic_messages", "openai_responses"})
#: The headers of a node's answer passed on to the client.
_PASSED_HEADERS = ("content-type", "content-disposition", "retry-after", "cache-control")


class NodeMissing(ModelDeckError):
    """No node has this name."""

    status = 404
    code = "node_not_found"


class NodeOffline(ModelDeckError):
    """The node is known but cannot be reached now (its deployments are shown as last seen)."""

    status = 503
    code = "node_unreachable"


class NoPlacement(ModelDeckError):
    """``node: "auto"`` found no machine where the model fits."""

    status = 409
    code = "does_not_fit"


# -- ids ---------------------------------------------------------------------------------------


def split_id(dep_id: str) -> tuple[str, str] | None:
    """``("demo", "gpu1")`` for ``"demo@gpu1"``; None for a local id (no ``@``)."""
    remote, sep, node = dep_id.rpartition("@")
    return (remote, node) if sep and remote and node else None


def remote_id(dep_id: str, node: str) -> str:
    return f"{dep_id}@{node}"


class RemoteIdConvertor(Convertor):
    """A path segment ``<id>@<node>``: only such ids reach the federation's routes; local ones fall through."""

    regex = r"[^/@]+@[a-z0-9][a-z0-9-]{0,31}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("remote", RemoteIdConvertor())


# -- the cache of each node's answers -------------------------------------------------------------


@dataclass
class NodeView:
    """What one node answered last. Replaced whole by each poll, never changed in place."""

    name: str
    reachable: bool = False
    error: str | None = None
    deployments: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    seen_at: float | None = None  # time.time() of the last answer


def remote_deployment(raw: dict, view: NodeView) -> Deployment | None:
    """The node's own deployment answer as listed here: id ``<id>@<node>``, ``node`` set; as last seen and
    ``unreachable`` while the node does not answer. None for an answer this version cannot read."""
    try:
        dep = Deployment.model_validate({**raw, "id": remote_id(str(raw.get("id")), view.name), "node": view.name,
                                         # The node's loopback address means nothing on this machine.
                                         "endpoint": None})
    except ValidationError as exc:
        log.warning("node %s listed a deployment this backend cannot read: %s", view.name, exc)
        return None
    if view.reachable:
        return dep
    why = f"Node '{view.name}' cannot be reached: {view.error or 'no answer'}. This is its last answer" + (
        f", {time.time() - view.seen_at:.0f} s ago." if view.seen_at else ".")
    return dep.model_copy(update={"status": "unreachable", "ready": False, "stale": True, "engine_error": why,
                                  "message": f"node '{view.name}' unreachable"})


def remote_upstreams(views: list[NodeView], base_url: dict[str, str | None], token: dict[str, str | None],
                     clients: dict[str, Any] | None = None) -> tuple[dict[str, Upstream], list[tuple[Upstream, str]]]:
    """Pure: the nodes' models, by served name (the first node in ``views`` order wins a name), and what
    ``/v1/models`` lists (model, state) in that order.

    A model on a reachable node is routed whatever its state there (``ready`` here): the node's own proxy
    loads an unloaded one or answers why it cannot. On an unreachable node it is not ready, with why.
    ``clients``: a node's own client for /v1 where the shared one cannot reach it (TLS: its client certificate).
    """
    by_name: dict[str, Upstream] = {}
    listed: list[tuple[Upstream, str]] = []
    for view in views:
        url, tok = base_url.get(view.name), token.get(view.name)
        online = view.reachable and bool(url)
        headers = (("Authorization", f"Bearer {tok}"),) if tok else ()
        for card in view.models:
            name, dep = card.get("id"), card.get("deployment_id")
            if not isinstance(name, str) or not isinstance(dep, str) or name in by_name:
                continue
            state = card.get("state") if card.get("state") in ("ready", "unloaded", "loading") else "ready"
            up = Upstream(deployment_id=remote_id(dep, view.name), served_name=name,
                          base_url=f"{url}/v1" if url else "", ready=online,
                          state=state if online else "unreachable", native_apis=REMOTE_APIS,
                          node=view.name, headers=headers, client=(clients or {}).get(view.name),
                          unreachable=None if online else (view.error or "it does not answer"))
            by_name[name] = up
            listed.append((up, state))
    return by_name, listed


class RemoteModels:
    """The registry's ``remote``: the nodes' models, answered from the last poll (no I/O, no lock: the
    two structures are replaced whole)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Upstream] = {}
        self._listed: list[tuple[Upstream, str]] = []
        self.version = 0  # bumped by each ``set`` (the registry's ``version`` includes it)

    def set(self, by_name: dict[str, Upstream], listed: list[tuple[Upstream, str]]) -> None:
        if listed != self._listed or by_name != self._by_name:
            self.version += 1
        self._by_name, self._listed = by_name, listed

    def lookup(self, model: str) -> Upstream | None:
        return self._by_name.get(model)

    def ready_models(self) -> list[Upstream]:
        return [u for u, _ in self._listed if u.ready]

    def listed_models(self) -> list[tuple[Upstream, str]]:
        """Reachable nodes' models only: one on an unreachable node would not answer."""
        return [(u, s) for u, s in self._listed if u.ready]


# -- placement ------------------------------------------------------------------------------------


class PlacementCandidate(BaseModel):
    """One machine (and GPU) a model could be launched on, by that machine's own fit check now."""

    node: str
    gpu: str | None = None
    #: Memory free now where it would run: the GPU's, or the host's (within MODELDECK_HOST_MEMORY_BUDGET)
    #: for a model on the CPU; None when unknown.
    free_bytes: int | None = None
    need_bytes: int | None = None
    #: The fit check's "ok", "warn", "too_big", "unknown"; or "unreachable" (the node did not answer) and
    #: "refused" (the node cannot launch it: ``message`` says why).
    level: str
    message: str


class Placement(BaseModel):
    candidates: list[PlacementCandidate]
    #: Where ``node: "auto"`` launches; None when it fits nowhere.
    chosen: PlacementCandidate | None


def choose(candidates: list[PlacementCandidate]) -> PlacementCandidate | None:
    """Pure: the candidate that fits ("ok" or "warn") with the most memory free; ties go to the earlier
    one (local comes first). When no fit check could tell ("unknown"), the most free of those; never one
    that is too big or unreachable."""
    for levels in (("ok", "warn"), ("unknown",)):
        fits = [c for c in candidates if c.level in levels]
        if fits:
            best = fits[0]
            for c in fits[1:]:
                if (c.free_bytes or -1) > (best.free_bytes or -1):
                    best = c
            return best
    return None


def candidate_from(node: str, answer: dict) -> PlacementCandidate:
    """Pure: a fit check's answer (``FitCheckAnswer``) as a candidate on ``node``."""
    gpu = answer.get("gpu")
    free = answer.get("gpu_free_bytes") if gpu is not None else answer.get("host_free_bytes")
    return PlacementCandidate(node=node, gpu=None if gpu is None else str(gpu), free_bytes=free,
                              need_bytes=answer.get("bytes_needed"), level=str(answer.get("level", "unknown")),
                              message=str(answer.get("message", "")))


# -- the service ----------------------------------------------------------------------------------


class Federation:
    """The nodes' deployments and models as this backend shows and routes them (see the module's doc).

    Args:
        state: the app's state; ``state.nodes`` (the NodeManager) is read at each use, so nodes added,
            removed or reconnected are followed without telling this object.
    """

    def __init__(self, state: Any):
        self._state = state
        self.models = RemoteModels()
        self._views: dict[str, NodeView] = {}
        self._pending: set[asyncio.Task] = set()  # refreshes after actions (kept referenced until done)

    @property
    def manager(self) -> Any | None:
        return getattr(self._state, "nodes", None)

    def node_names(self) -> list[str]:
        manager = self.manager
        if manager is None:
            return []
        return sorted(n.name for n in manager.nodes() if n.name != LOCAL)

    def views(self) -> list[NodeView]:
        views = self._views
        return [views[n] for n in sorted(views)]

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every node every ``POLL_INTERVAL_S`` for as long as the app runs."""
        while True:
            try:
                await self.poll()
            except Exception:  # noqa: BLE001 - the loop must outlive any one failure
                log.exception("polling the nodes failed")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def poll(self) -> None:
        """One round: every node asked at once; the caches replaced with what each answered."""
        names = self.node_names()
        old = self._views
        views = await asyncio.gather(*(self._poll(n, old.get(n)) for n in names))
        self._views = {v.name: v for v in views}
        self._reindex()

    async def _poll(self, name: str, before: NodeView | None) -> NodeView:
        last = before or NodeView(name)
        manager = self.manager
        client = manager.client(name) if manager is not None else None
        if client is None:
            return NodeView(name, False, self._why(name), last.deployments, last.models, last.seen_at)
        try:
            deps, models = await asyncio.gather(client.get("/api/deployments", timeout=POLL_TIMEOUT_S),
                                                client.get("/v1/models", timeout=POLL_TIMEOUT_S))
            deps.raise_for_status()
            models.raise_for_status()
            return NodeView(name, True, None, list(deps.json()), list(models.json().get("data") or []), time.time())
        except (httpx.HTTPError, ValueError, AttributeError, TypeError) as exc:
            return NodeView(name, False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                            last.deployments, last.models, last.seen_at)

    async def refresh(self, name: str) -> None:
        """Re-read one node now (bounded by ``POLL_TIMEOUT_S``)."""
        view = await self._poll(name, self._views.get(name))
        if name in self.node_names():
            self._views = {**self._views, name: view}
            self._reindex()

    def routes(self, served_name: str) -> bool:
        """Whether ``/v1`` routes ``served_name`` to a node now."""
        return self.models.lookup(served_name) is not None

    def refresh_soon(self, name: str) -> None:
        """Re-read one node in the background (after an action there), so that the list shows what it did
        without waiting for the next round."""
        task = asyncio.get_running_loop().create_task(self.refresh(name), name=f"federation-refresh-{name}")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _why(self, name: str) -> str:
        manager = self.manager
        for n in manager.nodes() if manager is not None else []:
            if n.name == name:
                state, error = getattr(n, "state", None), getattr(n, "error", None)
                return error or f"its connection is {state or 'down'}"
        return "it is not connected"

    def _reindex(self) -> None:
        manager = self.manager
        views = self.views()
        urls = {v.name: manager.base_url(v.name) if manager is not None else None for v in views}
        tokens = {v.name: manager.token(v.name) if manager is not None else None for v in views}
        # The shared proxy client speaks plain HTTP to loopback (an SSH tunnel's end); a TLS node needs its
        # own client, which holds the client certificate.
        clients = {v.name: manager.client(v.name) for v in views
                   if manager is not None and (urls[v.name] or "").startswith("https:")}
        self.models.set(*remote_upstreams(views, urls, tokens, clients))

    def mark_unreachable(self, name: str, why: str) -> None:
        """A request found the node gone: routing and the list say so now, not at the next poll."""
        view = self._views.get(name)
        if view is not None and view.reachable:
            self._views = {**self._views, name: NodeView(name, False, why, view.deployments, view.models,
                                                         view.seen_at)}
            self._reindex()

    # -- reading ------------------------------------------------------------------------------

    def deployments(self) -> list[Deployment]:
        """Every node's deployments as last answered (no I/O)."""
        out = []
        for view in self.views():
            out.extend(d for d in (remote_deployment(raw, view) for raw in view.deployments) if d is not None)
        return out

    def cached(self, dep_id: str) -> Deployment | None:
        return next((d for d in self.deployments() if d.id == dep_id), None)

    # -- reaching a node --------------------------------------------------------------------------

    def client(self, name: str) -> httpx.AsyncClient:
        """The node's client.

        Raises:
            NodeMissing: no node has this name.
            NodeOffline: it is known but not connected now.
        """
        manager = self.manager
        names = self.node_names()
        if manager is None or name not in names:
            raise NodeMissing(f"No node named '{name}'. Known nodes: {', '.join(names) or 'none'}.",
                              hint="Add it first (POST /api/nodes), or use one of GET /api/nodes.")
        client = manager.client(name)
        if client is None:
            raise self.offline(name, self._why(name))
        return client

    @staticmethod
    def offline(name: str, why: str) -> NodeOffline:
        return NodeOffline(f"Node '{name}' cannot be reached now: {why.rstrip('.')}.",
                           hint="Check the node's state in GET /api/nodes (POST /api/nodes/{name}/test retries); "
                                "its deployments keep running there and come back when it does.")

    async def request(self, name: str, method: str, path: str, *, timeout: float = ACTION_TIMEOUT_S,
                      **kw: Any) -> httpx.Response:
        """One request to the node's API; its answer whatever its status.

        Raises:
            NodeMissing, NodeOffline: as ``client``; NodeOffline too when the request does not get through.
        """
        client = self.client(name)
        try:
            return await client.request(method, path, timeout=timeout, **kw)
        except httpx.TransportError as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self.mark_unreachable(name, why)
            raise self.offline(name, why) from None

    # -- launch and placement -----------------------------------------------------------------------

    async def candidates(self, recipe: str, model: str, local: PlacementCandidate) -> list[PlacementCandidate]:
        """``local`` first, then every node's own fit check, asked at once (an unreachable node is listed
        as such, never chosen)."""
        async def ask(name: str) -> PlacementCandidate:
            try:
                r = await self.request(name, "POST", "/api/fit-check", json={"recipe": recipe, "model": model},
                                       timeout=POLL_TIMEOUT_S)
            except ModelDeckError as exc:
                return PlacementCandidate(node=name, level="unreachable", message=exc.message)
            if r.status_code != 200:
                # 4xx: the node cannot launch it (e.g. its catalog lacks the recipe): never chosen.
                return PlacementCandidate(node=name, level="unknown" if r.status_code >= 500 else "refused",
                                          message=_error_message(r))
            return candidate_from(name, r.json())

        return [local, *await asyncio.gather(*(ask(n) for n in self.node_names()))]

    async def launch(self, name: str, req: LaunchRequest) -> tuple[int, dict]:
        """Launch ``req`` on node ``name``: the node's own answer, its ids as seen from here.

        Raises:
            NodeMissing, NodeOffline: see ``request``; a refusal by the node comes back as its own error.
        """
        body = req.model_dump(mode="json", exclude_unset=True)
        body.pop("node", None)
        r = await self.request(name, "POST", "/api/deployments", json=body)
        if r.status_code >= 400:
            raise _relayed_error(name, r)
        self.refresh_soon(name)
        answer = r.json()
        return r.status_code, _rewrite(answer, name)


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        e = body["error"]
        return f"{e.get('message', '')} {e.get('hint') or ''}".strip()
    return str(body)[:300]


class _NodeRefused(ModelDeckError):
    def __init__(self, status: int, code: str, message: str, hint: str | None, details: dict | None):
        super().__init__(message, hint=hint, details=details)
        self.status, self.code = status, code


def _relayed_error(name: str, r: httpx.Response) -> ModelDeckError:
    """The node's own error (its status and code), saying it came from the node."""
    try:
        e = r.json().get("error") or {}
    except (ValueError, AttributeError):
        e = {}
    message = e.get("message") if isinstance(e, dict) else None
    return _NodeRefused(r.status_code, str(e.get("code") or f"http_{r.status_code}"),
                        f"Node '{name}': {message or r.text[:300]}", e.get("hint"), e.get("details") or None)


def _rewrite(answer: Any, node: str) -> Any:
    """A node's answer about one deployment, with its ids as seen from here (``<id>@<node>``)."""
    if not isinstance(answer, dict):
        return answer
    out = dict(answer)
    rid = out.get("id")
    if isinstance(rid, str) and "@" not in rid:
        out["id"] = remote_id(rid, node)
    if isinstance(out.get("deployment"), dict):
        out["deployment"] = _rewrite(out["deployment"], node)
    if isinstance(out.get("events_url"), str) and isinstance(rid, str):
        out["events_url"] = f"/api/deployments/{remote_id(rid, node)}/events"
    if "container_id" in out and "status" in out:  # a Deployment
        out["node"] = node
        out["endpoint"] = None
    return out


# -- routes -----------------------------------------------------------------------------------------

router = APIRouter(prefix="/api", tags=["nodes"])


def federation_of(request: Request) -> Federation:
    return request.app.state.federation


@router.api_route("/deployments/{dep_id:remote}", methods=["GET", "DELETE", "PATCH"], include_in_schema=False)
@router.api_route("/deployments/{dep_id:remote}/{action:path}", methods=["GET", "POST", "DELETE", "PATCH"],
                  include_in_schema=False)
async def remote_deployment_route(dep_id: str, request: Request, action: str = "") -> Response:
    """Any deployment route on ``<id>@<node>``, asked of the node (documented with the local routes)."""
    fed = federation_of(request)
    rid, node = split_id(dep_id)  # the convertor matched, so there is an '@'
    path = f"/api/deployments/{rid}" + (f"/{action}" if action else "")
    if request.method == "GET" and not action:
        if node not in fed.node_names():
            fed.client(node)  # raises the 404 that names the known nodes
        try:
            r = await fed.request(node, "GET", path, timeout=POLL_TIMEOUT_S)
        except NodeOffline:
            cached = fed.cached(dep_id)
            if cached is None:
                raise
            return JSONResponse(cached.model_dump(mode="json"))
        await _known_when_ready(fed, node, r)
        return _relay(r, node)
    client = fed.client(node)
    body = await request.body()
    headers = {"Content-Type": request.headers.get("content-type") or "application/json"} if body else {}
    # Followed streams (launch events, logs with follow=true) may be silent for long; an answer may not.
    streamed = action == "events" or request.query_params.get("follow") in ("true", "1")
    timeout = httpx.Timeout(ACTION_TIMEOUT_S, read=None if streamed else ACTION_TIMEOUT_S)
    upstream = client.build_request(request.method, path, params=request.query_params, content=body or None,
                                    headers=headers, timeout=timeout)
    try:
        r = await client.send(upstream, stream=True)
    except httpx.TransportError as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        fed.mark_unreachable(node, why)
        raise fed.offline(node, why) from None
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        return StreamingResponse(_raw(r, fed, node), status_code=r.status_code, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                                 background=BackgroundTask(r.aclose))
    try:
        await r.aread()
    except httpx.TransportError as exc:
        raise fed.offline(node, f"{type(exc).__name__}: {exc}") from None
    finally:
        await r.aclose()
    if request.method != "GET" and r.status_code < 400:
        fed.refresh_soon(node)
    return _relay(r, node)


async def _known_when_ready(fed: Federation, node: str, r: httpx.Response) -> None:
    """A deployment the node answers ready is routed here before anyone hears "ready": re-read the node
    now when ``/v1`` does not know its model yet (else a request right after would get a 404)."""
    if r.status_code != 200:
        return
    try:
        dep = r.json()
    except ValueError:
        return
    if isinstance(dep, dict) and dep.get("ready") and isinstance(dep.get("served_name"), str) \
            and not fed.routes(dep["served_name"]):
        await fed.refresh(node)


async def _raw(r: httpx.Response, fed: Federation, node: str):
    try:
        async for chunk in r.aiter_raw():
            if b'"phase": "ready"' in chunk or b'"phase":"ready"' in chunk:
                await fed.refresh(node)  # routed before the client reads "ready" (see _known_when_ready)
            yield chunk
    except httpx.TransportError:
        return  # the node went away mid-stream: the stream ends; the list says it is unreachable


def _relay(r: httpx.Response, node: str) -> Response:
    headers = {k: v for k, v in r.headers.items() if k.lower() in _PASSED_HEADERS and k.lower() != "content-type"}
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("application/json") and r.status_code < 400 and r.content:
        try:
            return JSONResponse(_rewrite(r.json(), node), r.status_code, headers=headers)
        except ValueError:
            pass
    return Response(r.content, r.status_code, headers=headers, media_type=ctype or None)


@router.get("/placement", operation_id="placementCandidates", response_model=Placement,
            summary="Where a model could be launched now: each machine's own fit check, and what 'auto' picks")
async def placement(request: Request, recipe: Annotated[str, Query(min_length=1, max_length=64)],
                    model: Annotated[str, Query(min_length=1, max_length=4096)]) -> Placement:
    """This machine first, then every node, each by its own fit check on its live figures (GPU memory
    free now, or host memory for a model on the CPU); ``chosen`` is where ``node: "auto"`` launches."""
    return await place(request, recipe, model)


async def place(request: Request, recipe: str, model: str) -> Placement:
    from backend.routes.deployments import FitCheckRequest, fit_check  # the local fit check, as the route does it
    state = request.app.state
    local_answer = await run_in_threadpool(fit_check, FitCheckRequest(recipe=recipe, model=model), state.catalog,
                                           state.settings, getattr(state, "stats", None))
    local = candidate_from(LOCAL, local_answer.model_dump())
    cands = await federation_of(request).candidates(recipe, model, local)
    return Placement(candidates=cands, chosen=choose(cands))


@router.get("/nodes/{name}/stats", operation_id="getNodeStats",
            summary="A node's own latest stats snapshot (its GET /api/stats), for the Monitor",
            responses={404: {"description": "No node has this name."},
                       503: {"description": "The node cannot be reached now, or has no sample yet."}})
async def node_stats(name: str, request: Request) -> Response:
    """The node's ``GET /api/stats`` as it answered (the same shape as this backend's)."""
    r = await federation_of(request).request(name, "GET", "/api/stats", timeout=POLL_TIMEOUT_S)
    return _relay(r, name)


async def plan_elsewhere(request: Request, req: LaunchRequest) -> dict | LaunchRequest:
    """The plan of a launch on a node (the node's own answer), or the request to plan here."""
    target = req.node
    if target == AUTO:
        chosen = (await place(request, req.recipe, req.model)).chosen
        target = chosen.node if chosen is not None else LOCAL
    if target in (None, LOCAL):
        return req.model_copy(update={"node": None})
    body = req.model_dump(mode="json", exclude_unset=True)
    body.pop("node", None)
    r = await federation_of(request).request(target, "POST", "/api/deployments/plan", json=body)
    if r.status_code >= 400:
        raise _relayed_error(target, r)
    return r.json()


async def launch_elsewhere(request: Request, req: LaunchRequest) -> tuple[int, dict] | LaunchRequest:
    """A launch whose ``node`` is not this machine: the node's answer (status, body); or, when ``auto``
    chose this machine, the request to launch here."""
    fed = federation_of(request)
    target = req.node
    if target == AUTO:
        chosen = (await place(request, req.recipe, req.model)).chosen
        if chosen is None:
            raise NoPlacement(f"'{req.model}' fits on no machine now (see GET /api/placement for each one's "
                              "fit check).", hint="Free memory on one of them, or choose a smaller model.")
        target = chosen.node
        if chosen.gpu is not None and req.gpus is None:
            req = req.model_copy(update={"gpus": [chosen.gpu]})
    if target in (None, LOCAL):
        return req.model_copy(update={"node": None})
    return await fed.launch(target, req)

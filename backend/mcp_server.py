"""ModelDeck's MCP server: tools that call ModelDeck's own HTTP API, on Streamable HTTP at /mcp and over stdio.

One design for both transports: every tool is a client of the HTTP API (``DeckApi``, an
``httpx.AsyncClient`` with the bearer token). ``modeldeck-mcp`` (``backend.mcp_stdio``) points it
at the running backend; ``/mcp`` points it at the same app over loopback. So a tool does exactly
what the route does — the same validation, errors, security checks and events — and the tool input
schemas are the routes' own Pydantic models (``LaunchRequest``, ``FitCheckRequest``), so the MCP
tools and the HTTP API cannot drift.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend import __version__
from backend.launch_plan import LaunchRequest
from backend.netutil import base_url_of
from backend.routes.deployments import FitCheckRequest

log = logging.getLogger("modeldeck.mcp")

INSTRUCTIONS = """\
ModelDeck runs local model servers (vLLM, llama.cpp, Ollama, TGI, SGLang, a CPU demo) as Docker
containers. listRuntimes shows what can be launched, launchDeployment starts one and waits until it
serves, askModel and compareModels prompt deployed models, listDeployments/getStats show state and
memory. Deployments are addressed by id or served name (listDeployments shows both)."""

#: Whole-request limits of the API calls the tools make; streams wait as long as the work takes.
API_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=None)


# --------------------------------------------------------------------------- tool inputs


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoInput(_Input):
    """The tool takes no arguments."""


DeploymentName = Annotated[str, Field(min_length=1, max_length=256, examples=["demo"],
                                      description="A deployment's id or served name (listDeployments shows both).")]


class DeploymentRef(_Input):
    deployment: DeploymentName


class LogsInput(_Input):
    deployment: DeploymentName
    tail: Annotated[int, Field(ge=1, le=10000, description="How many of the last lines.")] = 100


class AskInput(_Input):
    deployment: DeploymentName
    prompt: Annotated[str, Field(min_length=1, max_length=200_000, description="The user message.")]
    system: Annotated[str | None, Field(max_length=200_000, description="An optional system message.")] = None
    max_tokens: Annotated[int, Field(ge=1, le=32768, description="Most tokens to generate.")] = 256
    temperature: Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature; the server's "
                                                                         "default when empty.")] = None


class CompareInput(_Input):
    deployments: Annotated[list[DeploymentName], Field(min_length=2, max_length=4,
                                                       description="2 to 4 deployments (ids or served names).")]
    prompt: Annotated[str, Field(min_length=1, max_length=200_000)]
    system: Annotated[str | None, Field(max_length=200_000)] = None
    max_tokens: Annotated[int, Field(ge=1, le=32768)] = 256
    temperature: Annotated[float | None, Field(ge=0, le=2)] = None


# --------------------------------------------------------------------------- the API client


class ToolFailure(Exception):
    """What went wrong, and what to do: the tool's error result (``isError``)."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def text(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


def _failure_of(response: httpx.Response, action: str) -> ToolFailure:
    """ModelDeck's error body (``{"error": {"message", "hint"}}``; OpenAI's shape under /v1) as a failure."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    message = error.get("message") if isinstance(error, dict) else None
    if not message:
        message = f"{action} answered HTTP {response.status_code}: {response.text[:300]}"
    return ToolFailure(message, error.get("hint") if isinstance(error, dict) else None)


class DeckApi:
    """ModelDeck's HTTP API as the tools use it: ``base_url`` with the bearer token.

    Args:
        base_url: the backend, e.g. ``http://127.0.0.1:8765``.
        token: the bearer token (never part of any tool result).
        client: the ``httpx.AsyncClient`` to send with (the caller closes it).
    """

    def __init__(self, base_url: str, token: str, client: httpx.AsyncClient):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._client = client

    async def call(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
                   ok: tuple[int, ...] = (200, 201, 202, 204)) -> Any:
        """Send one request; the JSON answer (None for 204), else ``ToolFailure`` with the API's message."""
        try:
            r = await self._client.request(method, self.base_url + path, json=json_body, params=params,
                                           headers=self._headers, timeout=API_TIMEOUT)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if r.status_code not in ok:
            raise _failure_of(r, f"{method} {path}")
        return None if r.status_code == 204 or not r.content else r.json()

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, json_body: Any = None) -> AsyncIterator[httpx.Response]:
        """A streamed request (Server-Sent Events); ``ToolFailure`` when it is refused."""
        try:
            async with self._client.stream(method, self.base_url + path, json=json_body, headers=self._headers,
                                           timeout=STREAM_TIMEOUT) as r:
                if r.status_code != 200:
                    await r.aread()
                    raise _failure_of(r, f"{method} {path}")
                yield r
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> ToolFailure:
        return ToolFailure(f"The ModelDeck backend at {self.base_url} did not answer ({type(exc).__name__}: {exc}).",
                           "Start it (modeldeck-backend, or the ModelDeck app) and call the tool again.")

    async def deployment(self, ref: str) -> dict:
        """The deployment named by id or served name."""
        try:
            return await self.call("GET", f"/api/deployments/{quote(ref, safe='')}")
        except ToolFailure as exc:
            deployments = await self.call("GET", "/api/deployments")
            for d in deployments:
                if d.get("served_name") == ref:
                    return d
            names = ", ".join(d["id"] if d["id"] == d["served_name"] else f"{d['id']} ({d['served_name']})"
                              for d in deployments[:20]) or "none"
            names += f" and {len(deployments) - 20} more" if len(deployments) > 20 else ""
            raise ToolFailure(f"No deployment '{ref}' (by id or served name). Deployments now: {names}.",
                              "Call listDeployments for ids, or launchDeployment to create one.") from exc


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) for each Server-Sent Event of a streamed response."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield event, "\n".join(data)


# --------------------------------------------------------------------------- the tools

Progress = Callable[[float, str], Awaitable[None]]


async def list_runtimes(api: DeckApi, _: NoInput, __: Progress) -> dict:
    catalog = await api.call("GET", "/api/catalog")
    return {"runtimes": [{k: r[k] for k in ("name", "title", "description", "gpu_need", "default_model",
                                            "default_served_name", "secrets", "built_locally")}
                         for r in catalog["recipes"]],
            "refused_recipes": catalog.get("errors", {})}


def _memory_of(sample: dict | None) -> dict:
    sample = sample or {}
    return {"mem_used_bytes": sample.get("mem_used_bytes"), "vram_bytes": sample.get("vram_bytes"),
            "cpu_pct": sample.get("cpu_pct")}


async def _stats_or_none(api: DeckApi) -> dict | None:
    try:
        return await api.call("GET", "/api/stats")
    except ToolFailure:  # 503 before the first sample: deployments are still worth listing
        return None


def _view(api: DeckApi, d: dict, samples: dict) -> dict:
    return {"id": d["id"], "served_name": d["served_name"], "recipe": d["recipe"], "model": d["model"],
            "status": d["status"], "ready": d["ready"], "message": d["message"],
            "openai_base_url": f"{api.base_url}/v1", "endpoint": d.get("endpoint"), "gpus": d.get("gpus", []),
            "memory": _memory_of(samples.get(d["id"]))}


async def list_deployments(api: DeckApi, _: NoInput, __: Progress) -> dict:
    deployments, stats = await asyncio.gather(api.call("GET", "/api/deployments"), _stats_or_none(api))
    samples = (stats or {}).get("deployments", {})
    return {"deployments": [_view(api, d, samples) for d in deployments]}


async def fit_check(api: DeckApi, body: FitCheckRequest, _: Progress) -> dict:
    return await api.call("POST", "/api/fit-check", json_body=body.model_dump())


async def launch_deployment(api: DeckApi, body: LaunchRequest, progress: Progress) -> dict:
    accepted = await api.call("POST", "/api/deployments", json_body=body.model_dump(exclude_unset=True))
    dep_id = accepted["id"]
    last: dict | None = None
    count = 0
    async with api.stream("GET", f"/api/deployments/{quote(dep_id, safe='')}/events") as r:
        async for name, data in _sse(r):
            if name != "progress":
                continue
            last = json.loads(data)
            count += 1
            detail = ""
            if last.get("overall_total"):
                detail = f" ({last.get('overall_current') or 0}/{last['overall_total']} bytes)"
            await progress(count, f"{last['phase']}: {last['message']}{detail}")
            if last["phase"] in ("ready", "failed"):
                break
    dep = await api.call("GET", f"/api/deployments/{quote(dep_id, safe='')}")
    if (last or {}).get("phase") == "failed" or dep["status"] == "failed":
        raise ToolFailure(f"Launching '{dep_id}' failed: {(last or {}).get('message') or dep['message']}",
                          "Read getDeploymentLogs for the server's own words, fix the cause, then removeDeployment "
                          "and launch again.")
    if not dep["ready"]:
        raise ToolFailure(f"The launch of '{dep_id}' stopped reporting before it was ready (now {dep['status']}).",
                          "Call listDeployments to follow it.")
    return {"id": dep_id, "served_name": dep["served_name"], "existing": accepted["existing"], "status": dep["status"],
            "openai_base_url": f"{api.base_url}/v1", "endpoint": dep.get("endpoint"),
            "how_to_use": f"POST {api.base_url}/v1/chat/completions with model '{dep['served_name']}', or askModel."}


def _action(verb: str) -> Callable[[DeckApi, DeploymentRef, Progress], Awaitable[dict]]:
    async def run(api: DeckApi, ref: DeploymentRef, _: Progress) -> dict:
        dep = await api.deployment(ref.deployment)
        path = f"/api/deployments/{quote(dep['id'], safe='')}"
        if verb == "remove":
            await api.call("DELETE", path)
            return {"id": dep["id"], "served_name": dep["served_name"], "removed": True}
        after = await api.call("POST", f"{path}/{verb}")
        return {"id": after["id"], "served_name": after["served_name"], "status": after["status"],
                "ready": after["ready"], "message": after["message"]}
    return run


async def get_stats(api: DeckApi, _: NoInput, __: Progress) -> dict:
    s = await api.call("GET", "/api/stats")
    host = {k: v for k, v in s["host"].items() if k != "per_cpu_pct"}
    return {"time": s["time"], "host": host, "gpu_status": s["gpu_status"], "gpus": s["gpus"],
            "deployments": s.get("deployments", {}), "requests": s.get("requests", {})}


def decode_rate(tokens: int | None, ttft_s: float | None, total_s: float) -> float | None:
    """Tokens after the first over the time after the first (the desktop's definition, a one-token reply: whole)."""
    if not tokens or ttft_s is None:
        return None
    decode = total_s - ttft_s
    if tokens > 1 and decode > 0:
        return (tokens - 1) / decode
    return tokens / total_s if total_s > 0 else None


async def _ask(api: DeckApi, deployment: str, prompt: str, system: str | None, max_tokens: int,
               temperature: float | None) -> dict:
    dep = await api.deployment(deployment)
    if not dep["ready"]:
        raise ToolFailure(f"Deployment '{dep['id']}' is {dep['status']}, not ready: {dep['message']}".rstrip(": "),
                          "Start it with startDeployment (or wait for its launch), then ask again.")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": dep["served_name"], "messages": messages, "max_tokens": max_tokens,
                            "stream": True, "stream_options": {"include_usage": True}}
    if temperature is not None:
        body["temperature"] = temperature
    parts: list[str] = []
    chunks = 0
    usage: dict | None = None
    finish = None
    t0 = time.perf_counter()
    first: float | None = None
    async with api.stream("POST", "/v1/chat/completions", json_body=body) as r:
        async for _, data in _sse(r):
            if data.strip() == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                raise ToolFailure(f"'{dep['served_name']}' failed mid-reply: {chunk['error'].get('message')}")
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    first = first if first is not None else time.perf_counter()
                    parts.append(text)
                    chunks += 1
                finish = choice.get("finish_reason") or finish
    total = time.perf_counter() - t0
    ttft = None if first is None else first - t0
    tokens = (usage or {}).get("completion_tokens") or chunks
    rate = decode_rate(tokens, ttft, total)
    return {"deployment": dep["id"], "served_name": dep["served_name"], "text": "".join(parts),
            "ttft_s": round(ttft, 4) if ttft is not None else None, "completion_tokens": tokens,
            "prompt_tokens": (usage or {}).get("prompt_tokens"),
            "tokens_per_s": round(rate, 2) if rate is not None else None, "total_s": round(total, 4),
            "finish_reason": finish}


async def ask_model(api: DeckApi, q: AskInput, _: Progress) -> dict:
    return await _ask(api, q.deployment, q.prompt, q.system, q.max_tokens, q.temperature)


async def compare_models(api: DeckApi, q: CompareInput, _: Progress) -> dict:
    if len(set(q.deployments)) != len(q.deployments):
        raise ToolFailure("The same deployment is named twice.", "Name 2 to 4 different deployments.")
    answers = await asyncio.gather(*(_ask(api, d, q.prompt, q.system, q.max_tokens, q.temperature)
                                     for d in q.deployments), return_exceptions=True)
    results = []
    for name, answer in zip(q.deployments, answers):
        if isinstance(answer, ToolFailure):
            results.append({"deployment": name, "error": answer.text()})
        elif isinstance(answer, BaseException):
            raise answer
        else:
            results.append(answer)
    if all("error" in r for r in results):
        raise ToolFailure("No deployment answered: " + " | ".join(f"{r['deployment']}: {r['error']}" for r in results))
    return {"prompt": q.prompt, "results": results}


async def deployment_logs(api: DeckApi, q: LogsInput, _: Progress) -> dict:
    dep = await api.deployment(q.deployment)
    answer = await api.call("GET", f"/api/deployments/{quote(dep['id'], safe='')}/logs", params={"tail": q.tail})
    return {"id": dep["id"], "lines": answer["lines"]}


@dataclass(frozen=True)
class ToolSpec:
    """One MCP tool: its name and description, its input model (the schema), how it runs, its hints."""

    name: str
    title: str
    description: str
    params: type[BaseModel]
    run: Callable[[DeckApi, Any, Progress], Awaitable[dict]]
    annotations: types.ToolAnnotations

    def tool(self) -> types.Tool:
        schema = self.params.model_json_schema()
        schema.setdefault("properties", {})
        return types.Tool(name=self.name, title=self.title, description=self.description, input_schema=schema,
                          annotations=self.annotations)


def _hints(title: str, *, read_only: bool = False, destructive: bool = False, idempotent: bool = False,
           open_world: bool = False) -> types.ToolAnnotations:
    return types.ToolAnnotations(title=title, read_only_hint=read_only,
                                 destructive_hint=None if read_only else destructive,
                                 idempotent_hint=None if read_only else idempotent, open_world_hint=open_world)


def _spec(name: str, title: str, description: str, params: type[BaseModel], run, **hints) -> ToolSpec:
    return ToolSpec(name, title, description, params, run, _hints(title, **hints))


TOOLS: tuple[ToolSpec, ...] = (
    _spec("listRuntimes", "List runtimes",
          "The runtimes ModelDeck can launch (catalog recipes): name, GPU need, default model.",
          NoInput, list_runtimes, read_only=True),
    _spec("listDeployments", "List deployments",
          "Every deployment with its state, whether it is ready, its served name, the OpenAI base URL to use "
          "and the memory its container holds now (RAM and GPU).", NoInput, list_deployments, read_only=True),
    _spec("fitCheck", "Fit check",
          "Estimate the GPU memory a model needs on a runtime and compare it with what is free now.",
          FitCheckRequest, fit_check, read_only=True),
    _spec("launchDeployment", "Launch a model",
          "Launch a model from a catalog recipe (same fields as POST /api/deployments) and wait until it serves; "
          "progress notifications while it pulls, builds and loads. Returns the served name and endpoint. "
          "A launch of the same configuration as an existing deployment adopts it.",
          LaunchRequest, launch_deployment, idempotent=True, open_world=True),
    _spec("stopDeployment", "Stop a deployment", "Stop a deployment's container (kept; startDeployment resumes it).",
          DeploymentRef, _action("stop"), destructive=True, idempotent=True),
    _spec("startDeployment", "Start a deployment", "Start a stopped deployment.",
          DeploymentRef, _action("start"), idempotent=True),
    _spec("restartDeployment", "Restart a deployment",
          "Restart a deployment's container (requests in flight are cut).", DeploymentRef, _action("restart"),
          destructive=True),
    _spec("removeDeployment", "Remove a deployment",
          "Remove a deployment's container (model caches stay). It stops serving at once.",
          DeploymentRef, _action("remove"), destructive=True, idempotent=True),
    _spec("getStats", "Live stats",
          "Live host CPU/memory, GPUs (utilisation, memory, temperature, power) and per-deployment figures.",
          NoInput, get_stats, read_only=True),
    _spec("askModel", "Ask a model",
          "Send one prompt to a ready deployment (streamed through ModelDeck's /v1/chat/completions); returns "
          "the text, time to first token, tokens and tokens per second.", AskInput, ask_model, read_only=True),
    _spec("compareModels", "Compare models",
          "Send one prompt to 2-4 ready deployments at once; each reply with its time to first token, tokens and "
          "tokens per second.", CompareInput, compare_models, read_only=True),
    _spec("getDeploymentLogs", "Deployment logs", "The last lines of a deployment's container log.",
          LogsInput, deployment_logs, read_only=True),
)
TOOLS_BY_NAME = {t.name: t for t in TOOLS}
#: What tools/list answers, built once (the schemas are the models' and do not change while running).
TOOL_LIST = [t.tool() for t in TOOLS]


def _invalid(spec: ToolSpec, exc: ValidationError) -> ToolFailure:
    # Field names and messages only: the values may hold secrets (a launch's env).
    problems = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ())) or "arguments"
        problems.append(f"{where}: {e.get('msg', 'invalid').removeprefix('Value error, ').rstrip('.')}")
    return ToolFailure(f"The arguments of {spec.name} are not valid: " + "; ".join(problems) + ".",
                       "Fix the named fields and call it again; the tool's input schema lists every field.")


def _error_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def build_server(api: Callable[[], DeckApi]) -> Server:
    """The low-level MCP server with ModelDeck's tools.

    Args:
        api: gives the ``DeckApi`` a tool call uses (its base URL may be known only once served).
    """

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=TOOL_LIST)

    async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = TOOLS_BY_NAME.get(params.name)
        if spec is None:
            return _error_result(f"No tool '{params.name}'. The tools are: {', '.join(TOOLS_BY_NAME)}.")
        try:
            args = spec.params.model_validate(params.arguments or {})
        except ValidationError as exc:
            return _error_result(_invalid(spec, exc).text())

        async def progress(value: float, message: str) -> None:
            try:
                await ctx.session.report_progress(value, None, message)
            except Exception:  # noqa: BLE001 - a client that went away must not fail the work
                log.debug("progress notification not sent", exc_info=True)

        try:
            result = await spec.run(api(), args, progress)
        except ToolFailure as exc:
            return _error_result(exc.text())
        except Exception as exc:  # noqa: BLE001 - a tool's bug is its error result, never the session's end
            log.exception("MCP tool %s failed", spec.name)
            return _error_result(f"{spec.name} failed unexpectedly: {type(exc).__name__}: {exc}. This is a bug in "
                                 "ModelDeck; the backend log has the details.")
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(result, indent=1))],
                                    structured_content=result)

    return Server("modeldeck", version=__version__, title="ModelDeck", instructions=INSTRUCTIONS,
                  get_tool_input_schema=lambda name: next((t.input_schema for t in TOOL_LIST if t.name == name), None),
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


class McpEndpoint:
    """``/mcp`` on the backend: the SDK's Streamable HTTP session manager over ``build_server``.

    It sits behind the app's ``SecurityMiddleware`` like every route (bearer token, Origin and
    Host checks, body limit), so the SDK's own Host/Origin check is left off: one rule for all
    paths. Its tools call the same app over loopback (the address the request came in on) with
    the app's token, so they pass the same routes, checks and streams as any client. Run
    ``lifespan()`` inside the app's lifespan.
    """

    def __init__(self, token: str):
        self._token = token
        self._base_url: str | None = None
        self._client: httpx.AsyncClient | None = None
        self.server = build_server(self._api)
        self.manager = StreamableHTTPSessionManager(app=self.server, security_settings=None)

    def _api(self) -> DeckApi:
        if self._base_url is None or self._client is None:
            raise ToolFailure("The MCP endpoint is not serving yet.", "Call the tool again in a moment.")
        return DeckApi(self._base_url, self._token, self._client)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                                     trust_env=False) as client:
            self._client = client
            try:
                async with self.manager.run():
                    yield
            finally:
                self._client = None

    async def __call__(self, scope, receive, send) -> None:
        if self._base_url is None:
            self._base_url = base_url_of(scope)
        await self.manager.handle_request(scope, receive, send)

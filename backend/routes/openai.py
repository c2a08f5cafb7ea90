"""The OpenAI-compatible API under /v1: list ready models, forward inference to the deployment that serves it."""

from __future__ import annotations

import inspect
import time
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from backend import proxy
from backend.errors import OPENAI_PREFIX, Flavour, error_response, flavour_for

router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"])


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class OpenAIError(BaseModel):
    """OpenAI's error shape, used by every /v1 error."""

    error: OpenAIErrorDetail


class ModelCard(BaseModel):
    id: str  # the served model name to put in requests
    object: str = "model"
    created: int
    owned_by: str = "modeldeck"
    deployment_id: str
    #: "unloaded": on demand and stopped, a request loads it; "loading": it is being started.
    state: Literal["ready", "unloaded", "loading"] = "ready"
    #: The machine that serves it: "local", or a node's name (backend/federation.py).
    node: str = "local"


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]


# Request bodies are documented, not validated: model servers accept many extra fields
# (sampling options, guided decoding, ...), and the proxy passes the bytes on as they are.
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(_Loose):
    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    stream_options: dict[str, Any] | None = None
    modeldeck: dict[str, Any] | None = None  # {"history": true}: keep this exchange; not forwarded


class CompletionRequest(_Loose):
    model: str
    prompt: str | list[Any]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    stream_options: dict[str, Any] | None = None
    modeldeck: dict[str, Any] | None = None


class EmbeddingRequest(_Loose):
    model: str
    input: str | list[Any]
    modeldeck: dict[str, Any] | None = None


def _body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OpenAIError, "description": "The body is not JSON or has no valid `model`."},
    404: {"model": OpenAIError, "description": "No deployment serves this model."},
    503: {"model": OpenAIError, "description": "The deployment exists but is not ready, or could not be loaded "
                                               "on request (with Retry-After)."},
    502: {"model": OpenAIError, "description": "The model server could not be reached or failed."},
    504: {"model": OpenAIError, "description": "The model server did not answer in time."},
}
_STREAMED = {200: {"description": "The model server's JSON answer, or with `\"stream\": true` its "
                   "Server-Sent Events passed through as they arrive.",
                   "content": {"application/json": {}, "text/event-stream": {}}}}


async def _forward(request: Request, endpoint: str) -> Response:
    state = request.app.state
    return await proxy.forward(request, endpoint, upstreams=state.upstreams, http=state.http,
                               request_log=state.request_log,
                               history=getattr(state, "history", None))


def _listed(upstreams: Any) -> list[tuple[proxy.Upstream, str]]:
    listed = getattr(upstreams, "listed_models", None)
    return listed() if listed is not None else [(u, "ready") for u in upstreams.ready_models()]


@router.get("/models", operation_id="listModels", summary="List ready models, and unloaded ones a request loads",
            response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The deployments that can answer now, and on-demand ones a request starts (``state``), by the model
    name to put in requests."""
    return model_list(request.app.state.upstreams, int(time.time()))


def model_list(upstreams: Any, now: int) -> ModelList:
    """What ``GET /v1/models`` answers (the data plane serves the same list from backend/dataplane.py)."""
    return ModelList(data=[ModelCard(id=u.served_name, created=now, deployment_id=u.deployment_id, state=state,
                                     node=u.node) for u, state in _listed(upstreams)])


@router.get("/models/{model:path}", operation_id="retrieveModel", summary="Describe a model",
            response_model=ModelCard, responses={404: _ERRORS[404]})
async def get_model(model: str, request: Request) -> Any:
    """One ready (or on-demand) model by served name; 404 in OpenAI's shape when none serves it or it is not
    ready and would not load on request."""
    for upstream, state in _listed(request.app.state.upstreams):
        if upstream.served_name == model:
            return ModelCard(id=upstream.served_name, created=int(time.time()),
                             deployment_id=upstream.deployment_id, state=state, node=upstream.node)
    return error_response(Flavour.OPENAI, 404, "model_not_found",
                          f"The model '{model}' does not exist or is not ready.", param="model")


@router.post("/chat/completions", operation_id="createChatCompletion",
             summary="Chat completion (streamed or not)", openapi_extra=_body(ChatCompletionRequest),
             responses={**_STREAMED, **_ERRORS})
async def chat_completions(request: Request) -> Response:
    """Forward to the deployment serving `model`; header `X-ModelDeck-History: 1` keeps the exchange."""
    return await _forward(request, "chat/completions")


@router.post("/completions", operation_id="createCompletion",
             summary="Text completion (streamed or not)", openapi_extra=_body(CompletionRequest),
             responses={**_STREAMED, **_ERRORS})
async def completions(request: Request) -> Response:
    """Forward to the deployment serving `model`; header `X-ModelDeck-History: 1` keeps the exchange."""
    return await _forward(request, "completions")


@router.post("/embeddings", operation_id="createEmbedding", summary="Embeddings",
             openapi_extra=_body(EmbeddingRequest), responses=_ERRORS)
async def embeddings(request: Request) -> Response:
    """Forward to the deployment serving `model`."""
    return await _forward(request, "embeddings")


def _under_v1(request: Request) -> bool:
    # OpenAI's shape, or Anthropic's under /v1/messages: both are rendered by the request's path.
    return flavour_for(request.scope.get("path", "")) is not Flavour.MODELDECK


async def _delegate(handler: Any, request: Request, exc: Exception) -> Response:
    result = handler(request, exc)
    return await result if inspect.isawaitable(result) else result


def install_openai_error_handlers(app: FastAPI) -> None:
    """Answer HTTP and validation errors under /v1 in OpenAI's error shape.

    Errors elsewhere go to the handlers registered before this call (FastAPI's own by
    default), so install the app's other handlers for these two exception classes first.

    Args:
        app: the application whose handlers are extended.
    """
    previous_http = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    previous_validation = app.exception_handlers.get(RequestValidationError,
                                                     request_validation_exception_handler)

    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not _under_v1(request):
            return await _delegate(previous_http, request, exc)
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if status == 404 and message == "Not Found":
            message = f"There is no {request.method} {request.scope.get('path')} in ModelDeck's OpenAI API."
        elif status == 405:
            message = f"{request.method} is not allowed on {request.scope.get('path')}."
        return error_response(request.scope.get("path", ""), status, status, message, headers=exc.headers)

    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        if not _under_v1(request):
            return await _delegate(previous_validation, request, exc)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ())]
        message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in errors)
        return error_response(request.scope.get("path", ""), 400, "invalid_request", message or "Invalid request.",
                              param=loc[-1] if loc else None)

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)

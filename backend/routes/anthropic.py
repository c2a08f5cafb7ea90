"""Anthropic's Messages API under /v1: passed through to runtimes that serve it, translated to chat completions for the others."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from backend import proxy
from backend.anthropic_api import MessagesAdapter
from backend.errors import OPENAI_PREFIX, Flavour, error_response

router = APIRouter(prefix=OPENAI_PREFIX, tags=["anthropic"])

NATIVE = "anthropic_messages"


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error shape, used by every /v1/messages error."""

    type: str = "error"
    error: AnthropicErrorDetail


# Documented, not validated: the body goes to the runtime as it is (passed through), or to the
# translation, which names what it cannot carry.
class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessagesRequest(_Loose):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(_Loose):
    model: str
    messages: list[dict[str, Any]]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


def _body(model: type[BaseModel]) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": AnthropicError, "description": "The body is not JSON, has no valid `model`, or asks "
                                                  "for something the translation cannot carry."},
    404: {"model": AnthropicError, "description": "No deployment serves this model (count_tokens: or "
                                                  "its runtime cannot count tokens)."},
    503: {"model": AnthropicError, "description": "The deployment exists but is not ready."},
    502: {"model": AnthropicError, "description": "The model server could not be reached or failed."},
    504: {"model": AnthropicError, "description": "The model server did not answer in time."},
}


async def _upstream_of(request: Request) -> proxy.Upstream | None:
    """The upstream the body's ``model`` names, or None (then ``forward`` says what is wrong)."""
    try:
        payload = json.loads(await request.body())  # Starlette keeps the body for forward
    except ValueError:
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return request.app.state.upstreams.lookup(model) if isinstance(model, str) else None


async def _forward(request: Request, endpoint: str, adapter: MessagesAdapter | None = None) -> Response:
    state = request.app.state
    return await proxy.forward(request, endpoint, upstreams=state.upstreams, http=state.http,
                               request_log=state.request_log, history=getattr(state, "history", None),
                               flavour=Flavour.ANTHROPIC, adapter=adapter)


@router.post("/messages", operation_id="createMessage", summary="Anthropic Messages (streamed or not)",
             openapi_extra=_body(MessagesRequest),
             responses={200: {"description": "A Messages reply, or with `\"stream\": true` Anthropic's "
                                             "events (message_start ... message_stop).",
                              "content": {"application/json": {}, "text/event-stream": {}}}, **_ERRORS})
async def create_message(request: Request) -> Response:
    """Answer with the deployment serving `model`: passed through where its runtime speaks the
    Messages API (llama.cpp, vLLM, Ollama), translated to and from chat completions elsewhere."""
    upstream = await _upstream_of(request)
    if upstream is not None and NATIVE in upstream.native_apis:
        return await _forward(request, "messages")
    return await _forward(request, "chat/completions", MessagesAdapter())


@router.post("/messages/count_tokens", operation_id="countMessageTokens",
             summary="Count the input tokens of a Messages request", openapi_extra=_body(CountTokensRequest),
             responses={200: {"description": "`{\"input_tokens\": n}` from the runtime.",
                              "content": {"application/json": {}}}, **_ERRORS})
async def count_message_tokens(request: Request) -> Response:
    """Passed through to runtimes that count Messages tokens (llama.cpp, vLLM); a 404 naming the
    deployment where the runtime has no such endpoint."""
    upstream = await _upstream_of(request)
    if upstream is None:
        return await _forward(request, "messages/count_tokens")  # it answers the 400 or 404
    where = f"The model '{upstream.served_name}' (deployment {upstream.deployment_id})"
    hint = ("Use a llama.cpp or vLLM deployment to count tokens, or read usage.input_tokens of a "
            "POST /v1/messages reply.")
    if NATIVE not in upstream.native_apis:
        return error_response(Flavour.ANTHROPIC, 404, None, f"{where} runs on a server that cannot count "
                              "tokens: it has no Messages API, so no /v1/messages/count_tokens.", hint)
    response = await _forward(request, "messages/count_tokens")
    if response.status_code in (404, 405) and upstream.ready:
        return error_response(Flavour.ANTHROPIC, 404, None, f"{where} runs on a server that cannot count "
                              "tokens: it answers /v1/messages but has no /v1/messages/count_tokens "
                              f"(HTTP {response.status_code}).", hint)
    return response

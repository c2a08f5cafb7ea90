"""OpenAI's Responses API under /v1: passed through, by model, to the runtimes that serve it themselves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from backend import proxy
from backend.errors import OPENAI_PREFIX
from backend.routes.openai import _ERRORS, _STREAMED, _body, _Loose

router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"])

RESPONSES = "openai_responses"  # the recipes' [server] native_apis value


class ResponseRequest(_Loose):
    """The Responses API's request; documented, not validated: the runtime reads it (and its extras)."""

    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    modeldeck: dict[str, Any] | None = None  # {"history": true}: keep this exchange; not forwarded


def _native(request: Request) -> proxy.NativeApi:
    catalog = request.app.state.catalog
    serving = sorted(name for name in catalog.recipes if RESPONSES in catalog.native_apis(name))
    return proxy.NativeApi(
        key=RESPONSES, name="OpenAI's Responses API (POST /v1/responses)",
        instead="Use POST /v1/chat/completions with this model instead, or launch the model on a runtime "
                f"that serves /v1/responses ({', '.join(serving) or 'none in this catalog'}).")


_NOT_SERVED = {404: {**_ERRORS[404], "description": "No deployment serves this model, or its runtime does not "
                     "serve the Responses API (the message names the runtime and what to use instead)."}}


@router.post("/responses", operation_id="createResponse",
             summary="Create a model response (Responses API; streamed or not)",
             openapi_extra=_body(ResponseRequest), responses={**_STREAMED, **_ERRORS, **_NOT_SERVED})
async def create_response(request: Request) -> Response:
    """Pass the request to the deployment serving `model`, when its runtime serves the Responses API itself.

    The answer (a `response` object, or with `"stream": true` the runtime's Responses events) comes back
    as the runtime sends it; ModelDeck translates nothing. `GET /v1/responses/{id}` is not offered: a
    response id does not say which deployment made it.
    """
    state = request.app.state
    return await proxy.forward(request, "responses", upstreams=state.upstreams, http=state.http,
                               request_log=state.request_log, history=getattr(state, "history", None),
                               native=_native(request))

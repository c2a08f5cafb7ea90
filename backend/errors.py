"""Domain errors of the backend and the one renderer that turns any error into the body a client reads."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.responses import Response


class ModelDeckError(Exception):
    """Base of every error the backend reports to a person or a client.

    ``status`` is the HTTP status the API answers with; ``hint`` says what to do.
    """

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details or {}

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class EngineUnavailable(ModelDeckError):
    """The Docker engine does not answer."""

    status = 503
    code = "engine_unavailable"


class RecipeError(ModelDeckError):
    """A recipe file does not validate; the message names the file and the field."""

    status = 422
    code = "invalid_recipe"


class RecipeNotFound(ModelDeckError):
    status = 404
    code = "recipe_not_found"


class InvalidLaunch(ModelDeckError):
    """A launch request asks for something the recipe or the rules do not allow."""

    status = 422
    code = "invalid_launch"


class DeploymentNotFound(ModelDeckError):
    """No ModelDeck container has this id (unlabelled containers are never found)."""

    status = 404
    code = "deployment_not_found"


class DeploymentConflict(ModelDeckError):
    """A deployment with this name exists with another configuration."""

    status = 409
    code = "deployment_conflict"


class PortInUse(ModelDeckError):
    status = 409
    code = "port_in_use"


class GpuRuntimeMissing(ModelDeckError):
    """GPUs were asked for, but the engine has no NVIDIA runtime or CDI devices."""

    status = 422
    code = "gpu_runtime_missing"


class ImageUnavailable(ModelDeckError):
    """The image could not be pulled or built."""

    status = 502
    code = "image_unavailable"


class LaunchFailed(ModelDeckError):
    """The container started but never became ready (exited, or timed out)."""

    status = 502
    code = "launch_failed"

    def __init__(self, message: str, *, exit_code: int | None = None,
                 log_tail: list[str] | None = None, hint: str | None = None):
        super().__init__(message, hint=hint,
                         details={"exit_code": exit_code, "log_tail": log_tail or []})
        self.exit_code = exit_code
        self.log_tail = log_tail or []


class NodeNotFound(ModelDeckError):
    """No node has this name (backend/nodes.py)."""

    status = 404
    code = "node_not_found"


class NodeExists(ModelDeckError):
    status = 409
    code = "node_exists"


class HostKeyUnknown(ModelDeckError):
    """The node's SSH host key is in no known_hosts file: the person must check and trust it."""

    status = 409
    code = "host_key_unknown"


class HostKeyChanged(ModelDeckError):
    """The node's SSH host key differs from the trusted one: never accepted silently."""

    status = 409
    code = "host_key_changed"


class NodeAuthFailed(ModelDeckError):
    """The node refused the login (SSH key, or TLS client certificate, or its token)."""

    status = 502
    code = "node_auth_failed"


class NodeUnreachable(ModelDeckError):
    """The node does not answer (network, sshd, TLS port)."""

    status = 502
    code = "node_unreachable"


class NodeNotModelDeck(ModelDeckError):
    """The machine answers but no ModelDeck backend runs there (no token file, nothing on the port)."""

    status = 502
    code = "node_not_modeldeck"


# --------------------------------------------------------------------------- rendering

OPENAI_PREFIX = "/v1"


ANTHROPIC_PATH = "/v1/messages"


class Flavour(enum.Enum):
    """The error shapes clients read.

    ``MODELDECK``: ``{"error": {"code", "message", "hint", "details"}}`` (the control API).
    ``OPENAI``: ``{"error": {"message", "type", "param", "code"}}`` (everything under /v1, so
    that OpenAI clients raise their own error classes with the message in them).
    ``ANTHROPIC``: ``{"type": "error", "error": {"type", "message"}}`` (Anthropic's Messages API,
    /v1/messages and below, so that Anthropic clients do the same).
    """

    MODELDECK = "modeldeck"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


def flavour_for(path: str) -> Flavour:
    """The shape a request to ``path`` is answered in: Anthropic's under /v1/messages, OpenAI's
    elsewhere under /v1, ModelDeck's everywhere else."""
    if path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"):
        if path.startswith(ANTHROPIC_PATH) and path[len(ANTHROPIC_PATH):len(ANTHROPIC_PATH) + 1] in ("", "/"):
            return Flavour.ANTHROPIC
        return Flavour.OPENAI
    return Flavour.MODELDECK


# OpenAI's error types by status; statuses not listed are server errors from 500 on.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error"}


def openai_type(status: int) -> str:
    """OpenAI's ``type`` for an error answered with ``status``."""
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


# Anthropic's error types by status (docs.anthropic.com "Errors"); other 5xx are "api_error".
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for an error answered with ``status``."""
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(flavour: Flavour, status: int, code: str | int | None, message: str, hint: str | None = None,
               details: dict | None = None, *, type: str | None = None, param: str | None = None) -> bytes:
    """The JSON bytes of an error in ``flavour``'s shape.

    Args:
        flavour: which shape (see :class:`Flavour`).
        status: the HTTP status it is answered with (picks OpenAI's ``type`` when none is given).
        code: a stable machine-readable code (OpenAI's ``code`` may also be a status number or None).
        message: what went wrong.
        hint: what to do about it; OpenAI's and Anthropic's shapes have no field for it, so it
            follows the message.
        details: extra facts (ModelDeck's shape only); the key is left out when None, as the
            front door's refusals and the stats route have always answered.
        type: OpenAI's or Anthropic's ``type``, when it is not the one the status implies.
        param: OpenAI's ``param``: the request field at fault.

    Returns:
        UTF-8 JSON, compact, as FastAPI's JSONResponse writes it.
    """
    if flavour is Flavour.ANTHROPIC:
        # Anthropic's shape has neither code nor param: the message says what was wrong.
        text = f"{message} {hint}" if hint else message
        return json.dumps({"type": "error", "error": {"type": type or anthropic_type(status), "message": text}},
                          ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    if flavour is Flavour.OPENAI:
        error: dict = {"message": f"{message} {hint}" if hint else message,
                       "type": type or openai_type(status), "param": param, "code": code}
    else:
        error = {"code": code, "message": message, "hint": hint}
        if details is not None:
            error["details"] = details
    return json.dumps({"error": error}, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def error_response(where: Flavour | str, status: int, code: str | int | None, message: str,
                   hint: str | None = None, details: dict | None = None, *, type: str | None = None,
                   param: str | None = None, headers: Mapping[str, str] | None = None) -> Response:
    """An error answer: the one place that chooses the shape and builds the body.

    Args:
        where: the request's path (the shape follows it), or a :class:`Flavour` to force one.
        status, code, message, hint, details, type, param: see :func:`error_body`.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``, ...).

    Returns:
        A JSON response, usable as an ASGI app by middleware that has no request object.
    """
    # Imported here: the domain errors are also raised by command-line tools (the image
    # builder) that never answer HTTP, and starlette's responses cost them ~70 ms to import.
    from starlette.responses import Response

    flavour = where if isinstance(where, Flavour) else flavour_for(where)
    return Response(error_body(flavour, status, code, message, hint, details, type=type, param=param),
                    status, headers=headers, media_type="application/json")


def domain_error_response(path: str, exc: ModelDeckError) -> Response:
    """How a :class:`ModelDeckError` raised while answering ``path`` reaches the client."""
    return error_response(path, exc.status, exc.code, exc.message, exc.hint, exc.details)

"""Domain errors of the backend: each says what went wrong and what to do about it."""

from __future__ import annotations


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

"""Library API: the models on disk (model folders, caches in folders or volumes) and deleting them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from backend.library import ID_RE, Library, LibraryListing

router = APIRouter(prefix="/api", tags=["library"])


def _library(request: Request) -> Library:
    return request.app.state.library


ModelId = Annotated[str, Path(pattern=ID_RE, description="A model id from GET /api/library.")]


@router.get("/library", operation_id="listLibrary", response_model=LibraryListing)
async def list_library(request: Request) -> LibraryListing:
    """The models on disk: GGUF files in the model folders and caches, Hugging Face snapshots, Ollama models.

    Each with its size, where it lives, the deployments that use it and when it was last launched.
    Metadata is read from GGUF headers only.
    """
    return await run_in_threadpool(_library(request).list)


@router.delete("/library/{model_id}", operation_id="deleteLibraryModel", status_code=204,
               responses={404: {"description": "model_not_found"},
                          409: {"description": "model_in_use: the deployments using it are named."}})
async def delete_library_model(model_id: ModelId, request: Request) -> Response:
    """Delete a model from disk (refused while a deployment, running or stopped, uses it)."""
    await run_in_threadpool(_library(request).delete, model_id)
    return Response(status_code=204)

"""HTTP routes of the playground history: list, search, read, delete, clear and export runs."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from backend.deps import HistoryDep
from backend.history import HistoryEntry, HistorySummary

# SQLite integers are 64-bit: a larger id is a request error, not a server one.
EntryId = Annotated[int, Path(ge=1, le=2**63 - 1, description="History entry id")]

router = APIRouter(prefix="/api/history", tags=["history"])

EXPORT_FILENAME = "modeldeck-history.json"
MAX_PAGE = 500

# The routes are plain ``def``: FastAPI runs them in its thread pool, so the blocking
# SQLite calls never stall the event loop (and with it the proxied streams).

SearchQuery = Annotated[str | None, Query(
    max_length=1000, description="Text that must occur in a message, the prompt or the output "
    "(case-insensitive, literal).")]
ModelFilter = Annotated[str | None, Query(description="Only runs of this served model name.")]


class ClearResult(BaseModel):
    """What clearing the history removed."""

    deleted: int


_NOT_FOUND = {404: {"description": "No history entry has this id."}}


@router.get("", operation_id="listHistory", summary="List past runs, newest first",
            response_model=list[HistorySummary])
def list_history(history: HistoryDep,
                 limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                 offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite integers are 64-bit
                 q: SearchQuery = None,
                 model: ModelFilter = None) -> list[HistorySummary]:
    """One page of run summaries, optionally filtered by text and model."""
    return history.list(limit=limit, offset=offset, query=q, model=model)


@router.get("/export", operation_id="exportHistory", summary="Download runs as a JSON file",
            response_model=list[HistoryEntry],
            responses={200: {"description": f"A JSON array, sent as the attachment {EXPORT_FILENAME}."}})
def export_history(history: HistoryDep, q: SearchQuery = None, model: ModelFilter = None) -> Response:
    """Every run matching the filters, whole, as a file download."""
    entries = history.export(query=q, model=model)
    body = json.dumps([e.model_dump(mode="json") for e in entries], ensure_ascii=False, indent=2)
    return Response(content=body.encode("utf-8"), media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'})


@router.get("/{entry_id}", operation_id="getHistoryEntry", summary="Read one run",
            response_model=HistoryEntry, responses=_NOT_FOUND)
def get_history_entry(entry_id: EntryId, history: HistoryDep) -> HistoryEntry:
    """The whole run: messages or prompt, parameters, output and metrics. 404 if unknown."""
    return history.get(entry_id)


@router.delete("/{entry_id}", operation_id="deleteHistoryEntry", summary="Delete one run",
               status_code=204, response_class=Response, responses=_NOT_FOUND)
def delete_history_entry(entry_id: EntryId, history: HistoryDep) -> Response:
    """Delete one run. 404 if unknown."""
    history.delete(entry_id)
    return Response(status_code=204)


@router.delete("", operation_id="clearHistory", summary="Delete every run", response_model=ClearResult)
def clear_history(history: HistoryDep) -> ClearResult:
    """Delete the whole history; answers how many runs were removed."""
    return ClearResult(deleted=history.clear())

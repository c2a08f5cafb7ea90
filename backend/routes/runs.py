"""HTTP routes of suite runs: start, list, read, follow (SSE), cancel, rate cells, rerun, export, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel

from backend.deps import SuitesDep
from backend.deps import SuiteRunsDep as RunnerDep
from backend.sse import event_stream, sse_event
from backend.suite_runner import differences
from backend.suite_runs import EXPORTERS, Cell, CellEdit, RunDetail, RunRequest, RunSummary
from backend.suites import Suite

router = APIRouter(prefix="/api", tags=["suite runs"])

RunId = Annotated[str, Path(min_length=1, max_length=100, description="The run's id")]
CellId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The cell's id")]
_NOT_FOUND = {404: {"description": "No run (or cell) has this id."}}


class RerunAnswer(BaseModel):
    """The new run, and what no longer matches the run it repeats (empty when everything does)."""

    run: RunSummary
    differences: list[str]


@router.post("/suites/{suite_id}/runs", operation_id="startSuiteRun", status_code=202, response_model=RunSummary,
             summary="Run a suite on deployments × parameter sets",
             responses={404: {"description": "No suite has this id."}})
async def start_run(suite_id: Annotated[str, Path(min_length=1, max_length=100)], body: RunRequest, request: Request,
                    runner: RunnerDep, suites: SuitesDep) -> RunSummary:
    """Every case on every deployment with every parameter set, ``repetitions`` times, through ModelDeck's
    own /v1 (at most ``concurrency`` requests in flight per deployment). Answers at once; follow the run
    with ``GET /api/runs/{id}/events``."""
    runner.learn_address(request.scope)
    suite = await asyncio.to_thread(suites.get, suite_id)
    return await runner.start(suite, body)


@router.get("/runs", operation_id="listRuns", summary="List runs, newest first", response_model=list[RunSummary])
async def list_runs(request: Request, runner: RunnerDep,
                    suite_id: Annotated[str | None, Query(max_length=100, description="Only runs of this suite.")] = None
                    ) -> list[RunSummary]:
    runner.learn_address(request.scope)
    return await asyncio.to_thread(runner.store.list, suite_id)


@router.get("/runs/{run_id}", operation_id="getRun", summary="A run with its cells, provenance and per-column figures",
            response_model=RunDetail, responses=_NOT_FOUND)
async def get_run(run_id: RunId, request: Request, runner: RunnerDep) -> RunDetail:
    runner.learn_address(request.scope)
    return await asyncio.to_thread(runner.store.detail, run_id)


@router.get("/runs/{run_id}/events", operation_id="followRun", summary="Follow a run (Server-Sent Events)",
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` (RunSummary) first, every cell finished so far, then `cell` (Cell) per finished cell and "
                                            "`progress` after it, last `end` (RunSummary)."}, **_NOT_FOUND})
async def follow_run(run_id: RunId, runner: RunnerDep) -> Response:
    await asyncio.to_thread(runner.store.summary, run_id)  # a 404 now, not inside the stream

    async def frames():
        async for name, data in runner.events(run_id):
            yield sse_event(name, data.model_dump_json())

    return event_stream(frames())


@router.post("/runs/{run_id}/cancel", operation_id="cancelRun", response_model=RunSummary, responses=_NOT_FOUND,
             summary="Stop a run: requests in flight end, pending cells become cancelled")
async def cancel_run(run_id: RunId, runner: RunnerDep) -> RunSummary:
    return await runner.cancel(run_id)


@router.patch("/runs/{run_id}/cells/{cell_id}", operation_id="rateRunCell", response_model=Cell, responses=_NOT_FOUND,
              summary="Rate a cell (1–5, null clears) and/or write a note on it")
async def edit_cell(run_id: RunId, cell_id: CellId, body: CellEdit, runner: RunnerDep) -> Cell:
    return await asyncio.to_thread(runner.store.edit_cell, run_id, cell_id, body)


@router.post("/runs/{run_id}/rerun", operation_id="rerunRun", status_code=202, response_model=RerunAnswer,
             responses=_NOT_FOUND, summary="Repeat a run with the same suite, deployments and parameters")
async def rerun(run_id: RunId, request: Request, runner: RunnerDep) -> RerunAnswer:
    """The cases, deployments, parameter sets, repetitions and concurrency of the run, as a new run
    (``rerun_of`` names the old one); ``differences`` says what no longer matches: an image digest, a
    model revision, recipe arguments, a deployment that is gone."""
    runner.learn_address(request.scope)
    suite_data, body, before = await asyncio.to_thread(runner.store.config, run_id)
    summary = await runner.start(Suite.model_validate(suite_data), body, rerun_of=run_id)
    _, _, now = await asyncio.to_thread(runner.store.config, summary.id)
    return RerunAnswer(run=summary, differences=differences(before, now))


@router.get("/runs/{run_id}/export", operation_id="exportRun", summary="Download a run's cells as CSV, JSONL or Markdown",
            responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}, "text/markdown": {}},
                             "description": "Every cell with its figures, as an attachment."}, **_NOT_FOUND})
async def export_run(run_id: RunId, runner: RunnerDep,
                     format: Annotated[Literal["csv", "jsonl", "md"], Query()] = "csv") -> Response:  # noqa: A002
    write, media_type = EXPORTERS[format]
    detail = await asyncio.to_thread(runner.store.detail, run_id)
    text = await asyncio.to_thread(write, detail)
    return Response(content=text.encode("utf-8"), media_type=f"{media_type}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{run_id}.{format}"'})


@router.delete("/runs/{run_id}", operation_id="deleteRun", status_code=204, responses=_NOT_FOUND,
               summary="Delete a run (stopping it first when it runs)")
async def delete_run(run_id: RunId, runner: RunnerDep) -> Response:
    await runner.delete(run_id)
    return Response(status_code=204)

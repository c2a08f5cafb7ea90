"""HTTP routes of prompt suites: create, list, read, replace, delete, import and export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from backend.deps import SuitesDep
from backend.suite_files import FileFormat, read_suite_file, write_suite_file
from backend.suites import InvalidSuiteFile, Suite, SuiteConflict, SuiteStore, SuiteSummary

router = APIRouter(prefix="/api/suites", tags=["suites"])

SuiteId = Annotated[str, Path(max_length=100, description="The suite's id")]
FormatQuery = Annotated[FileFormat, Query(description="jsonl: one case a line as JSON; csv: one case a row.")]
_MEDIA_TYPES = {"jsonl": "application/jsonl; charset=utf-8", "csv": "text/csv; charset=utf-8"}
_NOT_FOUND = {404: {"description": "No suite has this id."}}
_INVALID = {422: {"description": "The suite is not valid: the message names the case and the field."}}

# The routes that touch the store are plain ``def``: FastAPI runs them in its thread pool, so the
# blocking SQLite calls never stall the event loop.


@router.post("", operation_id="createSuite", summary="Create a suite", status_code=201,
             response_model=Suite, responses={**_INVALID, 409: {"description": "The given id is taken."}})
def create_suite(suite: Suite, suites: SuitesDep) -> Suite:
    """Store a new suite. Its id is made from the name unless one is given; cases without an id
    get ``case-<n>``. A bad regular expression or JSON Schema in a check, or a ``{{variable}}``
    the case does not define, is refused (422) naming the case and the field."""
    return suites.create(suite)


@router.get("", operation_id="listSuites", summary="List suites", response_model=list[SuiteSummary])
def list_suites(suites: SuitesDep) -> list[SuiteSummary]:
    """Every suite (id, name, description, number of cases), most recently changed first."""
    return suites.list()


@router.post("/import", operation_id="importSuite", summary="Create a suite from a JSONL or CSV file",
             status_code=201, response_model=Suite,
             responses={422: {"description": "A line of the file is malformed (``line N: ...``); nothing was stored."}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/plain": {"schema": {"type": "string"}, "description": "The file's text (UTF-8); "
                                "any Content-Type is read the same way."}}}})
async def import_suite(request: Request, suites: SuitesDep, format: FormatQuery,
                       name: Annotated[str | None, Query(
                           min_length=1, max_length=200,
                           description="The new suite's name (default: the file's suite line, else 'Imported suite').")
                       ] = None,
                       description: Annotated[str | None, Query(max_length=10_000)] = None) -> Suite:
    """The body is the file's text (UTF-8). JSONL: one case a line, as ``GET .../export?format=jsonl``
    writes it; the first line may be ``{"suite": {"name", "description", "system_prompt", "checks"}}``.
    CSV: a header ``id,prompt,system_prompt,expected,checks`` (+ ``messages``, a JSON column, and any
    other column is a variable); ``checks`` is a JSON array. A malformed line is refused with its
    number and nothing is stored."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidSuiteFile(f"line {line}: the file is not UTF-8 text ({exc.reason})",
                               hint="Save the file as UTF-8 and import it again. Nothing was imported.") from None
    return await run_in_threadpool(_import, suites, text, format, name, description)


def _import(suites: SuiteStore, text: str, fmt: FileFormat, name: str | None, description: str | None) -> Suite:
    found = read_suite_file(text, fmt)
    settings = found.settings
    suite = Suite(name=name or (settings.name if settings and settings.name else None) or "Imported suite",
                  description=description if description is not None else (settings.description if settings else ""),
                  system_prompt=settings.system_prompt if settings else None,
                  checks=settings.checks if settings else [], cases=found.cases)
    return suites.create(suite)


@router.get("/{suite_id}", operation_id="getSuite", summary="Read a suite with its cases",
            response_model=Suite, responses=_NOT_FOUND)
def get_suite(suite_id: SuiteId, suites: SuitesDep) -> Suite:
    """The whole suite: settings, suite-wide checks and every case."""
    return suites.get(suite_id)


@router.put("/{suite_id}", operation_id="replaceSuite", summary="Replace a suite",
            response_model=Suite, responses={**_NOT_FOUND, **_INVALID})
def replace_suite(suite_id: SuiteId, suite: Suite, suites: SuitesDep) -> Suite:
    """Replace the suite's name, settings and cases; the id and creation time stay (an id in the
    body is ignored)."""
    return suites.replace(suite_id, suite)


@router.delete("/{suite_id}", operation_id="deleteSuite", summary="Delete a suite", status_code=204,
               response_class=Response,
               responses={**_NOT_FOUND, 409: {"description": "A run of this suite is running."}})
def delete_suite(suite_id: SuiteId, request: Request, suites: SuitesDep) -> Response:
    """Delete the suite and its cases. Refused (409) while a run of it is running."""
    runs = getattr(request.app.state, "suite_runs", None)
    if runs is not None and suite_id in runs.running_suite_ids():
        raise SuiteConflict(f"A run of the suite {suite_id!r} is running.",
                            hint="Cancel the run (POST /api/runs/{id}/cancel) or wait for it to end, then delete.")
    suites.delete(suite_id)
    return Response(status_code=204)


@router.get("/{suite_id}/export", operation_id="exportSuite", summary="Download a suite's cases as JSONL or CSV",
            response_class=Response, responses={**_NOT_FOUND, 200: {
                "description": "The cases as a file (attachment).",
                "content": {"application/jsonl": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}}}}})
def export_suite(suite_id: SuiteId, suites: SuitesDep, format: FormatQuery = "jsonl") -> Response:
    """The suite in the format import reads back: exporting and importing gives the same cases.
    JSONL also carries the suite's name, description, system prompt and checks (its first line);
    CSV has the cases only."""
    suite = suites.get(suite_id)
    body = write_suite_file(suite, format)
    return Response(content=body.encode("utf-8"), media_type=_MEDIA_TYPES[format],
                    headers={"Content-Disposition": f'attachment; filename="{suite.id}.{format}"'})

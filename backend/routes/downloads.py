"""Downloads API: start a model download into the runtimes' Hugging Face cache, list, follow (SSE), cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from backend.downloads import FINISHED, JOB_ID_RE, Download, DownloadList, DownloadManager, DownloadRequest
from backend.sse import event_stream, sse_event

router = APIRouter(prefix="/api", tags=["downloads"])


async def _manager(request: Request) -> DownloadManager:
    return request.app.state.downloads


DownloadsDep = Annotated[DownloadManager, Depends(_manager)]
JobId = Annotated[str, Path(pattern=JOB_ID_RE, description="A download id from POST or GET /api/downloads.")]


@router.post("/downloads", operation_id="startDownload", status_code=202, response_model=Download,
             responses={200: {"model": Download, "description": "The same files were already downloading: that job."},
                        409: {"description": "not_enough_space: needed and free bytes, and where."}})
async def start_download(body: DownloadRequest, downloads: DownloadsDep, response: Response) -> Download:
    """Download a variant (or named files, or the whole servable set) of a Hub repository into the cache.

    The free space on the staging disk and in the cache is checked first; the answer comes at
    once and the transfer goes on in the backend (follow ``/api/downloads/{id}/events``).
    """
    job, created = await run_in_threadpool(downloads.start, body)
    if not created:
        response.status_code = 200
    return job


@router.get("/downloads", operation_id="listDownloads", response_model=DownloadList)
async def list_downloads(downloads: DownloadsDep) -> DownloadList:
    """Every download this backend knows: running, queued and finished (until cancelled/removed)."""
    return DownloadList(downloads=downloads.list())


@router.get("/downloads/{download_id}", operation_id="getDownload", response_model=Download)
async def get_download(download_id: JobId, downloads: DownloadsDep) -> Download:
    return downloads.get(download_id)


@router.delete("/downloads/{download_id}", operation_id="cancelDownload", status_code=204)
async def cancel_download(download_id: JobId, downloads: DownloadsDep) -> Response:
    """Cancel a queued or running download and remove its partial files; a finished one is forgotten."""
    await run_in_threadpool(downloads.cancel, download_id)
    return Response(status_code=204)


@router.get("/downloads/{download_id}/events", operation_id="followDownload",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}},
                              "description": "`progress` events (the Download, at most 4 a second), then one of "
                                             "`done`, `failed`, `cancelled`."}})
async def follow_download(download_id: JobId, downloads: DownloadsDep) -> EventSourceResponse:
    queue, now = downloads.subscribe(download_id)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        try:
            if now.state in FINISHED:
                yield sse_event(now.state, now.model_dump_json())
                return
            yield sse_event("progress", now.model_dump_json())
            while True:
                event, view = await queue.get()
                yield sse_event(event, view.model_dump_json())
                if event in FINISHED:
                    return
        finally:
            downloads.unsubscribe(download_id, queue)

    return event_stream(frames())

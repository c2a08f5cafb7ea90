"""Model downloads from the Hugging Face Hub into the cache the runtimes mount: jobs, a bounded worker, resume.

A download is a job persisted in ``<home>/downloads/jobs.json`` (written atomically), so a
backend killed mid-download picks it up again at its next start. Each file is streamed with
httpx into ``<home>/downloads/<job>/`` (the staging folder), resuming with an HTTP ``Range``
request from the bytes already there, after a dropped connection or a restart alike;
``huggingface_hub``'s own ``hf_hub_download`` cannot resume across processes (each call starts
a fresh ``.incomplete`` file). When every file of a job is staged it is placed into the
Hugging Face cache in the hub layout the runtimes read (``hub/models--ORG--NAME/blobs/<etag>``,
``snapshots/<commit>/<path>`` linking to the blob, ``refs/<revision>`` holding the commit;
llama.cpp's ``common/hf-cache.cpp``, vLLM, SGLang and TGI all read it):

- into the host folder ``Settings.cache_dirs["huggingface"]`` when there is one (a rename on
  the same disk);
- else into the Docker volume ``modeldeck-cache-huggingface``, streamed as a tar archive
  through a short-lived helper container (``Engine.put_into_volume``), never through the
  engine's data folder, so Docker Desktop works too.

(backend/hub_cache.py writes the layout; the file list comes from backend/hub.py's ``HubClient``,
which also gives the endpoint and the token.)

At most ``MAX_PARALLEL`` jobs download at once (worker threads); the rest wait, queued.
Progress reaches followers (``GET /api/downloads/{id}/events``) at most ``PROGRESS_HZ`` times a
second.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import secrets as _random
import shutil
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backend.base_image import missing_base_hint, pick_base_image
from backend.engine import Engine
from backend.errors import ImageUnavailable, ModelDeckError
from backend.hub_cache import (CACHE_KIND, HELPER_HOME_LABEL, HUB_FOLDER, VOLUME, CacheFile, atomic_write,
                               helper_labels, place_in_folder, place_in_volume, repo_folder, volume_state)
from backend.hub import SAVE_TOKEN
from backend.settings import Settings

log = logging.getLogger(__name__)

MAX_PARALLEL = 2
PROGRESS_HZ = 4.0
#: Attempts at one file without a byte of progress before the job fails.
MAX_RETRIES = 5
RATE_WINDOW_S = 5.0
#: Finished downloads kept in the list (and jobs.json); older ones are forgotten as new ones start.
KEEP_FINISHED = 100
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}$")
FILE_RE = re.compile(r"^[A-Za-z0-9_.\-][A-Za-z0-9_.\-/ ]{0,499}$")
JOB_ID_RE = r"^dl-[0-9a-f]{12}$"

State = Literal["queued", "running", "done", "failed", "cancelled"]
FINISHED = ("done", "failed", "cancelled")


class NotEnoughSpace(ModelDeckError):
    """A download would not fit on the staging disk or in the cache."""

    status = 409
    code = "not_enough_space"


class DownloadNotFound(ModelDeckError):
    status = 404
    code = "download_not_found"


class InvalidDownload(ModelDeckError):
    status = 422
    code = "invalid_download"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class DownloadRequest(BaseModel):
    """What to download: one variant, or named files; neither: the repository's whole servable set."""

    model_config = ConfigDict(extra="forbid")

    # No examples: the API fuzz test would download them (from its Hub stand-in) into the real cache.
    repo_id: Annotated[str, Field(min_length=3, max_length=193,
                                  description="org/name, e.g. bartowski/Qwen2.5-0.5B-Instruct-GGUF")]
    revision: Annotated[str, Field(min_length=1, max_length=128)] = "main"
    variant: Annotated[str | None, Field(min_length=1, max_length=64,
                                         description="a variant id of the model page, e.g. Q4_K_M")] = None
    files: Annotated[list[str] | None, Field(min_length=1, max_length=1000)] = None

    @field_validator("repo_id")
    @classmethod
    def _repo(cls, v: str) -> str:
        if not REPO_ID_RE.match(v) or ".." in v:
            raise ValueError(f"'{v}' is not a Hugging Face repo id (like 'org/name': letters, digits, . _ -).")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str) -> str:
        if not REVISION_RE.match(v) or ".." in v:
            raise ValueError(f"'{v}' is not a branch, tag or commit.")
        return v

    @model_validator(mode="after")
    def _one_choice(self) -> "DownloadRequest":
        if self.variant is not None and self.files is not None:
            raise ValueError("give a variant or a list of files, not both.")
        return self

    @field_validator("files")
    @classmethod
    def _files(cls, v: list[str] | None) -> list[str] | None:
        for f in v or ():
            if not FILE_RE.match(f) or ".." in f.split("/") or "//" in f or f.endswith("/"):
                raise ValueError(f"'{f}' is not a file path in a repository (no '..', no leading '/').")
        return v


class DownloadFile(BaseModel):
    path: str
    size: int
    bytes_done: int = 0


class Download(BaseModel):
    """A download job as the API shows it."""

    id: str
    repo_id: str
    revision: str
    variant: str | None
    state: State
    files: list[DownloadFile]
    bytes_total: int
    bytes_done: int
    rate_bps: float | None = None
    eta_s: float | None = None
    target: str = Field(description="The host folder, or 'volume modeldeck-cache-huggingface'.")
    error: str | None = None
    created: str
    finished: str | None = None


class DownloadList(BaseModel):
    downloads: list[Download]


@dataclass
class ResolvedFiles:
    """What the Hub says a request covers: the commit the revision points at, and the files with sizes."""

    commit: str
    files: list[tuple[str, int, str | None]]  # path, size, sha256 (LFS files) or None


#: Resolves (settings, repo_id, revision, variant, files) to the commit and files; raises the Hub's domain errors.
Resolver = Callable[[Settings, str, str, str | None, list[str] | None], ResolvedFiles]


def hub_resolver(settings: Settings, repo_id: str, revision: str, variant: str | None,
                 files: list[str] | None) -> ResolvedFiles:
    """The file list from backend/hub.py's ``HubClient`` (the same grouping into variants the model page shows).

    Raises:
        The Hub's domain errors (backend/hub.py), and InvalidDownload for a file the repo lacks.
    """
    from backend.hub import HubClient, HubVariantNotFound

    detail = HubClient(settings).model(repo_id, revision)
    by_path = {f.path: f for f in detail.files}
    if variant is not None:
        chosen_variant = next((v for v in detail.variants if v.id.lower() == variant.lower()), None)
        if chosen_variant is None:
            known = ", ".join(v.id for v in detail.variants)
            raise HubVariantNotFound(f"{repo_id} has no variant '{variant}'.", hint=f"Its variants: {known}.")
        chosen = [by_path[f.path] for f in chosen_variant.files]
    elif files is not None:
        missing = [f for f in files if f not in by_path]
        if missing:
            raise InvalidDownload(f"{repo_id} has no file {', '.join(repr(m) for m in missing)} at {revision}.",
                                  hint="Open the model page to see its files, or download a variant by name.")
        chosen = [by_path[f] for f in files]
    else:
        chosen = list({f.path: by_path[f.path] for v in detail.variants for f in v.files}.values())
    return ResolvedFiles(detail.revision, [(f.path, int(f.size or 0), f.sha256) for f in chosen])


@dataclass
class _Job:
    view: Download
    commit: str
    sha256: dict[str, str | None]
    cancel: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    samples: deque = field(default_factory=deque)  # (monotonic time, bytes done), 10 a second at most
    sockets: list = field(default_factory=list)
    last_publish: float = 0.0
    last_persist: float = 0.0
    dirty: bool = False  # progress not yet sent to followers
    #: Files whose blob is in the cache already: linked into the snapshot, not downloaded again.
    placed: set[str] = field(default_factory=set)

    def record(self) -> dict:
        return {**self.view.model_dump(), "commit": self.commit, "sha256": self.sha256, "placed": sorted(self.placed)}


class DownloadManager:
    """The download jobs of one backend: start, list, cancel, follow; worker threads do the transfers.

    Args:
        settings: home (staging, jobs.json, the saved token) and the cache folders.
        engine: reaches the cache volume when the Hugging Face cache is not a host folder.
        resolver: turns a request into files (backend/hub.py's HubClient by default).
    """

    def __init__(self, settings: Settings, engine: Engine, resolver: Resolver = hub_resolver,
                 max_parallel: int = MAX_PARALLEL):
        self.settings = settings
        self.engine = engine
        self.resolver = resolver
        self.folder = settings.home / "downloads"
        self.jobs_path = self.folder / "jobs.json"
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._persist_lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._wake = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._max_parallel = max_parallel
        self._stopping = False
        self._stop_pump = threading.Event()
        self._subscribers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        #: Counts the downloads finished by this backend (the library rescans cache volumes when it changes).
        self.generation = 0

    # -- life cycle -------------------------------------------------------------------

    def open(self) -> None:
        """Read jobs.json, queue again the jobs a stopped backend left unfinished, start the workers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            records = json.loads(self.jobs_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            records = []
        except (OSError, ValueError):
            aside = self.jobs_path.with_name(f"jobs.unreadable-{int(time.time())}.json")
            log.warning("downloads: %s is unreadable; moved aside to %s", self.jobs_path, aside)
            with contextlib.suppress(OSError):
                os.replace(self.jobs_path, aside)
            records = []
        for rec in records if isinstance(records, list) else []:
            try:
                commit, sha, placed = rec.pop("commit"), rec.pop("sha256", {}), rec.pop("placed", [])
                view = Download.model_validate(rec)
            except (KeyError, ValueError):
                continue
            job = _Job(view, commit, sha, placed=set(placed))
            if view.state in ("queued", "running"):
                view.state = "queued"
                view.target = self.target_name()  # the cache setting may have changed since
                self._count_staged(job)
                self._queue.append(view.id)
            else:
                job.released.set()
            self._jobs[view.id] = job
        self._persist()
        try:  # a backend killed while copying into the volume leaves its helper container behind
            self.engine.remove_helpers({HELPER_HOME_LABEL: helper_labels(self.settings)[HELPER_HOME_LABEL]})
        except Exception as exc:  # noqa: BLE001 - no engine now: nothing of ours can be running there either
            log.info("downloads: leftover helper containers not checked (%s)", _describe(exc))
        for i in range(self._max_parallel):
            t = threading.Thread(target=self._work, name=f"download-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        pump = threading.Thread(target=self._pump, name="download-progress", daemon=True)
        pump.start()
        self._threads.append(pump)

    def close(self) -> None:
        """Stop the workers; running jobs stay ``running`` in jobs.json and resume at the next start."""
        self._stop_pump.set()
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            running = [j for j in self._jobs.values() if j.view.state == "running"]
        for job in running:
            self._interrupt(job)
        for t in self._threads:
            t.join(timeout=10)

    # -- the API's operations ---------------------------------------------------------

    def list(self) -> list[Download]:
        with self._lock:
            now = time.monotonic()
            return [_rate(j, now).model_copy(deep=True) for j in sorted(self._jobs.values(), key=lambda j: j.view.created)]

    def get(self, job_id: str) -> Download:
        with self._lock:
            return _rate(self._job(job_id), time.monotonic()).model_copy(deep=True)

    def start(self, req: DownloadRequest) -> tuple[Download, bool]:
        """Check the request against the Hub and the free space, then queue it (blocking: call from a thread).

        Returns:
            The job, and whether it was created now (False: the same files were already downloading).

        Raises:
            The Hub's domain errors (unknown repo, gated, unreachable), InvalidDownload (no such
            file or variant), NotEnoughSpace, EngineUnavailable/ImageUnavailable (cache volume).
        """
        resolved = self.resolver(self.settings, req.repo_id, req.revision, req.variant, req.files)
        paths = sorted(p for p, _s, _h in resolved.files)
        if (same := self._same(req, paths)) is not None:
            return same, False
        job_id = "dl-" + _random.token_hex(6)
        view = Download(
            id=job_id, repo_id=req.repo_id, revision=req.revision, variant=req.variant, state="queued",
            files=[DownloadFile(path=p, size=s) for p, s, _h in resolved.files],
            bytes_total=sum(s for _p, s, _h in resolved.files), bytes_done=0, target=self.target_name(),
            created=now_iso())
        job = _Job(view, resolved.commit, {p: h for p, _s, h in resolved.files})
        self._adopt_failed(req, paths, job)
        self._check_space(job)
        with self._lock:
            if (same := self._same(req, paths)) is not None:  # an identical request won the race
                return same, False
            finished = sorted((j for j in self._jobs.values() if j.view.state in FINISHED), key=lambda j: j.view.created)
            for old in finished[:max(0, len(finished) - KEEP_FINISHED + 1)]:
                del self._jobs[old.view.id]  # the list shows recent history, not every download ever made
                shutil.rmtree(self.folder / old.view.id, ignore_errors=True)
            self._jobs[job_id] = job
            self._queue.append(job_id)
            self._persist()
            self._wake.notify()
        return view.model_copy(deep=True), True

    def _adopt_failed(self, req: DownloadRequest, paths: list[str], job: _Job) -> None:
        """Take over the staged bytes of a failed download of the same files: asking again resumes it.

        The failed job leaves the list; its partial files become the new job's (same commit only).
        """
        with self._lock:
            old = next((j for j in self._jobs.values() if j.view.state == "failed" and j.commit == job.commit
                        and j.view.repo_id == req.repo_id and sorted(f.path for f in j.view.files) == paths), None)
            if old is None:
                return
            del self._jobs[old.view.id]
        staged = self.folder / old.view.id
        if staged.is_dir():
            os.replace(staged, self.folder / job.view.id)
        self._persist()

    def _same(self, req: DownloadRequest, paths: list[str]) -> Download | None:
        """The queued or running job for the same repo, revision and files, if any."""
        with self._lock:
            for job in self._jobs.values():
                v = job.view
                if (v.state in ("queued", "running") and v.repo_id == req.repo_id and v.revision == req.revision
                        and sorted(f.path for f in v.files) == paths):
                    return v.model_copy(deep=True)
        return None

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job and remove its partial files; forget a finished one.

        Waits (up to 30 s) for the worker to let go of the job, so the staging files are gone
        when this returns.
        """
        with self._lock:
            job = self._job(job_id)
            if job.view.state in FINISHED:
                del self._jobs[job_id]
                self._persist()
                shutil.rmtree(self.folder / job_id, ignore_errors=True)  # a failed one's partial files
                return
            job.cancel.set()
            running = job.view.state == "running"
            if not running:
                with contextlib.suppress(ValueError):
                    self._queue.remove(job_id)
                job.released.set()
        if running:
            self._interrupt(job)
            job.released.wait(timeout=30)
        shutil.rmtree(self.folder / job_id, ignore_errors=True)
        self._finish(job, "cancelled", None)

    # -- events -----------------------------------------------------------------------

    def subscribe(self, job_id: str) -> tuple[asyncio.Queue, Download]:
        """A queue of ``(event, Download)`` for ``job_id``, and the job as it is now (call on the event loop)."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            view = self._job(job_id).view.model_copy(deep=True)
            self._subscribers.setdefault(job_id, []).append((asyncio.get_running_loop(), queue))
        return queue, view

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        with self._lock:
            subs = [s for s in self._subscribers.get(job_id, []) if s[1] is not queue]
            if subs:
                self._subscribers[job_id] = subs
            else:
                self._subscribers.pop(job_id, None)

    def _publish(self, job: _Job, event: str) -> None:
        with self._lock:  # the worker changes the view under this lock: copy a whole picture of it
            view = job.view.model_copy(deep=True)
            subs = list(self._subscribers.get(view.id, ()))
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(queue.put_nowait, (event, view))

    # -- where files go ---------------------------------------------------------------

    def host_cache(self) -> Path | None:
        folder = self.settings.cache_dirs.get(CACHE_KIND)
        return folder.expanduser().resolve() if folder is not None else None

    def target_name(self) -> str:
        host = self.host_cache()
        return str(host) if host is not None else f"volume {VOLUME}"

    def helper_image(self) -> str:
        """A local image with python3 for helper containers: the base image the demo is built from."""
        image = pick_base_image(self.settings.demo_base_image, self.engine.image_exists)
        if not self.engine.image_exists(image):
            raise ImageUnavailable(f"No image to reach the cache volume {VOLUME} with.",
                                   hint=missing_base_hint(image, self.settings.demo_base_image))
        return image

    def _placed(self, job: _Job, blobs: dict[str, int] | None = None) -> set[str]:
        """The job's files already in the cache (same blob, same size): nothing to download for them."""
        host = self.host_cache()
        done = set()
        for f in job.view.files:
            etag = job.sha256.get(f.path)
            if not etag:
                continue
            if host is not None:
                blob = host / HUB_FOLDER / repo_folder(job.view.repo_id) / "blobs" / etag
                if blob.is_file() and blob.stat().st_size == f.size:
                    done.add(f.path)
            elif blobs is not None and blobs.get(etag) == f.size:
                done.add(f.path)
        return done

    def _check_space(self, job: _Job) -> None:
        """Refuse a job that would not fit: on the staging disk, and in the cache (host folder or volume)."""
        host = self.host_cache()
        blobs = None
        if host is None:
            free_target, blobs = volume_state(self.engine, self.helper_image(), self.settings, job.view.repo_id)
            where_target = f"the Docker volume {VOLUME}"
        else:
            existing = _existing_parent(host)
            free_target = shutil.disk_usage(existing).free
            where_target = str(host)
        placed = job.placed = self._placed(job, blobs)
        self._count_staged(job)
        need_target = sum(f.size for f in job.view.files if f.path not in placed)
        need_stage = sum(f.size - f.bytes_done for f in job.view.files if f.path not in placed)
        self.folder.mkdir(parents=True, exist_ok=True)
        free_stage = shutil.disk_usage(self.folder).free
        same_disk = host is not None and os.stat(self.folder).st_dev == os.stat(_existing_parent(host)).st_dev
        checks = [(need_stage, free_stage, f"the staging folder {self.folder}")]
        if not same_disk:  # on one disk a staged file is renamed into the cache: counted once
            checks.append((need_target, free_target, where_target))
        for need, free, where in checks:
            if need > free:
                raise NotEnoughSpace(
                    f"{job.view.repo_id} needs {_size(need)} but only {_size(free)} is free on {where}.",
                    hint="Free some space (Library → Delete removes models you no longer use), or choose a "
                         "smaller variant.",
                    details={"needed_bytes": need, "free_bytes": free, "where": where})

    # -- the worker -------------------------------------------------------------------

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise DownloadNotFound(f"No download '{job_id}'.", hint="GET /api/downloads lists them.")
        return job

    def _persist(self) -> None:
        # One writer at a time, each with the state as it is when it writes: a slower writer never
        # replaces a newer file with an older picture.
        # Locks in one order only (``_lock``, then ``_persist_lock``; callers may hold ``_lock``), and the
        # write itself needs no ``_lock``.
        with self._lock:
            self._persist_lock.acquire()
            records = [j.record() for j in self._jobs.values()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write(self.jobs_path, json.dumps(records, indent=1))
        finally:
            self._persist_lock.release()

    def _count_staged(self, job: _Job) -> None:
        for f in job.view.files:
            if f.path in job.placed:
                f.bytes_done = f.size
                continue
            try:
                f.bytes_done = min((self._staged_path(job, f.path)).stat().st_size, f.size)
            except OSError:
                f.bytes_done = 0
        job.view.bytes_done = sum(f.bytes_done for f in job.view.files)

    def _staged_path(self, job: _Job, path: str) -> Path:
        return self.folder / job.view.id / (path.replace("/", "__") + ".part")

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                job = self._jobs.get(self._queue.popleft())
                if job is None or job.cancel.is_set():
                    continue
                job.view.state = "running"
                job.released.clear()
                job.samples.clear()
                job.samples.append((time.monotonic(), job.view.bytes_done))
                self._persist()
            self._publish(job, "progress")
            try:
                self._run(job)
            except _Interrupted:
                pass  # cancelled (cancel() finishes it) or the backend is stopping (resumed next start)
            except ModelDeckError as exc:
                self._finish(job, "failed", f"{exc.message} {exc.hint or ''}".strip())
            except Exception as exc:  # noqa: BLE001 - one job's failure never stops the worker
                log.exception("download %s failed", job.view.id)
                self._finish(job, "failed", _describe(exc))
            finally:
                job.released.set()

    def _pump(self) -> None:
        """Send progress the workers held back (at most PROGRESS_HZ a second), and once a second the
        running jobs' rates, which fall while a transfer stalls and no chunk arrives to report it."""
        tick = 0
        while not self._stop_pump.wait(1.0 / PROGRESS_HZ):
            tick += 1
            now = time.monotonic()
            with self._lock:
                due = [j for j in self._jobs.values() if j.view.state == "running"
                       and (j.dirty or tick % int(PROGRESS_HZ) == 0) and now - j.last_publish >= 1.0 / PROGRESS_HZ]
                for j in due:
                    _rate(j, now)
                    j.last_publish, j.dirty = now, False
            for j in due:
                self._publish(j, "progress")

    def _finish(self, job: _Job, state: State, error: str | None) -> None:
        with self._lock:
            if job.view.state in FINISHED:
                return
            job.view.state, job.view.error, job.view.finished = state, error, now_iso()
            self.generation += 1
            job.view.rate_bps = job.view.eta_s = None
            if job.view.id in self._jobs:
                self._persist()
        self._publish(job, state)

    def _run(self, job: _Job) -> None:
        from huggingface_hub.utils import build_hf_headers

        from backend.hub import HubClient

        hub = HubClient(self.settings)
        headers = build_hf_headers(token=hub.token() or False, library_name="modeldeck")
        headers["Accept-Encoding"] = "identity"
        endpoint = hub.endpoint
        metas: dict[str, tuple[str, str]] = {}
        timeout = httpx.Timeout(30.0, read=60.0)
        with httpx.Client(headers=headers, timeout=timeout, follow_redirects=True) as client:
            for f in job.view.files:
                self._check(job)
                if f.path in job.placed and job.sha256.get(f.path):
                    metas[f.path] = (job.sha256[f.path], job.commit)
                    continue
                etag, commit = self._fetch(client, job, f, endpoint)
                metas[f.path] = (etag, commit)
        self._check(job)
        self._place(job, metas)
        shutil.rmtree(self.folder / job.view.id, ignore_errors=True)
        self._finish(job, "done", None)

    def _check(self, job: _Job) -> None:
        if job.cancel.is_set() or self._stopping:
            raise _Interrupted()

    def _interrupt(self, job: _Job) -> None:
        """Wake a worker blocked reading ``job``'s response (a stalled server): shut its socket down."""
        for sock in list(job.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _fetch(self, client: httpx.Client, job: _Job, f: DownloadFile, endpoint: str) -> tuple[str, str]:
        """Stage one file completely (resuming from what is staged); return its blob name and commit."""
        from urllib.parse import quote

        url = f"{endpoint}/{job.view.repo_id}/resolve/{job.commit}/{quote(f.path)}"
        staged = self._staged_path(job, f.path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        etag, commit = self._head(client, job, f, url)
        attempts = 0
        while True:
            self._check(job)
            have = staged.stat().st_size if staged.exists() else 0
            if have > f.size:
                staged.unlink()
                have = 0
            if have == f.size:
                staged.touch()  # an empty file has a blob too
                self._progress(job, f, have, force=True)
                return etag, commit
            req_headers = {"Range": f"bytes={have}-"} if have else {}
            progressed = False
            try:
                with client.stream("GET", url, headers=req_headers) as resp:
                    net = resp.extensions.get("network_stream")
                    sock = net.get_extra_info("socket") if net is not None else None
                    if sock is not None:
                        job.sockets.append(sock)
                    try:
                        if resp.status_code in (401, 403, 404):
                            resp.read()
                            raise ModelDeckError(_hub_refusal(resp, job.view.repo_id, f.path))
                        if resp.status_code == 416 and have:
                            staged.unlink()
                            continue
                        if resp.status_code >= 400:
                            resp.read()
                            raise _Retry(f"the Hub answered {resp.status_code}")
                        mode = "ab" if resp.status_code == 206 else "wb"
                        done = have if resp.status_code == 206 else 0
                        with open(staged, mode, buffering=0) as out:
                            for chunk in resp.iter_raw():
                                out.write(chunk)
                                done += len(chunk)
                                progressed = True
                                self._progress(job, f, done)
                                self._check(job)
                    finally:
                        if sock is not None:
                            with contextlib.suppress(ValueError):
                                job.sockets.remove(sock)
                got = staged.stat().st_size
                if got == f.size:
                    self._progress(job, f, got, force=True)
                    return etag, commit
                raise _Retry(f"the transfer ended at {got} of {f.size} bytes")
            except (httpx.TransportError, _Retry, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                    raise NotEnoughSpace(f"The staging disk ({self.folder}) filled up while downloading "
                                      f"{f.path}.", hint="Free some space, then download again.") from None
                self._check(job)
                attempts = 0 if progressed else attempts + 1
                if attempts >= MAX_RETRIES:
                    raise ModelDeckError(f"Downloading {f.path} from {endpoint} failed {MAX_RETRIES} times in a row: "
                                         f"{_describe(exc)}", hint="Check the network; starting the download "
                                                                    "again resumes where it stopped.") from None
                log.info("download %s: %s; resuming (%s)", job.view.id, f.path, _describe(exc))
                job.cancel.wait(timeout=min(0.2 * 2 ** attempts, 5.0))  # backoff, cut short by a cancel

    def _head(self, client: httpx.Client, job: _Job, f: DownloadFile, url: str) -> tuple[str, str]:
        """Ask the Hub for the file's blob name (ETag: sha256 for LFS files, git sha1 otherwise), commit and size."""
        for attempt in range(MAX_RETRIES):
            self._check(job)
            try:
                resp = client.head(url, follow_redirects=False)
            except httpx.TransportError as exc:
                error = _describe(exc)
            else:
                if resp.status_code in (401, 403, 404):
                    raise ModelDeckError(_hub_refusal(resp, job.view.repo_id, f.path))
                if resp.status_code < 400:
                    size = resp.headers.get("X-Linked-Size") or (
                        None if resp.is_redirect else resp.headers.get("Content-Length"))
                    if size and size.isdigit() and int(size) != f.size:
                        with self._lock:
                            f.size = int(size)
                            job.view.bytes_total = sum(x.size for x in job.view.files)
                    etag = _etag(resp) or job.sha256.get(f.path)
                    if not etag:
                        raise ModelDeckError(f"The Hub sent no ETag for {f.path} of {job.view.repo_id}; "
                                             "ModelDeck cannot name its blob in the cache.")
                    return etag, resp.headers.get("X-Repo-Commit") or job.commit
                error = f"the Hub answered {resp.status_code}"
            job.cancel.wait(timeout=min(0.2 * 2 ** attempt, 5.0))
        raise ModelDeckError(f"Asking {url} for {f.path} failed {MAX_RETRIES} times: {error}",
                             hint="Check the network; starting the download again resumes where it stopped.")

    def _progress(self, job: _Job, f: DownloadFile, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            f.bytes_done = done
            v = job.view
            v.bytes_done = sum(x.bytes_done for x in v.files)
            if len(job.samples) > 1 and now - job.samples[-1][0] < 0.1:
                job.samples[-1] = (job.samples[-1][0], v.bytes_done)  # one sample per tenth of a second
            else:
                job.samples.append((now, v.bytes_done))
            _rate(job, now)
            if not force and now - job.last_publish < 1.0 / PROGRESS_HZ:
                job.dirty = True  # the pump sends it when the quarter second is over
                return
            job.last_publish, job.dirty = now, False
            persist = force or now - job.last_persist >= 2.0
            if persist:
                job.last_persist = now
        if persist:
            self._persist()
        self._publish(job, "progress")

    # -- placing files into the cache -------------------------------------------------

    def _place(self, job: _Job, metas: dict[str, tuple[str, str]]) -> None:
        """Move every staged file into the cache's hub layout, then point ``refs/<revision>`` at the commit."""
        commit = next(iter(metas.values()))[1] if metas else job.commit
        files = []
        for f in job.view.files:
            staged = self._staged_path(job, f.path)
            files.append(CacheFile(f.path, metas[f.path][0], staged if staged.exists() else None))
        host = self.host_cache()
        if host is not None:
            place_in_folder(host, job.view.repo_id, job.view.revision, commit, files)
        else:
            place_in_volume(self.engine, self.helper_image(), self.settings, job.view.repo_id, job.view.revision,
                            commit, files)


def _rate(job: _Job, now: float) -> Download:
    """Bring the job's rate and time left up to ``now``: bytes over the last RATE_WINDOW_S seconds.

    Counting up to now (not to the last chunk) lets a stalled transfer's rate fall to 0 instead of
    showing the speed it last had. Call with the manager's lock held.
    """
    v = job.view
    if v.state != "running":
        return v
    while len(job.samples) > 1 and now - job.samples[1][0] > RATE_WINDOW_S:
        job.samples.popleft()
    if job.samples and now - job.samples[0][0] > 0.5:
        t0, b0 = job.samples[0]
        v.rate_bps = max(v.bytes_done - b0, 0) / (now - t0)
        v.eta_s = (v.bytes_total - v.bytes_done) / v.rate_bps if v.rate_bps > 0 else None
    return v


class _Interrupted(Exception):
    pass


class _Retry(Exception):
    pass


def _etag(resp: httpx.Response) -> str | None:
    raw = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag")
    if not raw:
        return None
    etag = raw.removeprefix("W/").strip('"')
    return etag if re.fullmatch(r"[A-Za-z0-9_.\-]{1,128}", etag) else None


def _hub_refusal(resp: httpx.Response, repo_id: str, path: str) -> str:
    code = resp.headers.get("X-Error-Code") or ""
    if code == "GatedRepo" or resp.status_code in (401, 403) and code != "RepoNotFound":
        return (f"{repo_id} is gated: the Hub refused {path} ({resp.status_code}). Accept the licence on "
                f"https://huggingface.co/{repo_id}, then {SAVE_TOKEN}, and download again.")
    return f"The Hub has no {path} in {repo_id} ({resp.status_code} {code or resp.reason_phrase})."


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

"""The suite runner: answers a run's cells through ModelDeck's own /v1, a few at a time per deployment, on the event loop.

Each request goes to ``http://<the backend's own address>/v1/chat/completions`` with the app's
token, streamed with ``stream_options.include_usage``: the same routing, metrics and refusals as any
client's. Per deployment, ``concurrency`` worker coroutines take the next pending cell from that
deployment's queue, so no more than that many of the run's requests are ever in flight on one
model (the playground and other clients keep their share), and no task or thread exists per cell.
Each finished cell is written at once and sent to the run's event subscribers; a cancelled run
stops its requests (their connections close, and the proxy closes the model server's); a run a
stopped backend left unfinished resumes its pending cells when the backend starts again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from backend import __version__
from backend.checks import all_passed, evaluate_all
from backend.errors import DeploymentNotFound, EngineUnavailable
from backend.metrics import decode_span, tokens_per_s
from backend.netutil import base_url_of
from backend.openai_replies import CHAT, ReplyCollector
from backend.stats.models import StatsSnapshot
from backend.suite_runs import (
    Cell,
    CellResult,
    CheckOutcome,
    PendingCell,
    RunRequest,
    RunStore,
    RunSummary,
    now_iso,
)
from backend.suites import Case, Suite

log = logging.getLogger("modeldeck.suites")

#: A label a launch may carry with the model's exact revision (a Hub commit).
REVISION_LABEL = "modeldeck.revision"
#: How long one answer may go without a byte before it counts as failed.
READ_TIMEOUT_S = 300.0
#: Provenance fields a rerun compares, with the words its differences use.
COMPARED = (("recipe", "runtime"), ("image", "image"), ("image_digest", "image digest"), ("model", "model"),
            ("revision", "revision"), ("args", "recipe arguments"))
_HASH_CHUNK = 4 * 1024 * 1024
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class BackendGone(Exception):
    """The runner could not reach its own backend (it is stopping): the cell stays pending for the resume."""


@dataclass
class _Active:
    """A run being answered in this process."""

    summary: RunSummary
    suite: Suite
    cases: dict[str, Case]
    columns: dict[str, tuple[str, dict[str, Any]]]  # key -> (deployment, request fields)
    workers: list[asyncio.Task] = field(default_factory=list)
    subscribers: set[asyncio.Queue] = field(default_factory=set)
    driver: asyncio.Task | None = None


def _loopback(host: str) -> str:
    # A backend bound to every address still answers on loopback; the Host check wants a loopback name.
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class SuiteRunner:
    """Starts, follows, cancels and resumes runs; ``app.state.suite_runs``.

    Args:
        store: where runs and cells are kept.
        deployments: the DeploymentService (registry and engine) provenance is read from.
        token: the app's bearer token, for its own /v1.
        host, port: the address the backend was told to listen on (resumed runs use it until a
            request shows the address it really listens on).
        snapshot: the stats sampler's latest snapshot (GPU names, and which GPUs a deployment holds).
    """

    def __init__(self, store: RunStore, deployments: Any, token: str, host: str, port: int,
                 snapshot: Callable[[], StatsSnapshot | None] = lambda: None):
        self.store = store
        self.deployments = deployments
        self._token = token
        self._configured = f"http://{_loopback(host)}:{port}"
        self.base_url: str | None = None
        self._snapshot = snapshot
        self._active: dict[str, _Active] = {}
        self._client: httpx.AsyncClient | None = None
        self._resumer: asyncio.Task | None = None
        self._digests: dict[tuple[str, int, int], str] = {}

    # -- life --------------------------------------------------------------------------------

    def open(self) -> None:
        """Make the HTTP client and resume the runs a stopped backend left (call on the app's loop)."""
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=128),
                                         trust_env=False)
        self._resumer = asyncio.create_task(self._resume_unfinished(), name="suite-runs-resume")

    async def close(self) -> None:
        """Stop every run in flight; they stay resumable (status ``interrupted``)."""
        if self._resumer is not None:
            self._resumer.cancel()
        for run_id in list(self._active):
            await self._stop(run_id, "interrupted", finished=False)
        if self._client is not None:
            await self._client.aclose()

    def learn_address(self, scope: dict) -> None:
        """Remember the address a request came in on: where this backend really listens."""
        if self.base_url is None:
            self.base_url = base_url_of(scope)

    def running_suite_ids(self) -> set[str]:
        """Suites with a run being answered now."""
        return {a.summary.suite_id for a in self._active.values()}

    def is_active(self, run_id: str) -> bool:
        return run_id in self._active

    # -- starting ----------------------------------------------------------------------------

    async def start(self, suite: Suite, request: RunRequest, rerun_of: str | None = None) -> RunSummary:
        """Record what will produce the answers, store the run with every cell pending, and start it."""
        provenance = await asyncio.to_thread(self.provenance, request)
        summary = await asyncio.to_thread(self.store.create, suite.model_dump(mode="json"), request, provenance,
                                          rerun_of)
        await self._launch(summary.id)
        return summary

    async def _launch(self, run_id: str) -> None:
        suite_data, request, _ = await asyncio.to_thread(self.store.config, run_id)
        suite = await asyncio.to_thread(Suite.model_validate, suite_data)
        summary = await asyncio.to_thread(self.store.summary, run_id)
        active = _Active(summary=summary, suite=suite, cases={c.id: c for c in suite.cases},
                         columns={key: (dep, p.body()) for key, dep, p in request.columns()})
        self._active[run_id] = active
        active.driver = asyncio.create_task(self._drive(run_id, request), name=f"suite-run-{run_id}")

    async def _resume_unfinished(self) -> None:
        try:
            run_ids = await asyncio.to_thread(self.store.unfinished)
            if not run_ids:
                return
            await self._find_address(run_ids[0])
            for run_id in run_ids:
                if run_id not in self._active:
                    log.info("resuming suite run %s", run_id)
                    await self._launch(run_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the backend must start whatever an old run holds
            log.exception("resuming suite runs failed")

    async def _find_address(self, run_id: str) -> None:
        """Wait until this backend answers: at the address a request showed, else the configured one.

        The configured address counts only when it answers with this backend's token and knows the
        run, so a test server on another port never sends a run's requests to some other backend.
        """
        assert self._client is not None
        while self.base_url is None:
            try:
                r = await self._client.get(f"{self._configured}/api/runs/{run_id}",
                                           headers={"Authorization": f"Bearer {self._token}"}, timeout=5)
                if r.status_code == 200:
                    self.base_url = self._configured
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            await asyncio.sleep(0.2)

    # -- running -----------------------------------------------------------------------------

    async def _drive(self, run_id: str, request: RunRequest) -> None:
        active = self._active[run_id]
        try:
            pending = await asyncio.to_thread(self.store.pending, run_id)
            await self._set_status(active, "running")
            queues: dict[str, deque[PendingCell]] = {}
            for cell in pending:
                queues.setdefault(active.columns[cell.column][0], deque()).append(cell)
            for deployment, queue in queues.items():
                for n in range(min(request.concurrency, len(queue))):
                    active.workers.append(asyncio.create_task(self._work(active, queue),
                                                              name=f"suite-run-{run_id}-{deployment}-{n}"))
            results = await asyncio.gather(*active.workers, return_exceptions=True)
            if any(isinstance(r, BackendGone) for r in results):
                log.warning("suite run %s: the backend stopped answering; it resumes when the backend starts", run_id)
                await self._finish(run_id, "interrupted", finished=False)
                return
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
            await self._finish(run_id, "completed")
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a run that breaks says so instead of hanging "running"
            log.exception("suite run %s failed", run_id)
            for task in active.workers:
                task.cancel()
            await asyncio.gather(*active.workers, return_exceptions=True)
            await asyncio.to_thread(self.store.cancel_pending, run_id)
            await self._finish(run_id, "failed")

    async def _work(self, active: _Active, queue: deque[PendingCell]) -> None:
        run_id = active.summary.id
        while queue:
            pending = queue.popleft()
            result = await self._answer(active, pending)
            cell = await asyncio.to_thread(self.store.finish_cell, run_id, pending.id, result)
            s = active.summary
            active.summary = s.model_copy(update={"done": s.done + 1, "errors": s.errors + (cell.status == "error")})
            self._publish(active, "cell", cell)
            self._publish(active, "progress", active.summary)

    async def _answer(self, active: _Active, pending: PendingCell) -> CellResult:
        """Ask the cell's deployment for its answer and measure it.

        Raises:
            BackendGone: this backend did not take the connection, or dropped it (it is stopping).
        """
        assert self._client is not None and self.base_url is not None
        deployment, params = active.columns[pending.column]
        case = active.cases[pending.case_id]
        body = {"model": deployment, "messages": case.render(active.suite), "stream": True,
                "stream_options": {"include_usage": True}, **params}
        # A model server that closed a kept-alive connection unanswered is asked again by the
        # proxy's pool (backend/upstream_pool.py), so a 502 here is a real failure of the cell.
        collector = ReplyCollector(CHAT)
        started, t0 = time.time(), time.perf_counter()
        ttft: float | None = None
        try:
            async with self._client.stream(
                    "POST", f"{self.base_url}/v1/chat/completions", json=body,
                    headers={"Authorization": f"Bearer {self._token}"},
                    timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S, pool=None)) as r:
                if r.status_code >= 400:
                    raw = await r.aread()
                    return CellResult(status="error", error=_error_message(r.status_code, raw),
                                      started_at=started, duration_s=time.perf_counter() - t0,
                                      finished_at=time.time())
                async for chunk in r.aiter_raw():
                    collector.feed(chunk)
                    if ttft is None and collector.has_text:
                        ttft = time.perf_counter() - t0
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise BackendGone(str(exc)) from None
        except httpx.HTTPError as exc:
            return CellResult(status="error", error=f"{type(exc).__name__}: {exc}".rstrip(": "),
                              started_at=started, duration_s=time.perf_counter() - t0, finished_at=time.time())
        duration = time.perf_counter() - t0
        text = collector.text()
        usage = collector.usage or {}
        completion = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else None
        prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else None
        rate = None
        if completion:  # as RequestMetrics.tokens_per_s: decode speed, else over the whole request
            span = decode_span(completion, duration, ttft)
            rate = tokens_per_s(*span) if span else tokens_per_s(completion, duration)
        figures = dict(text=text, ttft_s=ttft, duration_s=duration, prompt_tokens=prompt, completion_tokens=completion,
                       tokens_per_s=rate, finish_reason=collector.finish_reason, started_at=started,
                       finished_at=time.time())
        if collector.error is not None:
            return CellResult(status="error", error=collector.error, **figures)
        results = evaluate_all(case.all_checks(active.suite), text)
        return CellResult(status="done", checks=[CheckOutcome(**r.model_dump()) for r in results],
                          passed=all_passed(results), **figures)

    # -- events ------------------------------------------------------------------------------

    def _publish(self, active: _Active, name: str, data: Cell | RunSummary) -> None:
        for queue in active.subscribers:
            queue.put_nowait((name, data))

    async def _set_status(self, active: _Active, status: str, *, finished: bool = False) -> None:
        active.summary = await asyncio.to_thread(self.store.set_status, active.summary.id, status, finished=finished)
        self._publish(active, "progress", active.summary)

    async def _finish(self, run_id: str, status: str, *, finished: bool = True) -> RunSummary:
        active = self._active.pop(run_id, None)
        summary = await asyncio.to_thread(self.store.set_status, run_id, status, finished=finished)
        if active is not None:
            active.summary = summary
            self._publish(active, "end", summary)
        return summary

    async def events(self, run_id: str) -> AsyncIterator[tuple[str, Cell | RunSummary]]:
        """The run's events: its summary first, every cell finished so far, then ``cell``/``progress``
        as they happen, last ``end``.

        A client that connects after the run started (cells finish while its request travels)
        still sees every cell once: it subscribes before reading the store, and a live event for a
        cell it was already given is not sent again.

        Raises:
            RunNotFound: no such run (raised on the first iteration).
        """
        queue: asyncio.Queue = asyncio.Queue()
        active = self._active.get(run_id)
        if active is not None:
            active.subscribers.add(queue)
        try:
            summary = await asyncio.to_thread(self.store.summary, run_id)
            cells, _ = await asyncio.to_thread(self.store.cells, run_id)
            yield "progress", summary
            sent: set[int] = set()
            for cell in cells:
                if cell.status != "pending":
                    sent.add(cell.id)
                    yield "cell", cell
            if active is None or run_id not in self._active:
                yield "end", summary
                return
            while True:
                name, data = await queue.get()
                if name == "cell" and data.id in sent:
                    continue
                yield name, data
                if name == "end":
                    return
        finally:
            if active is not None:
                active.subscribers.discard(queue)

    # -- stopping ----------------------------------------------------------------------------

    async def _stop(self, run_id: str, status: str, *, finished: bool = True) -> RunSummary | None:
        active = self._active.get(run_id)
        if active is None:
            return None
        if active.driver is not None:
            active.driver.cancel()
        for task in active.workers:
            task.cancel()
        await asyncio.gather(*([active.driver] if active.driver else []), *active.workers, return_exceptions=True)
        if status == "cancelled":
            await asyncio.to_thread(self.store.cancel_pending, run_id)
        return await self._finish(run_id, status, finished=finished)

    async def cancel(self, run_id: str) -> RunSummary:
        """Stop the run's requests now and mark its pending cells cancelled; a finished run is left as it is."""
        stopped = await self._stop(run_id, "cancelled")
        if stopped is not None:
            return stopped
        summary = await asyncio.to_thread(self.store.summary, run_id)
        if summary.status in ("queued", "running", "interrupted"):  # left by a stopped backend, not resumed yet
            await asyncio.to_thread(self.store.cancel_pending, run_id)
            summary = await asyncio.to_thread(self.store.set_status, run_id, "cancelled", finished=True)
        return summary

    async def delete(self, run_id: str) -> None:
        await self._stop(run_id, "cancelled")
        await asyncio.to_thread(self.store.delete, run_id)

    # -- provenance --------------------------------------------------------------------------

    def provenance(self, request: RunRequest) -> dict[str, Any]:
        """What will produce a run's answers: per deployment its runtime, image and digest, model and
        revision, arguments and GPUs; the parameters, ModelDeck's version and the machine's GPUs. Blocks."""
        gpus = self._gpu_names()
        return {"modeldeck_version": __version__, "created_at": now_iso(),
                "gpus": [gpus[i] for i in sorted(gpus)],
                "parameter_sets": [p.model_dump() for p in request.parameter_sets],
                "seeds": {p.label: p.seed for p in request.parameter_sets},
                "repetitions": request.repetitions, "concurrency": request.concurrency,
                "deployments": {name: self._deployment_provenance(name) for name in request.deployments}}

    def _gpu_names(self) -> dict[int, str]:
        snap = self._snapshot()
        return {g.index: g.name or f"GPU {g.index}" for g in snap.gpus} if snap is not None else {}

    def _deployment_gpus(self, dep_id: str) -> list[int]:
        snap = self._snapshot()
        sample = snap.deployments.get(dep_id) if snap is not None else None
        return list(sample.gpu_indices) if sample is not None else []

    def _deployment_provenance(self, served_name: str) -> dict[str, Any]:
        registry = self.deployments.registry
        upstream = registry.lookup(served_name)
        if upstream is None:
            return {"served_name": served_name, "missing": True}
        try:
            dep = self.deployments.get(upstream.deployment_id)
            if dep.container_id is None:
                return {"served_name": served_name, "deployment_id": dep.id, "missing": True}
            spec = self.deployments.engine.spec_of(dep.container_id)
            image_id, repo_digests = self.deployments.engine.image_identity(dep.container_id)
        except (DeploymentNotFound, EngineUnavailable) as exc:
            return {"served_name": served_name, "missing": True, "error": str(exc)}
        gpu_names = self._gpu_names()
        return {"served_name": served_name, "deployment_id": dep.id, "recipe": dep.recipe, "image": dep.image,
                "image_digest": image_id, "repo_digests": repo_digests, "model": dep.model,
                "revision": spec.labels.get(REVISION_LABEL) or self._hub_revision(dep.model)
                or self._file_digest(dep.model),
                "args": list(spec.command), "config_hash": dep.config_hash, "gpu_ids": dep.gpus,
                "gpus": [gpu_names[i] for i in self._deployment_gpus(dep.id) if i in gpu_names],
                "status": dep.status}

    def _hub_revision(self, model: str) -> str | None:
        """The Hub commit a Hub model's ``main`` points at in the Hugging Face cache folder the runtimes
        share (``hub/models--<org>--<name>/refs/main``), when that cache is a host folder; else None."""
        folder = self.deployments.settings.cache_dirs.get("huggingface")
        if folder is None or not _HUB_ID.fullmatch(model):
            return None
        try:
            commit = (folder / "hub" / f"models--{model.replace('/', '--')}" / "refs" / "main").read_text().strip()
        except OSError:
            return None
        return commit if _COMMIT.fullmatch(commit) else None

    def _file_digest(self, model: str) -> str | None:
        """``sha256:<hex>`` of a local model file (a GGUF), once per path, modification time and size."""
        if not os.path.isabs(model) or not os.path.isfile(model):
            return None
        st = os.stat(model)
        key = (model, st.st_mtime_ns, st.st_size)
        if key not in self._digests:
            cached = self.store.cached_digest(*key)
            if cached is None:
                h = hashlib.sha256()
                with open(model, "rb") as f:
                    while chunk := f.read(_HASH_CHUNK):
                        h.update(chunk)
                cached = f"sha256:{h.hexdigest()}"
                self.store.store_digest(*key, cached)
            self._digests[key] = cached
        return self._digests[key]


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What no longer matches between a run's provenance and the provenance of its rerun, in words."""
    out = []
    for name, old in (before.get("deployments") or {}).items():
        new = (now.get("deployments") or {}).get(name) or {"missing": True}
        if new.get("missing"):
            if not old.get("missing"):
                out.append(f"{name}: no longer deployed (launch it again, or its cells fail)")
            continue
        if old.get("missing"):
            out.append(f"{name}: was not deployed when the run was made, and is now")
            continue
        for key, words in COMPARED:
            if old.get(key) != new.get(key):
                out.append(f"{name}: {words} {_show(old.get(key))} → {_show(new.get(key))}")
    if before.get("modeldeck_version") != now.get("modeldeck_version"):
        out.append(f"ModelDeck version {before.get('modeldeck_version')} → {now.get('modeldeck_version')}")
    if before.get("gpus") != now.get("gpus"):
        out.append(f"GPUs {_show(before.get('gpus'))} → {_show(now.get('gpus'))}")
    return out


def _show(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


def _error_message(status: int, raw: bytes) -> str:
    """``HTTP <status>: <message>`` from an error body in OpenAI's (or ModelDeck's) shape."""
    message = None
    try:
        error = json.loads(raw).get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        pass
    return f"HTTP {status}: {message or raw.decode('utf-8', 'replace')[:500]}"

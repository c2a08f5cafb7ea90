"""Progress of one launch: events written by the launch thread, replayed and followed by any number of readers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel

Phase = Literal["queued", "pulling", "building", "creating", "starting", "loading", "ready", "failed"]
TERMINAL: frozenset[str] = frozenset({"ready", "failed"})


class LaunchEvent(BaseModel):
    """One step of a launch, as sent on the events stream."""

    seq: int
    time: float
    deployment_id: str
    phase: Phase
    message: str
    layer: str | None = None
    current: int | None = None
    total: int | None = None
    overall_current: int | None = None
    overall_total: int | None = None
    details: dict[str, Any] = {}


class LaunchProgress:
    """The event log of one launch.

    ``emit`` is called from the launch's worker thread; ``follow`` is an async iterator
    for the event loop that first replays every event so far, then yields new ones until
    the launch reaches ``ready`` or ``failed``. Readers never block the writer.
    """

    def __init__(self, deployment_id: str, config_hash: str, *, recipe: str = "", model: str = "",
                 served_name: str = "", image: str = "", host_port: int | None = None):
        self.deployment_id = deployment_id
        self.config_hash = config_hash
        self.recipe, self.model, self.served_name, self.image = recipe, model, served_name, image
        self.host_port = host_port
        self.started_at = time.time()
        self.container_id: str | None = None
        self._events: list[LaunchEvent] = []
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.finished = threading.Event()

    @property
    def events(self) -> list[LaunchEvent]:
        with self._lock:
            return list(self._events)

    @property
    def last(self) -> LaunchEvent | None:
        with self._lock:
            return self._events[-1] if self._events else None

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    def emit(self, phase: Phase, message: str, **fields: Any) -> LaunchEvent:
        """Record an event and hand it to every reader. Terminal phases end the log."""
        with self._lock:
            if self.finished.is_set():
                return self._events[-1]
            event = LaunchEvent(seq=len(self._events), time=time.time(), deployment_id=self.deployment_id,
                                phase=phase, message=message, **fields)
            self._events.append(event)
            subscribers = list(self._subscribers)
            if phase in TERMINAL:
                self.finished.set()
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that reader's loop is closed: it is gone
                pass
        return event

    async def follow(self) -> AsyncIterator[LaunchEvent]:
        """Every event so far, then each new one, until the launch ends."""
        queue: asyncio.Queue[LaunchEvent] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            backlog = list(self._events)
            if not self.finished.is_set():
                self._subscribers.append(entry)
        try:
            for event in backlog:
                yield event
            if backlog and backlog[-1].phase in TERMINAL:
                return
            while True:
                event = await queue.get()
                if event.seq < len(backlog):
                    continue  # emitted between the snapshot and the subscription
                yield event
                if event.phase in TERMINAL:
                    return
        finally:
            with self._lock:
                if entry in self._subscribers:
                    self._subscribers.remove(entry)

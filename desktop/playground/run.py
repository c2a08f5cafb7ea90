"""One streamed chat reply: drives an SseStream, decodes its chunks and measures it, off the widgets."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from desktop.client import ApiError, BackendClient, SseStream
from desktop.playground.chunks import parse_chunk
from desktop.playground.metrics import ReplyMeter
from desktop.playground.request import CHAT_PATH
from desktop.playground.transcript import ReplyMetrics


class ReplyRun(QObject):
    """A chat completion streaming from the backend (one per column and send).

    Exactly one of ``done`` / ``failed`` ends it, once; ``stop()`` ends it with ``done``
    (finish reason "stopped") at once: the stream is aborted and delivers nothing more.

    Signals:
        delta(str): generated text that just arrived.
        done(object, str): ReplyMetrics and the finish reason ("stop", "length", "stopped", ...).
        failed(str, bool): an error message; True when no text had arrived before it.
    """

    delta = Signal(str)
    done = Signal(object, str)
    failed = Signal(str, bool)

    def __init__(self, client: BackendClient, body: dict, headers: dict[str, str], parent: QObject | None = None):
        super().__init__(parent)
        self.body = body
        self._stream: SseStream = client.stream(CHAT_PATH, method="POST", body=body, headers=headers)
        self._meter: ReplyMeter | None = None
        self._finish: str | None = None
        self._got_text = False
        self._over = False
        self._stream.event.connect(self._on_stream_event)
        self._stream.failed.connect(self._on_stream_failed)
        self._stream.ended.connect(self._on_stream_ended)

    @property
    def stream(self) -> SseStream:
        return self._stream

    @property
    def active(self) -> bool:
        return not self._over

    def start(self) -> None:
        self._meter = ReplyMeter()
        self._stream.start()

    def stop(self) -> None:
        """Stop generating now: the connection closes, so the backend cancels the model's work."""
        self._stream.stop()
        if not self._over:
            self._end_done("stopped")

    def shutdown(self) -> None:
        """Stop without a verdict (the window is closing): no ``done`` or ``failed`` follows."""
        self._over = True
        self._stream.stop()

    def metrics(self) -> ReplyMetrics:
        return self._meter.result() if self._meter else ReplyMetrics()

    def _end_done(self, reason: str) -> None:
        self._over = True
        if self._meter:
            self._meter.finish()
        self.done.emit(self.metrics(), reason)

    def _on_stream_event(self, _name: str, data: object) -> None:
        chunk = parse_chunk(data)
        if self._over or chunk is None:
            return
        if chunk.done:
            self._end_done(self._finish or "stop")
            return
        if chunk.error is not None:
            self._fail(f"The model stopped with an error: {chunk.error}")
            return
        if self._meter:
            self._meter.add(chunk)
        if chunk.text:
            self._got_text = True
            self.delta.emit(chunk.text)
        if chunk.finish_reason:
            self._finish = chunk.finish_reason

    def _fail(self, message: str) -> None:
        self._over = True
        if self._meter:
            self._meter.finish()
        self.failed.emit(message, not self._got_text)

    def _on_stream_failed(self, error: ApiError) -> None:
        if not self._over:
            self._fail(str(error))

    def _on_stream_ended(self) -> None:
        if not self._over:
            if self._finish:  # a server that closes without [DONE]
                self._end_done(self._finish)
            else:
                self._fail("The stream ended before the reply was complete.")

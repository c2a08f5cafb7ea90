"""Backend calls owned by a widget: replies that can all be aborted when the widget shuts down."""

from __future__ import annotations

from collections.abc import Callable

import shiboken6
from PySide6.QtCore import QObject

from desktop.client import ApiError, BackendClient, Reply


class Calls(QObject):
    """Issues REST calls for its owner and routes the answers to callbacks while the owner lives.

    ``abort_all()`` (from the owner's ``shutdown()``) cancels what is still in flight, so no
    answer reaches a widget that is gone.
    """

    def __init__(self, client: BackendClient, parent: QObject):
        super().__init__(parent)
        self.client = client
        self._replies: set[Reply] = set()
        self._closed = False

    def get(self, path: str, ok: Callable | None = None, err: Callable | None = None, **kw) -> Reply | None:
        return self._track(lambda: self.client.get(path, **kw), ok, err)

    def post(self, path: str, body: dict | None = None, ok: Callable | None = None,
             err: Callable | None = None, **kw) -> Reply | None:
        return self._track(lambda: self.client.post(path, body, **kw), ok, err)

    def put(self, path: str, body: dict | None = None, ok: Callable | None = None,
            err: Callable | None = None, **kw) -> Reply | None:
        return self._track(lambda: self.client.put(path, body, **kw), ok, err)

    def patch(self, path: str, body: dict | None = None, ok: Callable | None = None,
              err: Callable | None = None, **kw) -> Reply | None:
        return self._track(lambda: self.client.patch(path, body, **kw), ok, err)

    def post_text(self, path: str, text: str, ok: Callable | None = None, err: Callable | None = None,
                  **kw) -> Reply | None:
        return self._track(lambda: self.client.post_text(path, text, **kw), ok, err)

    def delete(self, path: str, ok: Callable | None = None, err: Callable | None = None, **kw) -> Reply | None:
        return self._track(lambda: self.client.delete(path, **kw), ok, err)

    def busy(self) -> bool:
        return bool(self._replies)

    def abort_all(self) -> None:
        self._closed = True
        for reply in list(self._replies):
            if shiboken6.isValid(reply):
                reply.abort()
        self._replies.clear()

    def _track(self, make: Callable[[], Reply], ok, err) -> Reply | None:
        if self._closed:
            return None
        reply = make()
        self._replies.add(reply)

        def on_ok(body):
            if not self._closed and shiboken6.isValid(self) and ok is not None:
                ok(body)

        def on_err(error: ApiError):
            if not self._closed and shiboken6.isValid(self) and err is not None:
                err(error)

        def on_done():
            self._replies.discard(reply)

        reply.succeeded.connect(on_ok)
        reply.failed.connect(on_err)
        reply.finished.connect(on_done)
        return reply

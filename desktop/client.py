"""The desktop's only way to the backend: REST calls and SSE streams, both asynchronous on Qt's network stack."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QByteArray, QCoreApplication, QObject, QTimer, QUrl, Signal
from PySide6.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest

from desktop.sse import SseParser

DEFAULT_URL = "http://127.0.0.1:8765"
REQUEST_TIMEOUT_MS = 15000
#: How long a stream may take to connect; after that only its own read limit applies (none by default).
STREAM_CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ApiError:
    """A failed call, in words a person can act on."""

    status: int  # HTTP status, or 0 when the backend could not be reached
    code: str
    message: str
    hint: str | None = None
    details: dict | None = None

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


def _parse_error(status: int, raw: bytes, fallback: str) -> ApiError:
    try:
        err = json.loads(raw)["error"]
        return ApiError(status, str(err.get("code") or status), err.get("message") or fallback,
                        err.get("hint"), err.get("details"))
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()[:300]
        return ApiError(status, f"http_{status}", text or fallback)


class Reply(QObject):
    """One REST call in flight. Exactly one of ``succeeded``/``failed`` is emitted, then ``finished``.

    Signals:
        succeeded(object): the decoded JSON body (or text for non-JSON answers; None for 204).
        failed(object): an ApiError.
        finished(): after either.
    """

    succeeded = Signal(object)
    failed = Signal(object)
    finished = Signal()

    def __init__(self, reply: QNetworkReply, parent: QObject | None = None):
        super().__init__(parent)
        self._reply = reply
        reply.finished.connect(self._on_reply_finished)

    def abort(self) -> None:
        self._reply.abort()

    def _on_reply_finished(self) -> None:
        reply = self._reply
        status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0
        raw = bytes(reply.readAll().data()) if reply.isOpen() else b""
        if reply.error() != QNetworkReply.NetworkError.NoError and not status:
            if reply.error() == QNetworkReply.NetworkError.OperationCanceledError:
                message = "The backend did not answer in time."
            else:
                message = f"Cannot reach the ModelDeck backend ({reply.errorString()})."
            self.failed.emit(ApiError(0, "unreachable", message, "Is modeldeck-backend running? See Settings."))
        elif status >= 400:
            self.failed.emit(_parse_error(status, raw, reply.errorString()))
        else:
            ctype = str(reply.header(QNetworkRequest.KnownHeaders.ContentTypeHeader) or "")
            if status == 204 or not raw:
                body = None
            elif "json" in ctype:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
            else:
                body = raw.decode("utf-8", "replace")
            self.succeeded.emit(body)
        self.finished.emit()
        reply.deleteLater()
        self.deleteLater()


class BackendClient(QObject):
    """REST calls to the backend without blocking the GUI thread (QNetworkAccessManager).

    Use from the GUI thread: ``client.get("/api/deployments").succeeded.connect(slot)``.
    Streams (``stream(...)``) are read as their bytes arrive, on the same thread; see ``SseStream``.
    """

    def __init__(self, base_url: str = DEFAULT_URL, token: str = "", parent: QObject | None = None):
        super().__init__(parent)
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._nam = QNetworkAccessManager(self)

    def configure(self, base_url: str, token: str) -> None:
        self.base_url, self.token = base_url.rstrip("/"), token

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(self, path: str, timeout_ms: int) -> QNetworkRequest:
        req = QNetworkRequest(QUrl(self.base_url + path))
        for k, v in self.headers().items():
            req.setRawHeader(QByteArray(k.encode()), QByteArray(v.encode()))
        req.setTransferTimeout(timeout_ms)
        return req

    def get(self, path: str, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        return Reply(self._nam.get(self._request(path, timeout_ms)), self)

    def delete(self, path: str, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        return Reply(self._nam.deleteResource(self._request(path, timeout_ms)), self)

    def post(self, path: str, body: dict | None = None, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        req = self._request(path, timeout_ms)
        req.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        return Reply(self._nam.post(req, QByteArray(json.dumps(body or {}).encode())), self)

    def put(self, path: str, body: dict | None = None, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        req = self._request(path, timeout_ms)
        req.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        return Reply(self._nam.put(req, QByteArray(json.dumps(body or {}).encode())), self)

    def patch(self, path: str, body: dict | None = None, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        req = self._request(path, timeout_ms)
        req.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
        data = QByteArray(json.dumps(body or {}).encode())
        return Reply(self._nam.sendCustomRequest(req, QByteArray(b"PATCH"), data), self)

    def post_text(self, path: str, text: str, timeout_ms: int = REQUEST_TIMEOUT_MS) -> Reply:
        """POST a text body (a file to import) as text/plain."""
        req = self._request(path, timeout_ms)
        req.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "text/plain; charset=utf-8")
        return Reply(self._nam.post(req, QByteArray(text.encode("utf-8"))), self)

    def stream(self, path: str, *, method: str = "GET", body: dict | None = None,
               headers: dict[str, str] | None = None, read_timeout: float | None = None,
               parent: QObject | None = None) -> "SseStream":
        """A not-yet-started SSE reader for ``path``; connect its signals, then ``start()``."""
        return SseStream(self.base_url + path, {**self.headers(), **(headers or {})}, method=method, body=body,
                         read_timeout=read_timeout, parent=parent)


class SseStream(QObject):
    """Reads one Server-Sent Events stream from a QNetworkReply as its bytes arrive (no thread).

    Each stream has its own QNetworkAccessManager: Qt opens at most six connections per host
    and manager, and four compare columns, the Monitor, a log window and a launch would
    otherwise hold all of them and queue every REST call behind streams that never end.
    ``stop()`` aborts the reply and returns at once; after it no signal comes.

    Signals:
        event(str, object): event name ("message" when unnamed) and its data, JSON-decoded
            when it is JSON (raw string otherwise, e.g. "[DONE]").
        failed(object): an ApiError: HTTP error answers, connection loss, a bad stream,
            nothing heard for ``read_timeout`` seconds (the backend's streams ping every 15 s).
        ended(): the stream closed, after the last event or a failure (not after stop()).
    """

    event = Signal(str, object)
    failed = Signal(object)
    ended = Signal()

    def __init__(self, url: str, headers: dict[str, str], *, method: str = "GET", body: dict | None = None,
                 read_timeout: float | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.url, self.method, self.body = url, method, body
        self._headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers}
        self._read_timeout = read_timeout
        self._nam: QNetworkAccessManager | None = None
        self._reply: QNetworkReply | None = None
        self._parser = SseParser()
        self._status = 0
        self._error_body = b""
        self._idle_failure: str | None = None
        self._stopped = False
        self._connected = False
        self._idle = QTimer(self)
        self._idle.setSingleShot(True)
        self._idle.timeout.connect(self._on_idle_timeout)

    @property
    def running(self) -> bool:
        """Started and neither ended nor stopped."""
        return self._reply is not None

    def start(self) -> None:
        req = QNetworkRequest(QUrl(self.url))
        for k, v in self._headers.items():
            req.setRawHeader(QByteArray(k.encode()), QByteArray(v.encode()))
        # Events must be handed over as they arrive: no cache, and HTTP/1.1 (never a buffered HTTP/2 stream).
        req.setAttribute(QNetworkRequest.Attribute.CacheLoadControlAttribute,
                         QNetworkRequest.CacheLoadControl.AlwaysNetwork)
        req.setAttribute(QNetworkRequest.Attribute.CacheSaveControlAttribute, False)
        req.setAttribute(QNetworkRequest.Attribute.Http2AllowedAttribute, False)
        self._nam = QNetworkAccessManager(self)
        if self.method == "GET":
            reply = self._nam.get(req)
        else:
            req.setHeader(QNetworkRequest.KnownHeaders.ContentTypeHeader, "application/json")
            data = QByteArray(json.dumps(self.body or {}).encode())
            reply = self._nam.sendCustomRequest(req, QByteArray(self.method.encode()), data)
        self._reply = reply
        reply.requestSent.connect(self._on_reply_request_sent)
        reply.metaDataChanged.connect(self._on_reply_meta_data_changed)
        reply.readyRead.connect(self._on_reply_ready_read)
        reply.finished.connect(self._on_reply_finished)
        self._idle.start(int(STREAM_CONNECT_TIMEOUT_S * 1000))

    def stop(self) -> None:
        """End the stream now: the connection closes (the backend sees the client leave); nothing is emitted."""
        self._stopped = True
        self._idle.stop()
        reply = self._reply
        if reply is not None:
            for signal, slot in ((reply.requestSent, self._on_reply_request_sent),
                                 (reply.metaDataChanged, self._on_reply_meta_data_changed),
                                 (reply.readyRead, self._on_reply_ready_read),
                                 (reply.finished, self._on_reply_finished)):
                signal.disconnect(slot)
            reply.abort()
        self._release()

    def _release(self) -> None:
        # The manager (and the reply under it) goes later: this may run inside the reply's own
        # finished signal, and an owner may drop this stream from a slot connected to ended.
        nam, self._nam, self._reply = self._nam, None, None
        if nam is not None:
            nam.setParent(QCoreApplication.instance())
            nam.deleteLater()

    def _restart_idle(self) -> None:
        if self._read_timeout is None:
            self._idle.stop()
        else:
            self._idle.start(int(self._read_timeout * 1000))

    def _emit_events(self, raw: bytes) -> bool:
        """Parse and emit; False when a slot stopped the stream meanwhile."""
        for ev in self._parser.feed(raw):
            self.event.emit(ev.name, ev.payload())
            if self._stopped:
                return False
        return True

    def _on_reply_request_sent(self) -> None:
        self._connected = True  # from here on only the read limit applies
        self._restart_idle()

    def _on_reply_meta_data_changed(self) -> None:
        self._status = self._reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or 0
        self._restart_idle()

    def _on_reply_ready_read(self) -> None:
        raw = bytes(self._reply.readAll().data())
        self._restart_idle()
        if self._status >= 400:
            self._error_body += raw
        else:
            self._emit_events(raw)

    def _on_idle_timeout(self) -> None:
        self._idle_failure = (f"nothing arrived for {self._read_timeout:g} s" if self._connected
                              else f"no connection within {STREAM_CONNECT_TIMEOUT_S:g} s")
        self._reply.abort()  # finished follows at once and reports it

    def _on_reply_finished(self) -> None:
        reply = self._reply
        self._idle.stop()
        status = reply.attribute(QNetworkRequest.Attribute.HttpStatusCodeAttribute) or self._status
        rest = bytes(reply.readAll().data()) if reply.isOpen() else b""
        if status >= 400:
            failure = _parse_error(status, self._error_body + rest, "request failed")
        elif self._idle_failure is not None or reply.error() != QNetworkReply.NetworkError.NoError:
            failure = ApiError(0, "stream_lost",
                               f"The stream from the backend broke ({self._idle_failure or reply.errorString()}).",
                               "Check that the backend still runs.")
        else:
            failure = None
        self._release()
        if failure is None and rest and not self._emit_events(rest):
            return
        if failure is not None:
            self.failed.emit(failure)
            if self._stopped:
                return
        self.ended.emit()


def read_token(home: Path) -> str:
    """The backend's token from its folder, or '' when it has not written one yet."""
    try:
        return (home / "token").read_text(encoding="utf-8").strip()
    except OSError:
        return ""

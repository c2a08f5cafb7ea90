"""The desktop's only way to the backend: async REST calls on Qt's network stack, and SSE streams in threads."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
from PySide6.QtCore import QByteArray, QObject, QThread, QUrl, Signal
from PySide6.QtNetwork import QNetworkAccessManager, QNetworkReply, QNetworkRequest

DEFAULT_URL = "http://127.0.0.1:8765"
REQUEST_TIMEOUT_MS = 15000


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
    Streams (``stream(...)``) run in their own QThread; see ``SseStream``.
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

    def stream(self, path: str, *, method: str = "GET", body: dict | None = None,
               headers: dict[str, str] | None = None) -> "SseStream":
        """A not-yet-started SSE reader for ``path``; connect its signals, then ``start()``."""
        return SseStream(self.base_url + path, {**self.headers(), **(headers or {})}, method=method, body=body)


class SseStream(QThread):
    """Reads one Server-Sent Events stream in its own thread (napari's StatusChecker pattern).

    Signals:
        event(str, object): event name ("message" when unnamed) and its data, JSON-decoded
            when it is JSON (raw string otherwise, e.g. "[DONE]").
        failed(object): an ApiError: HTTP error answers, connection loss, a bad stream.
        ended(): the stream closed (after the last event or a failure), also after stop().
    """

    event = Signal(str, object)
    failed = Signal(object)
    ended = Signal()

    def __init__(self, url: str, headers: dict[str, str], *, method: str = "GET", body: dict | None = None,
                 read_timeout: float | None = None):
        super().__init__()
        self.url, self.method, self.body = url, method, body
        self._headers = {"Accept": "text/event-stream", **headers}
        self._timeout = httpx.Timeout(10.0, read=read_timeout)
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Ask the stream to end; closes the connection so a blocked read returns at once."""
        self._stop.set()
        with self._lock:
            if self._response is not None:
                try:
                    self._response.close()
                except Exception:  # noqa: BLE001 - closing from another thread may race
                    pass

    def run(self) -> None:
        try:
            with httpx.Client(timeout=self._timeout, trust_env=False) as http:
                with http.stream(self.method, self.url, headers=self._headers,
                                 json=self.body if self.method != "GET" else None) as response:
                    with self._lock:
                        self._response = response
                    if self._stop.is_set():
                        return
                    if response.status_code >= 400:
                        self.failed.emit(_parse_error(response.status_code, response.read(), "request failed"))
                        return
                    self._read(response)
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            if not self._stop.is_set():
                self.failed.emit(ApiError(0, "stream_lost", f"The stream from the backend broke ({exc}).",
                                          "Check that the backend still runs."))
        finally:
            self.ended.emit()

    def _read(self, response: httpx.Response) -> None:
        name, data = "message", []
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if not line:
                if data:
                    text = "\n".join(data)
                    try:
                        payload = json.loads(text)
                    except ValueError:
                        payload = text
                    self.event.emit(name, payload)
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))


def read_token(home: Path) -> str:
    """The backend's token from its folder, or '' when it has not written one yet."""
    try:
        return (home / "token").read_text(encoding="utf-8").strip()
    except OSError:
        return ""

"""A stand-in for `ollama serve`: the real protocol of the routes ModelDeck's Ollama recipe uses, fake weights.

It is not Ollama. It answers as Ollama's server/routes.go does (checked against Ollama
v0.32.15) on these routes:

- ``GET|HEAD /api/version`` -> 200 ``{"version": ...}`` as soon as it listens;
- ``POST /api/pull {"model", "stream": false}`` -> blocks until the "download" ends, then 200
  ``{"status": "success"}``; an unknown model -> 500 ``{"error": "pull model manifest: file does
  not exist"}``. Like Ollama (the pull runs in the request's context), the pull stops when the
  client goes away, and a later pull resumes from the part already downloaded;
- ``POST /api/show {"model"}`` -> 200 with details when the model is here, else 404
  ``{"error": "model '<name>' not found"}``;
- ``GET /v1/models`` -> the models that are here, in OpenAI's list shape.

The "download" of a model takes ``STANDIN_PULL_SECONDS`` (default 4) in 0.1 s steps; models are
recorded under ``/tmp/standin-models/manifests`` inside the container (never in the cache
ModelDeck mounts, which may be a person's real Ollama cache). Models whose name starts with ``missing`` do not exist in the "library";
a model whose name starts with ``ghost`` "pulls" successfully but never shows up.
``GET /standin/stats`` reports pulls started, completed and cancelled (for tests).
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# Not Ollama's /root/.ollama (the cache ModelDeck mounts): a stand-in never writes into a real cache.
ROOT = Path(os.environ.get("STANDIN_MODELS", "/tmp/standin-models"))
PULL_SECONDS = float(os.environ.get("STANDIN_PULL_SECONDS", "4"))
STEP = 0.1
LOCK = threading.Lock()
STATS = {"pulls_started": 0, "pulls_completed": 0, "pulls_cancelled": 0}
PROGRESS: dict[str, float] = {}  # model -> seconds of "download" done (the partial blobs)


def _manifest(model: str) -> Path:
    name, _, tag = model.partition(":")
    return ROOT / "manifests" / "registry.ollama.ai" / "library" / name.replace("/", "_") / (tag or "latest")


def _present(model: str) -> bool:
    return _manifest(model).is_file()


def _client_gone(sock: socket.socket) -> bool:
    """True when the peer closed the connection (readable with no data)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        sys.stdout.write("[standin] " + (fmt % args) + "\n")

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._send(200, {"version": "0.0.0-modeldeck-standin"})
        elif self.path == "/v1/models":
            models = sorted(str(p.relative_to(ROOT / "manifests" / "registry.ollama.ai" / "library"))
                            .replace("/", ":") for p in (ROOT / "manifests").rglob("*") if p.is_file())
            self._send(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "library"} for m in models]})
        elif self.path == "/standin/stats":
            with LOCK:
                self._send(200, {**STATS, "progress": dict(PROGRESS)})
        else:
            self._send(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        model = str(body.get("model") or body.get("name") or "")
        if self.path == "/api/show":
            if not model:
                self._send(400, {"error": "model is required"})
            elif _present(model):
                self._send(200, {"modelfile": f"FROM {model}", "details": {"format": "gguf", "family": "standin"}})
            else:
                self._send(404, {"error": f"model '{model}' not found"})
        elif self.path == "/api/pull":
            self._pull(model)
        else:
            self._send(404, {"error": "404 page not found"})

    def _pull(self, model: str) -> None:
        if not model:
            self._send(400, {"error": "missing request body"})
            return
        with LOCK:
            STATS["pulls_started"] += 1
        if model.startswith("missing"):
            self._send(500, {"error": "pull model manifest: file does not exist"})
            return
        while PROGRESS.get(model, 0.0) < PULL_SECONDS and not _present(model):
            if _client_gone(self.connection):
                with LOCK:
                    STATS["pulls_cancelled"] += 1
                self.close_connection = True
                return
            time.sleep(STEP)
            with LOCK:
                PROGRESS[model] = PROGRESS.get(model, 0.0) + STEP
        if not model.startswith("ghost"):
            path = _manifest(model)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"schemaVersion": 2, "layers": []}))
        with LOCK:
            STATS["pulls_completed"] += 1
        self._send(200, {"status": "success"})


def main() -> None:
    if sys.argv[1:2] != ["serve"]:
        sys.exit("usage: server.py serve")
    host, _, port = os.environ.get("OLLAMA_HOST", "0.0.0.0:11434").rpartition(":")
    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True
    print(f"[standin] Listening on {host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

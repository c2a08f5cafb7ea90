"""The demo's OpenAI-compatible HTTP server: models, chat completions, completions, Responses, embeddings, SSE."""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lm import NGramModel, join_piece, tokenize
from protocol import (
    ApiError, GenerationRequest, StopScanner, check_model, embed, encode_vector, message_item, output_text_part,
    parse_embeddings, parse_generation, parse_json, parse_responses, response_object, responses_usage,
)

DEFAULT_MODEL_FILE = Path(__file__).resolve().parent / "model.json.gz"
MAX_BODY = 8 * 1024 * 1024
DISCONNECTED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class ClientGone(Exception):
    """The client closed its connection while a reply was being generated."""


class DemoService:
    """What the handlers share: the model, the names it answers to, and generation counters."""

    def __init__(self, model: NGramModel, model_id: str, served_name: str, token_delay: float) -> None:
        self.model, self.model_id, self.served_name = model, model_id, served_name
        self.token_delay = token_delay
        self.started = int(time.time())
        self._lock = threading.Lock()
        self.active = self.total = self.cancelled = 0

    def health(self) -> dict:
        """The /health body; counters are read under the lock, so they are exact."""
        with self._lock:
            return {"status": "ok", "model": self.model_id, "served_name": self.served_name,
                    "active_generations": self.active, "total_generations": self.total,
                    "cancelled_generations": self.cancelled}

    def begin(self) -> None:
        """Count a generation as started."""
        with self._lock:
            self.active += 1
            self.total += 1

    def end(self, cancelled: bool) -> None:
        """Count a generation as over (cancelled when its client went away)."""
        with self._lock:
            self.active -= 1
            self.cancelled += cancelled

    def tokens(self, req: GenerationRequest, alive) -> Iterator[str]:
        """Yield the text piece of each generated token, pacing them by the token delay.

        Args:
            req: the validated request.
            alive: called before each token; returns False once the client has gone.

        Raises:
            ClientGone: alive() returned False.
        """
        model = self.model
        rng = random.Random(req.seed) if req.seed is not None else random.Random()
        if req.chat:
            context, keywords, previous = [], model.keywords(req.prompt_text), None
        else:
            words = tokenize(req.prompt_text)
            context, keywords = model.encode(words[-2:]), []
            previous = words[-1] if words else None
        first = req.chat or not req.prompt_text or req.prompt_text[-1].isspace()
        for token_id in model.generate(context, rng, req.temperature, req.top_p, keywords,
                                       req.ignore_eos, req.min_tokens):
            if self.token_delay > 0:
                time.sleep(self.token_delay)
            if not alive():
                raise ClientGone
            token = model.vocab[token_id]
            yield join_piece(token, previous, first)
            previous, first = token, False


class DemoHandler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection; routes requests to the DemoService on the server."""

    protocol_version = "HTTP/1.1"
    server_version = "ModelDeckDemo/1.0"
    service: DemoService  # set on the subclass that serve() builds

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch({"/health": self._health, "/v1/models": self._models}, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch({"/v1/chat/completions": self._chat, "/v1/completions": self._completions,
                        "/v1/embeddings": self._embeddings, "/v1/responses": self._responses}, "POST")

    def _dispatch(self, routes: dict, method: str) -> None:
        self._started, self._usage, self._status = time.monotonic(), "", 0
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            body = self._read_body() if method == "POST" else b""
            route = routes.get(path)
            if route is None:
                known = {"/health", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                         "/v1/responses"}
                raise ApiError(405 if path in known else 404, f"{method} {path} is not supported", None,
                               None, "invalid_request_error")
            route(body)
        except ApiError as exc:
            self._send_json(exc.status, exc.body())
        except DISCONNECTED:
            self.close_connection = True
        except Exception as exc:  # a bug must answer 500, not leave the client hanging
            if self._status:  # the reply had begun (a stream): all that can be done is to hang up
                self.close_connection = True
            else:
                self._send_json(500, ApiError(500, f"internal error: {exc!r}", kind="server_error").body())
        self._log()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "bad Content-Length header") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self._status = status
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except DISCONNECTED:
            self.close_connection = True

    def _client_alive(self) -> bool:
        """Whether the peer still holds the connection: a readable socket with nothing to read is closed."""
        sock: socket.socket = self.connection
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            return not readable or sock.recv(1, socket.MSG_PEEK) != b""
        except (OSError, ValueError):
            return False

    def _health(self, _body: bytes) -> None:
        self._send_json(200, self.service.health())

    def _models(self, _body: bytes) -> None:
        svc = self.service
        card = {"id": svc.served_name, "object": "model", "created": svc.started, "owned_by": "modeldeck",
                "root": svc.model_id, "parent": None, "max_model_len": 4096}
        self._send_json(200, {"object": "list", "data": [card]})

    def _chat(self, body: bytes) -> None:
        self._generate(body, chat=True)

    def _completions(self, body: bytes) -> None:
        self._generate(body, chat=False)

    def _embeddings(self, raw: bytes) -> None:
        body = parse_json(raw)
        check_model(body, (self.service.served_name, self.service.model_id))
        inputs, dimensions, encoding = parse_embeddings(body)
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(embed(text, dimensions), encoding)}
                for i, text in enumerate(inputs)]
        used = sum(len(tokenize(text)) for text in inputs)
        self._usage = f"prompt_tokens={used}"
        self._send_json(200, {"object": "list", "data": data, "model": self.service.served_name,
                              "usage": {"prompt_tokens": used, "total_tokens": used}})

    def _generate(self, raw: bytes, chat: bool) -> None:
        body = parse_json(raw)
        svc = self.service
        check_model(body, (svc.served_name, svc.model_id))
        req = parse_generation(body, chat)
        kind = "chat.completion" if chat else "text_completion"
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = {"id": ident, "object": kind, "created": int(time.time()), "model": svc.served_name}
        svc.begin()
        cancelled, finish, self._completion = False, "length", 0
        try:
            if req.stream:
                finish = self._stream(req, head)
            else:
                scanner, text = StopScanner(req.stop), []
                finish = "stop"
                for completion, piece in enumerate(svc.tokens(req, self._client_alive), 1):
                    self._completion = completion
                    text.append(scanner.feed(piece))
                    if scanner.stopped:
                        break
                    if completion >= req.max_tokens:
                        finish = "length"
                        break
                text.append("" if scanner.stopped else scanner.flush())
                content = "".join(text)
                choice = ({"index": 0, "message": {"role": "assistant", "content": content}} if chat
                          else {"index": 0, "text": content})
                choice.update(logprobs=None, finish_reason=finish)
                self._send_json(200, {**head, "choices": [choice], "usage": _usage(req, self._completion)})
        except (ClientGone, *DISCONNECTED):
            cancelled, finish = True, "cancelled"
            self.close_connection = True
            self._status = self._status or 499  # nginx's "client closed request", for the log line
        finally:
            svc.end(cancelled)
            self._usage = f"prompt_tokens={req.prompt_tokens} completion_tokens={self._completion} finish={finish}"

    def _stream(self, req: GenerationRequest, head: dict) -> str:
        """Send the reply as Server-Sent Events, one token per event; return the finish_reason."""
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        extra = {"usage": None} if req.include_usage else {}

        def event(choices: list, **more) -> None:
            data = b"data: " + json.dumps({**head, "object": head["object"] + (".chunk" if req.chat else ""),
                                           "choices": choices, **extra, **more}).encode() + b"\n\n"
            self._write_chunk(data)

        def piece(text: str, finish: str | None = None) -> dict:
            key = {"delta": {"content": text} if text else {}} if req.chat else {"text": text}
            return {"index": 0, **key, "logprobs": None, "finish_reason": finish}

        if req.chat:
            event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                    "finish_reason": None}])
        scanner, completion, finish = StopScanner(req.stop), 0, "stop"
        for completion, text in enumerate(self.service.tokens(req, self._client_alive), 1):
            self._completion = completion
            released = scanner.feed(text)
            if released:
                event([piece(released)])
            if scanner.stopped:
                break
            if completion >= req.max_tokens:
                finish = "length"
                break
        tail = "" if scanner.stopped else scanner.flush()
        if tail:
            event([piece(tail)])
        event([piece("", finish)])
        if req.include_usage:
            extra = {}
            event([], usage=_usage(req, self._completion))
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")
        return finish

    def _responses(self, raw: bytes) -> None:
        """POST /v1/responses: OpenAI's Responses API, one assistant message of output_text."""
        body = parse_json(raw)
        svc = self.service
        check_model(body, (svc.served_name, svc.model_id))
        req = parse_responses(body)
        response_id, item_id = "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex
        created = int(time.time())

        def snapshot(status: str, output: list[dict], usage: dict | None, reason: str | None = None) -> dict:
            return response_object(response_id, created, svc.served_name, body, req, status, output, usage, reason)

        svc.begin()
        cancelled, finish, self._completion = False, "length", 0
        try:
            if req.stream:
                finish = self._responses_stream(req, snapshot, item_id)
            else:
                text, finish = [], "stop"
                for completion, piece in enumerate(svc.tokens(req, self._client_alive), 1):
                    self._completion = completion
                    text.append(piece)
                    if completion >= req.max_tokens:
                        finish = "length"
                        break
                done = "completed" if finish == "stop" else "incomplete"
                self._send_json(200, snapshot(done, [message_item(item_id, done, "".join(text))],
                                              responses_usage(req.prompt_tokens, self._completion),
                                              "max_output_tokens" if finish == "length" else None))
        except (ClientGone, *DISCONNECTED):
            cancelled, finish = True, "cancelled"
            self.close_connection = True
            self._status = self._status or 499
        finally:
            svc.end(cancelled)
            self._usage = f"prompt_tokens={req.prompt_tokens} completion_tokens={self._completion} finish={finish}"

    def _responses_stream(self, req: GenerationRequest, snapshot, item_id: str) -> str:
        """The Responses API's named SSE events, one output_text.delta per token; return the finish reason."""
        self._status = 200
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sequence = 0

        def event(kind: str, **fields) -> None:
            nonlocal sequence
            data = json.dumps({"type": kind, "sequence_number": sequence, **fields})
            sequence += 1
            self._write_chunk(f"event: {kind}\ndata: {data}\n\n".encode())

        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        event("response.created", response=snapshot("in_progress", [], None))
        event("response.in_progress", response=snapshot("in_progress", [], None))
        event("response.output_item.added", output_index=0, item=message_item(item_id, "in_progress", None))
        event("response.content_part.added", **where, part=output_text_part(""))
        text, finish = [], "stop"
        for completion, piece in enumerate(self.service.tokens(req, self._client_alive), 1):
            self._completion = completion
            text.append(piece)
            event("response.output_text.delta", **where, delta=piece, logprobs=[])
            if completion >= req.max_tokens:
                finish = "length"
                break
        full, done = "".join(text), "completed" if finish == "stop" else "incomplete"
        event("response.output_text.done", **where, text=full, logprobs=[])
        event("response.content_part.done", **where, part=output_text_part(full))
        item = message_item(item_id, done, full)
        event("response.output_item.done", output_index=0, item=item)
        event(f"response.{done}", response=snapshot(done, [item], responses_usage(req.prompt_tokens, self._completion),
                                                    "max_output_tokens" if finish == "length" else None))
        self._write_chunk(b"")
        return finish

    def _write_chunk(self, data: bytes) -> None:
        # Chunked transfer encoding keeps the connection reusable after the stream; the write is
        # unbuffered (wbufsize 0), so each event leaves at once.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _log(self) -> None:
        elapsed = time.monotonic() - self._started
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        print(f"{stamp} {self.command} {self.path} {self._status} {elapsed:.3f}s {self._usage}".rstrip(), flush=True)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        """Silence http.server's own stderr lines; _log writes one line per request instead."""


def _usage(req: GenerationRequest, completion: int) -> dict:
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": completion,
            "total_tokens": req.prompt_tokens + completion}


def build_server(host: str, port: int, service: DemoService) -> ThreadingHTTPServer:
    """Bind a threaded HTTP server whose handlers use service.

    Raises:
        OSError: the address cannot be bound.
    """
    handler = type("BoundDemoHandler", (DemoHandler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.block_on_close = False  # a stream in progress must not delay shutdown
    return server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; unknown arguments make argparse exit with status 2."""
    parser = argparse.ArgumentParser(description="ModelDeck demo model server (OpenAI-compatible).")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--model", default="demo-tiny", help="model id (default demo-tiny)")
    parser.add_argument("--served-name", default=None, help="name clients use in 'model' (default: --model)")
    parser.add_argument("--token-delay", type=float, default=float(os.environ.get("DEMO_TOKEN_DELAY") or 0.02),
                        help="seconds per generated token (default $DEMO_TOKEN_DELAY or 0.02)")
    parser.add_argument("--model-file", type=Path, default=DEFAULT_MODEL_FILE, help="trained model (train.py)")
    args = parser.parse_args(argv)
    if args.token_delay < 0:
        parser.error("--token-delay must not be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    """Load the model and serve until SIGTERM or SIGINT.

    Returns:
        The exit status: 0 after a signal, 1 when the model cannot be loaded.
    """
    args = parse_args(argv)
    try:
        model = NGramModel.load(args.model_file)
    except (OSError, ValueError) as exc:
        print(f"cannot load the model from {args.model_file}: {exc}", file=sys.stderr, flush=True)
        return 1
    service = DemoService(model, args.model, args.served_name or args.model, args.token_delay)
    server = build_server(args.host, args.port, service)

    # As PID 1 in a container the process gets no default signal handling: without this,
    # docker stop would wait its full timeout and then SIGKILL.
    def stop(signum: int, _frame) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"demo server: model {args.model} served as {service.served_name} on {args.host}:{args.port} "
          f"({len(model.vocab)} words, token delay {args.token_delay}s)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except SystemExit:
        print("demo server: stopping", flush=True)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

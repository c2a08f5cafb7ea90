"""Run an ASGI app for real under uvicorn on a free loopback port, for tests that speak HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import uvicorn

from tests.support.waiting import wait_until


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now, at least 1024 (what a launch may ask for).

    The one way tests pick a port; it can race with other programs, which is fine for tests.
    """
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port >= 1024:
            return port


@contextlib.contextmanager
def serve(app, host: str = "127.0.0.1", port: int | None = None, timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` in a background thread; yield its base URL; shut it down after.

    The lifespan runs, so the app's long-lived objects are built and closed as in production.
    """
    port = port or free_port(host)
    from backend.dataplane import protocol_class

    # ModelDeck's app is served as modeldeck-backend serves it: with the /v1 data plane in front.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=protocol_class(app))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("the test server exited during start-up (see the log above)")
        return server.started

    wait_until(started, timeout, interval=0.01, what="the test server to start")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)

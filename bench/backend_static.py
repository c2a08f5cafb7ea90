"""The real backend entry point (`modeldeck-backend`) with its /v1 routing pinned to one upstream, for the benchmark.

Run as ``python -m bench.backend_static --upstream http://127.0.0.1:N/v1 --port M``
with ``MODELDECK_HOME`` and ``MODELDECK_TOKEN`` set. Everything else is what a user
runs: ``backend.server.main`` (same uvicorn settings, same log level, access log
included), ``create_app`` with its lifespan (Docker engine, deployments refresher,
stats sampler, history store), its SecurityMiddleware and its routes. Only
``app.state.upstreams`` is replaced, right after the real lifespan started, by a
``StaticDirectory`` that serves the model ``bench-model`` from ``--upstream``.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import asynccontextmanager

import backend.app
from backend.proxy import StaticDirectory, Upstream

MODEL = "bench-model"


def pinned(create_app, upstream_url: str):
    """Wrap ``create_app`` so that the app it builds routes ``bench-model`` to ``upstream_url``."""

    def create(*args, **kwargs):
        app = create_app(*args, **kwargs)
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a):
            async with inner(a) as state:
                a.state.upstreams = StaticDirectory(
                    [Upstream("bench", MODEL, upstream_url.rstrip("/"), True, "running")])
                yield state

        app.router.lifespan_context = lifespan
        return app

    return create


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backend_static", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the OpenAI base URL of the model server")
    parser.add_argument("--asgi-only", action="store_true",
                        help="serve without the /v1 data plane: every request through FastAPI (the state before issue 13)")
    args, rest = parser.parse_known_args(argv)
    if args.asgi_only:
        from backend import dataplane
        dataplane.protocol_class = lambda app, tls_host=None: "auto"  # uvicorn's own protocol: the app answers everything
    backend.app.create_app = pinned(backend.app.create_app, args.upstream)
    from backend.server import main as server_main  # reads backend.app.create_app when it runs
    return server_main(rest)


if __name__ == "__main__":
    sys.exit(main())

"""Processes of the load tests: the fake OpenAI upstream, and the real backend app routed to it.

    python -m tests.reliability.load_processes upstream --port N
    python -m tests.reliability.load_processes backend --port N --upstream http://127.0.0.1:M/v1 --home DIR

The backend is ``create_app`` served by uvicorn as ``modeldeck-backend`` serves it (uvloop,
httptools, the same middleware, proxy and shared client); only its directory of upstreams is
a fixed one that names the fake server, so no container is needed to load the proxy path.
"""

from __future__ import annotations

import argparse
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn

SERVED_NAME = "load"


def _backend_app(upstream: str, home: Path, token: str):
    from backend.app import create_app
    from backend.proxy import StaticDirectory, Upstream
    from backend.settings import Settings

    app = create_app(Settings(home=home, token=token, catalog_dir=home / "no-catalog"))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a):
        async with inner(a) as state:
            a.state.upstreams = StaticDirectory([Upstream(deployment_id=SERVED_NAME, served_name=SERVED_NAME,
                                                          base_url=upstream, ready=True, state="ready")])
            yield state

    app.router.lifespan_context = lifespan
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["upstream", "backend"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream")
    parser.add_argument("--home", type=Path)
    parser.add_argument("--token", default="load-token")
    args = parser.parse_args()
    if args.role == "upstream":
        from tests.support.upstream import FakeUpstream
        app = FakeUpstream(models=(SERVED_NAME,), keep_requests=0).app
    else:
        (args.home / "no-catalog").mkdir(parents=True, exist_ok=True)
        app = _backend_app(args.upstream, args.home, args.token)
    from backend.dataplane import protocol_class

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="auto", http=protocol_class(app),
                backlog=2048, timeout_keep_alive=30)


if __name__ == "__main__":
    main()

"""`modeldeck-mcp`: ModelDeck's MCP tools over stdio, talking to the running backend (started here when none answers)."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import anyio
import httpx

from backend.mcp_server import DeckApi, build_server
from backend.security import _read_token
from backend.settings import Settings

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def _say(text: str) -> None:
    # stdout is the MCP channel: everything for people goes to stderr.
    print(f"modeldeck-mcp: {text}", file=sys.stderr, flush=True)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=2.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def backend_command(port: int, host: str) -> list[str]:
    """How to start the backend: the same interpreter as this program (one install), as the desktop does."""
    command = [sys.executable, "-m", "backend.server", "--port", str(port)]
    if host != "127.0.0.1":
        command += ["--host", host]
    return command


def start_backend(settings: Settings, url: str) -> subprocess.Popen:
    """Start ``modeldeck-backend`` for ``settings`` and wait until it answers; its output goes to a log in the home.

    Raises:
        SystemExit: it exited or did not answer in time (the message names its log).
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    log_path = settings.home / "mcp-backend.log"
    _say(f"no backend answers at {url}; starting one (its log: {log_path})")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(backend_command(settings.port, settings.host), stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(url):
        if proc.poll() is not None:
            raise SystemExit(f"modeldeck-mcp: the backend exited with code {proc.returncode}; read {log_path}.")
        if time.monotonic() > deadline:
            stop_backend(proc)
            raise SystemExit(f"modeldeck-mcp: the backend did not answer within {START_TIMEOUT_S:.0f} s; "
                             f"read {log_path}.")
        time.sleep(0.2)
    return proc


def stop_backend(proc: subprocess.Popen) -> None:
    """SIGTERM the backend this program started (its deployments stay: Docker holds them), SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token_for(settings: Settings) -> str:
    """MODELDECK_TOKEN, else the token file the backend wrote into the home folder."""
    token = settings.token or _read_token(settings.token_path)
    if not token:
        raise SystemExit(f"modeldeck-mcp: no token at {settings.token_path}. Set MODELDECK_HOME to the backend's "
                         f"folder, or MODELDECK_TOKEN to its token.")
    return token


async def serve(url: str, token: str) -> None:
    """Serve the MCP tools on stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=64)) as client:
        api = DeckApi(url, token, client)
        server = build_server(lambda: api)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="modeldeck-mcp",
        description="ModelDeck's MCP server over stdio. It talks to the backend at MODELDECK_HOST:MODELDECK_PORT "
                    "(127.0.0.1:8765) with the token from ModelDeck's folder (MODELDECK_HOME), and starts the backend "
                    "when none answers (stopping it again when the MCP client leaves).")
    parser.add_argument("--port", type=int, help="the backend's port (default: MODELDECK_PORT, else 8765)")
    parser.add_argument("--no-start", action="store_true", help="fail instead of starting a backend")
    args = parser.parse_args(argv)
    settings = Settings.from_env(**({"port": args.port} if args.port else {}))
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    url = f"http://{host}:{settings.port}"
    started: subprocess.Popen | None = None
    if not _answers(url):
        if args.no_start:
            _say(f"no backend answers at {url}; start it with modeldeck-backend (or the ModelDeck app).")
            return 2
        started = start_backend(settings, url)
    try:
        anyio.run(serve, url, token_for(settings))
    except KeyboardInterrupt:
        return 130
    finally:
        if started is not None:
            stop_backend(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())


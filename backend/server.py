"""`modeldeck-backend`: run the control backend under uvicorn on loopback."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys

from backend.netutil import port_free
from backend.settings import Settings

#: The shell's convention for "stopped by Ctrl+C" (128 + SIGINT).
EXIT_INTERRUPTED = 128 + signal.SIGINT


class RedactTokens(logging.Filter):
    """Keep ``?token=...`` (accepted for browsers) out of uvicorn's access log."""

    _token = re.compile(r"([?&]token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._token.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, check the port, serve until interrupted; returns the exit code.

    A Ctrl+C at any moment, also before the server has started, is a quiet exit 130.
    """
    # uvicorn installs its own SIGINT handler once it starts, whatever the disposition it
    # inherited; take the same one from the start, so that an inherited SIG_IGN (background
    # commands of a shell without job control) does not make an early Ctrl+C vanish while a
    # later one stops the server.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _serve(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="modeldeck-backend", description=__doc__)
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; anything else exposes the API)")
    parser.add_argument("--port", type=int, help="port to bind (default 8765)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true",
                        help="log every HTTP request (off by default: it costs ~20%% of CPU on fast routes)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings.from_env(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # httpx logs every request at INFO: the readiness probes of each model, every few seconds,
        # would bury what matters (the desktop's banner shows a dead backend's last lines).
        logging.getLogger("httpx").setLevel(logging.WARNING)

    if not port_free(settings.port, settings.host):
        print(f"modeldeck-backend: port {settings.port} on {settings.host} is already in use by another program.\n"
              f"Stop that program, or pick another port: modeldeck-backend --port N "
              f"(or MODELDECK_PORT=N).", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("modeldeck").warning(
            "binding %s: the API is reachable from other machines (the token still protects it)", settings.host)

    import uvicorn

    from backend.app import create_app

    class ModelDeckServer(uvicorn.Server):
        """Ends the live stats streams first: uvicorn waits for open responses before it stops.

        It also remembers the first signal that asked it to stop. uvicorn re-raises that signal
        after its graceful shutdown and relies on the process's *inherited* disposition to turn
        it into an exit: where the parent left SIGINT ignored (a shell without job control runs
        background commands so, and so do many test and CI runners), the re-raised signal is
        dropped and the process would exit 0 after a Ctrl+C. ``stop_signal`` makes the exit
        code not depend on that.
        """

        def __init__(self, config, app):
            super().__init__(config)
            self._app = app
            self.stop_signal: int | None = None

        def handle_exit(self, sig, frame):
            if self.stop_signal is None:
                self.stop_signal = sig
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets=None):
            stats = getattr(self._app.state, "stats", None)
            if stats is not None:
                stats.close_subscriptions()
            await super().shutdown(sockets=sockets)

    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=args.log_level,
                            loop="auto", http="auto", timeout_graceful_shutdown=3, server_header=False,
                            access_log=args.access_log)
    print(f"ModelDeck backend on http://{settings.host}:{settings.port} (API docs: /docs; "
          f"token: {settings.token_path})", file=sys.stderr, flush=True)
    server = ModelDeckServer(config, app)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled gracefully
        return EXIT_INTERRUPTED
    # Reached when the re-raised signal was ignored (inherited SIG_IGN) or had a handler that
    # returned: the exit code still says how the server was stopped.
    if server.stop_signal == signal.SIGINT:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())

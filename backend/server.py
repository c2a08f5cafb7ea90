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


class MutualTlsHost:
    """In front of the app when TLS with required client certificates is served: requests carry
    the loopback Host the security middleware expects.

    That middleware refuses other Host names to stop DNS rebinding: a web page in the person's
    browser reaching a loopback-only backend. On a TLS listener that requires a client certificate
    signed by the configured CA, uvicorn has refused every connection without one before any
    request is read, so the caller is a client this machine's owner issued a certificate to (a
    ModelDeck node manager), not a page; the token is still required.
    """

    def __init__(self, app, port: int):
        self.app = app
        self._host = self.host_for(port)

    @staticmethod
    def host_for(port: int) -> bytes:
        """The Host requests on the TLS listener carry inside (the /v1 data plane checks them with it too)."""
        return f"127.0.0.1:{port}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket") and scope.get("scheme") in ("https", "wss"):
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"host"]
            scope = {**scope, "headers": [(b"host", self._host), *headers]}
        await self.app(scope, receive, send)


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
    parser.add_argument("--host", help="address to bind (default 127.0.0.1; another address needs the three --tls options)")
    parser.add_argument("--port", type=int, help="port to bind (default 8765)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--access-log", action="store_true",
                        help="log every HTTP request (off by default: it costs ~20%% of CPU on fast routes)")
    parser.add_argument("--tls-cert", help="PEM server certificate: serve HTTPS (for nodes reached over TLS)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA: only clients with a certificate it signed may connect")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "tls_cert": args.tls_cert,
                                   "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca}.items()
                 if v is not None}
    settings = Settings.from_env(**overrides)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        # httpx logs every request at INFO: the readiness probes of each model, every few seconds,
        # would bury what matters (the desktop's banner shows a dead backend's last lines).
        logging.getLogger("httpx").setLevel(logging.WARNING)

    tls = (settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    if any(tls) and not all(tls):
        print("modeldeck-backend: TLS needs all three of --tls-cert, --tls-key and --tls-client-ca "
              "(MODELDECK_TLS_CERT, MODELDECK_TLS_KEY, MODELDECK_TLS_CLIENT_CA).", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not all(tls):
        print(f"modeldeck-backend: refusing to serve on {settings.host} without TLS and client certificates: "
              "the API would be plain HTTP on the network.\n"
              "Keep the default 127.0.0.1 and reach this machine over SSH (a ModelDeck node over SSH), or give "
              "--tls-cert, --tls-key and --tls-client-ca (docs/nodes.md).", file=sys.stderr)
        return 2
    for path in (p for p in tls if p is not None):
        if not path.is_file():
            print(f"modeldeck-backend: {path} is not a file; give PEM files to the --tls options.", file=sys.stderr)
            return 2
    if not port_free(settings.port, settings.host):
        print(f"modeldeck-backend: port {settings.port} on {settings.host} is already in use by another program.\n"
              f"Stop that program, or pick another port: modeldeck-backend --port N "
              f"(or MODELDECK_PORT=N).", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("modeldeck").warning(
            "binding %s over TLS: clients need a certificate signed by %s, and the token", settings.host,
            settings.tls_client_ca)

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
    served = MutualTlsHost(app, settings.port) if all(tls) else app
    tls_options = {}
    if all(tls):
        import ssl
        tls_options = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key),
                       "ssl_ca_certs": str(settings.tls_client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    from backend.dataplane import protocol_class

    config = uvicorn.Config(served, host=settings.host, port=settings.port, log_level=args.log_level,
                            # /v1's hot routes below the ASGI stack (backend/dataplane.py); the rest is the app's.
                            loop="auto", http=protocol_class(app, MutualTlsHost.host_for(settings.port) if all(tls) else None), timeout_graceful_shutdown=3, server_header=False,
                            access_log=args.access_log, **tls_options)
    scheme = "https" if all(tls) else "http"
    print(f"ModelDeck backend on {scheme}://{settings.host}:{settings.port} (API docs: /docs; "
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

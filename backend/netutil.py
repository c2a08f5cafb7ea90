"""Local addresses: whether a TCP port is free (launch, modeldeck-backend at start), and the address a request came in on."""

from __future__ import annotations

import socket


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing is bound to ``host:port`` (IPv4 or IPv6) right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def base_url_of(scope: dict) -> str | None:
    """``http://host:port`` of the server an ASGI request came in on (its ``server`` entry), or None.

    The backend's loopback clients of itself (the MCP tools under ``/mcp``, the suite runner) call
    this address: it is where the app really listens, whatever the settings say (tests serve an app
    on a free port of their own).
    """
    server = scope.get("server")
    if not server:
        return None
    host, port = server[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"

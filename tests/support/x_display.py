"""Whether an X server answers on a display: the X11 connection handshake, spoken over its socket."""

from __future__ import annotations

import os
import re
import socket
import struct

_DISPLAY = re.compile(r"^(?P<host>[^:]*):(?P<number>\d+)(?:\.\d+)?$")


def _connect(display: str, timeout: float) -> socket.socket:
    m = _DISPLAY.match(display)
    if not m:
        raise OSError(f"DISPLAY={display!r} is not of the form [host]:number[.screen]")
    host, number = m.group("host"), int(m.group("number"))
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        last: OSError | None = None
        for address in (path, "\0" + path):  # the file, then Linux's abstract socket of the same name
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(path)
    return socket.create_connection((host, 6000 + number), timeout=timeout)


def x_display_problem(display: str | None = None, timeout: float = 3.0) -> str | None:
    """None when an X server answers the connection set-up on ``display`` (default: $DISPLAY), else why not.

    Any answer counts, "authenticate" and "failed" included: the server is there (Qt brings the
    Xauthority cookie this probe does not).
    """
    display = os.environ.get("DISPLAY", "") if display is None else display
    if not display:
        return "DISPLAY is not set"
    try:
        with _connect(display, timeout) as sock:
            # Little-endian connection set-up request: protocol 11.0, no authorization.
            sock.sendall(b"l\0" + struct.pack("<HHHH", 11, 0, 0, 0) + b"\0\0")
            reply = sock.recv(8)
    except OSError as exc:
        return f"no X server answers on DISPLAY={display} ({exc})"
    if len(reply) < 8 or reply[0] not in (0, 1, 2):
        return f"DISPLAY={display} answered, but not as an X server ({reply!r})"
    return None

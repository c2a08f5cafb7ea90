"""The backend's front door: the bearer token file and a pure ASGI middleware that checks Host, Origin, token and body size."""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, unquote_plus

from backend.errors import error_response

DEFAULT_PUBLIC_PATHS = frozenset({"/api/health"})
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
TOKEN_QUERY_PARAM = "token"

# A Host header value: a name or a bracketed IPv6 literal, then an optional port.
_HOST_RE = re.compile(r"^(?P<name>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?$")


# --------------------------------------------------------------------------- token file


def ensure_token(path: Path) -> str:
    """Return the bearer token stored at ``path``, creating it when there is none.

    An existing token file whose mode lets anyone but the owner read it is tightened to
    0600. A new token (``secrets.token_urlsafe(32)``) is written to a temporary file
    created with mode 0600 (never written first and chmod-ed after) and then linked into
    place, so no other process ever sees a partial or world-readable token, and two
    backends starting at once agree on one token. Missing parent folders are created 0700.

    Args:
        path: the token file, normally ``Settings.token_path``.

    Returns:
        The token (without surrounding whitespace).

    Raises:
        OSError: the folder or the file cannot be created, read or tightened.
    """
    existing = _read_token(path)
    if existing:
        _tighten(path)
        return existing

    _make_private_dirs(path.parent)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(token.encode("ascii") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            # link() fails if the name exists: the first backend to get here wins.
            os.link(tmp, path)
        except FileExistsError:
            winner = _read_token(path)
            if winner:
                _tighten(path)
                return winner
            os.replace(tmp, path)  # an empty or blank token file: ours replaces it
        except OSError:
            os.replace(tmp, path)  # file systems without hard links
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return token


def _read_token(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return None
    return text or None


def _tighten(path: Path) -> None:
    # Windows has no POSIX modes; the per-user config folder is private there already.
    if os.name == "nt":
        return
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        os.chmod(path, 0o600)


def _make_private_dirs(folder: Path) -> None:
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass


# --------------------------------------------------------------------------- host and origin


@functools.lru_cache(maxsize=256)  # on every request's path; clients use a handful of names
def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header value names this machine's loopback interface.

    Accepted: ``localhost``, any ``127.x.y.z``, ``[::1]``, each with an optional port.
    Refused: empty values, a bare ``:port``, other names (DNS rebinding), other addresses.

    Args:
        host: the raw header value.

    Returns:
        True when the request can only have been addressed to loopback.
    """
    match = _HOST_RE.match(host)
    if not match:
        return False
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        return False
    name = match.group("name").lower()
    if name == "localhost":
        return True
    if name.startswith("["):
        try:
            return ipaddress.IPv6Address(name[1:-1]) == ipaddress.IPv6Address("::1")
        except ValueError:
            return False
    try:
        addr = ipaddress.IPv4Address(name)  # refuses "127.1", "0x7f.0.0.1" and the like
    except ValueError:
        return False
    return addr in ipaddress.IPv4Network("127.0.0.0/8")


# --------------------------------------------------------------------------- middleware


class _BodyTooLarge(Exception):
    """Raised from the wrapped ``receive`` once a streamed body passes the limit."""


class FrontDoor:
    """The checks every request passes before it reaches the app: Host, Origin, token, declared body size.

    One object per app, shared by :class:`SecurityMiddleware` (every ASGI request) and the
    ``/v1`` data plane (backend/dataplane.py), so the fast path is refused exactly what the
    middleware refuses: the data plane hands every request this door refuses to the
    middleware, which answers it.
    """

    def __init__(self, *, token: str, public_paths: frozenset[str] = DEFAULT_PUBLIC_PATHS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, token_hint: str | None = None):
        """
        Args:
            token: the bearer token every non-public request must present.
            public_paths: exact paths that need no token (Host and Origin are still checked).
            max_body_bytes: the largest request body accepted.
            token_hint: where the token can be found (a file path), quoted in 401 messages.

        Raises:
            ValueError: the token is empty.
        """
        if not token:
            raise ValueError("SecurityMiddleware needs a non-empty token")
        self._token = token.encode("utf-8")
        self._bearer = b"Bearer " + self._token  # the header as clients send it: compared as bytes first
        self.public_paths = frozenset(public_paths)
        self.max_body_bytes = max_body_bytes
        self.token_hint = token_hint

    def refusal(self, path: str, query: bytes, raw_headers) -> tuple[int, str, str, str] | None:
        """Why a request to ``path`` with these headers is refused, as (status, code, message, hint); None: let in.

        Args:
            path: the decoded request path.
            query: the raw query string (it may carry ``token=``).
            raw_headers: the request's ``(name, value)`` byte pairs, names lower-case (ASGI's).
        """
        # One pass over the headers (this runs for every request, the data plane's included).
        hosts, origins, credentials = [], [], []
        bearer = False  # an Authorization header that is exactly "Bearer <token>"
        for name, value in raw_headers:
            name = name.lower()
            if name == b"host":
                hosts.append(value.decode("latin-1"))
            elif name == b"origin":
                origins.append(value.decode("latin-1"))
            elif name == b"authorization" and hmac.compare_digest(value, self._bearer):
                bearer = True
            elif name == b"authorization" or name == b"x-api-key":
                credentials.append((name, value.decode("latin-1")))
        host = hosts[0] if len(hosts) == 1 else ""
        if not is_loopback_host(host):
            shown = "missing" if not hosts else ", ".join(repr(h) for h in hosts)
            return (403, "forbidden_host",
                    f"Host header {shown} is not a loopback name; this backend answers only "
                    "requests addressed to localhost, 127.0.0.1 or [::1].",
                    "Connect to http://127.0.0.1:<port> or http://localhost:<port>. Other names "
                    "are refused to stop DNS-rebinding attacks from web pages.")
        if origins and (len(origins) != 1 or origins[0].lower() != f"http://{host}".lower()):
            return (403, "forbidden_origin",
                    f"Origin {', '.join(repr(o) for o in origins)} is not this backend's own "
                    f"origin (http://{host}); cross-origin browser requests are refused.",
                    "Call the API from a script, the desktop app, or this backend's own /docs "
                    "page; web pages from other origins cannot use it.")
        if not bearer and path not in self.public_paths and not self._authorized(query, credentials):
            where = f"; the token is in {self.token_hint}" if self.token_hint else ""
            return (401, "unauthorized",
                    "Missing or wrong bearer token. Send 'Authorization: Bearer <token>' "
                    f"(or 'x-api-key: <token>', as Anthropic clients do){where}.",
                    "Browsers that cannot set headers (EventSource, /docs) may pass "
                    "'?token=<token>' instead.")
        return None

    def length_refusal(self, raw_headers) -> tuple[int, str, str, str] | None:
        """Why the declared ``Content-Length`` is refused (not one integer: 400; over the limit: 413); None: fine."""
        lengths = _Headers(raw_headers).get_all(b"content-length")
        if not lengths:
            return None
        try:
            declared = int(lengths[0]) if len(set(lengths)) == 1 else -1
        except ValueError:
            declared = -1
        if declared < 0:
            return (400, "invalid_content_length",
                    f"Content-Length {lengths!r} is not a single non-negative integer.",
                    "Send one Content-Length header with the body's size in bytes.")
        if declared > self.max_body_bytes:
            return (413, "request_too_large",
                    f"The request body is {declared} bytes; the limit is {self.max_body_bytes} bytes.",
                    "Send a smaller body, or raise MODELDECK_MAX_BODY_BYTES.")
        return None

    def _authorized(self, query: bytes, credentials: list[tuple[bytes, str]]) -> bool:
        candidates = []
        for name, value in credentials:
            if name == b"authorization":
                scheme, _, credential = value.strip().partition(" ")
                if scheme.lower() == "bearer":
                    candidates.append(credential.strip())
            else:  # Anthropic's clients send their key as x-api-key (the SDK's ``api_key``, ANTHROPIC_API_KEY)
                candidates.append(value.strip())
        if query:
            candidates += [v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
                           if k == TOKEN_QUERY_PARAM]
        # Compare every candidate, so the time taken says nothing about which one matched.
        ok = False
        for candidate in candidates:
            ok |= hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)
        return ok


class SecurityMiddleware:
    """Pure ASGI middleware in front of the whole backend.

    For every HTTP request and WebSocket handshake, in this order (the checks are
    :class:`FrontDoor`'s, which the ``/v1`` data plane asks too):

    1. ``Host`` must be a loopback name (see :func:`is_loopback_host`), else 403 — also on
       public paths, because a DNS-rebinding page would otherwise read them.
    2. An ``Origin`` header is allowed only when it is ``http://`` plus the request's own
       Host (the same-origin ``/docs`` page); foreign origins and ``null`` get 403. No CORS
       headers are ever sent, so browsers keep other sites out.
    3. Every path but ``public_paths`` needs ``Authorization: Bearer <token>`` (or
       ``x-api-key: <token>``, which Anthropic clients send), else 401.
       The token is also accepted as a ``token`` query parameter, because a browser's
       ``EventSource`` and the ``/docs`` page cannot set headers. The trade-off: a token in
       a URL can end up in access logs, shell history and browser history, so clients that
       can set headers should; the parameter is removed from the query string before the
       request reaches the app, so it is never forwarded to a model container.
    4. A ``Content-Length`` above ``max_body_bytes`` gets 413 before any byte is read; a
       chunked body that grows past it gets 413 as soon as it does (if the response has
       not started yet).

    A refused WebSocket handshake is closed before accept (the client sees 403).

    Responses pass through untouched — no buffering, so streamed tokens and Server-Sent
    Events flow as they are produced, and client disconnects reach the app.

    Error bodies come from ``backend.errors.error_response``: OpenAI's shape under ``/v1/``
    and ModelDeck's ``{"error": {"code", "message", "hint"}}`` everywhere else.
    """

    def __init__(self, app, *, token: str | None = None, public_paths: frozenset[str] = DEFAULT_PUBLIC_PATHS,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, token_hint: str | None = None,
                 door: FrontDoor | None = None):
        """
        Args:
            app: the ASGI app to protect.
            token, public_paths, max_body_bytes, token_hint: the :class:`FrontDoor` to build
                (when ``door`` is not given).
            door: the checks to use, shared with the data plane.

        Raises:
            ValueError: the token is empty.
        """
        self.app = app
        self.door = door or FrontDoor(token=token or "", public_paths=public_paths, max_body_bytes=max_body_bytes,
                                      token_hint=token_hint)

    @property
    def max_body_bytes(self) -> int:
        return self.door.max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        raw = scope.get("headers") or []
        refusal = self.door.refusal(scope["path"], scope.get("query_string") or b"", raw)
        if refusal is not None:
            await _refuse(scope, send, *refusal)
            return
        scope = _without_token_param(scope)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._call_http(scope, receive, send, raw)

    async def _call_http(self, scope, receive, send, raw_headers) -> None:
        limit = self.door.max_body_bytes
        refusal = self.door.length_refusal(raw_headers)
        if refusal is not None:
            await _refuse(scope, send, *refusal)
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            nonlocal response_started
            # Once the body is too large, whatever the app answers (often a 500 from the
            # error middleware that saw _BodyTooLarge) is replaced by our 413.
            if exceeded and not response_started:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # Whatever the app raised after the limit tripped (our _BodyTooLarge, perhaps
            # wrapped in an exception group or turned into another error) is its echo.
            if not exceeded:
                raise
        if exceeded and not response_started:
            await _refuse(scope, send, 413, "request_too_large",
                          f"The request body passed the limit of {limit} bytes.",
                          "Send a smaller body, or raise MODELDECK_MAX_BODY_BYTES.")


class _Headers:
    """Read-only view of ASGI headers, decoded as latin-1 like HTTP/1.1 does."""

    def __init__(self, raw):
        self._raw = raw

    def get_all(self, name: bytes) -> list[str]:
        return [v.decode("latin-1") for k, v in self._raw if k.lower() == name]


def _without_token_param(scope):
    # Work on the raw pairs so every other parameter reaches the app byte for byte.
    query = scope.get("query_string") or b""
    if TOKEN_QUERY_PARAM.encode() not in query:
        return scope
    pairs = query.split(b"&")
    kept = [p for p in pairs if unquote_plus(p.partition(b"=")[0].decode("latin-1")) != TOKEN_QUERY_PARAM]
    if len(kept) == len(pairs):
        return scope
    return {**scope, "query_string": b"&".join(kept)}


async def _refuse(scope, send, status: int, code: str, message: str, hint: str) -> None:
    if scope["type"] == "websocket":
        # Closing before accept makes the server answer the handshake with 403. (The
        # "websocket.http.response" extension could carry 401 and a body, but browsers do
        # not show either to scripts, and uvicorn logs it as an unfinished handshake.)
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = {"cache-control": "no-store"}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="modeldeck"'
    response = error_response(scope["path"], status, code, message, hint, headers=headers)
    await response(scope, _no_receive, send)


async def _no_receive():
    # A plain Response never reads the request; the refused body must stay unread.
    raise RuntimeError("an error response does not read the request")

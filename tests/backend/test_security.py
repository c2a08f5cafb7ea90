"""Tests of backend.security through real HTTP: token file, Host/Origin checks, bearer auth, body limits."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import threading
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import StreamingResponse

from backend.security import SecurityMiddleware, ensure_token, is_loopback_host
from tests.support.live_server import serve

TOKEN = "test-token-0123456789"
LIMIT = 1024
TOKEN_HINT = "/home/someone/.config/modeldeck/token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM_CHUNKS = 5


def make_app(stream_state: dict) -> SecurityMiddleware:
    app = FastAPI()

    @app.get("/api/health")
    def health():
        return {"status": "ok"}

    @app.get("/api/secret")
    def secret(request: Request):
        return {"ok": True, "query": request.url.query}

    @app.get("/api/stream")
    async def stream():
        async def chunks():
            for i in range(STREAM_CHUNKS):
                if i == STREAM_CHUNKS - 1:
                    stream_state["last_produced"].set()
                yield f"chunk {i}\n".encode()
                await asyncio.sleep(0.15)
        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/api/echo")
    async def echo(request: Request):
        return {"size": len(await request.body())}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": []}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return {"size": len(await request.body())}

    @app.websocket("/api/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return SecurityMiddleware(app, token=TOKEN, max_body_bytes=LIMIT, token_hint=TOKEN_HINT)


@pytest.fixture(scope="module")
def stream_state():
    return {"last_produced": threading.Event()}


@pytest.fixture(scope="module")
def base_url(stream_state):
    with serve(make_app(stream_state)) as url:
        yield url


@pytest.fixture(scope="module")
def host(base_url):
    return urlsplit(base_url).netloc  # "127.0.0.1:<port>"


@pytest.fixture(scope="module")
def port(base_url):
    return urlsplit(base_url).port


@pytest.fixture()
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def check(response: httpx.Response) -> httpx.Response:
    """Every answer, allowed or refused, must be free of CORS headers."""
    leaked = [k for k in response.headers if k.lower().startswith("access-control-")]
    assert not leaked, f"CORS headers sent: {leaked}"
    return response


def assert_modeldeck_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "hint"}
    assert error["code"] == code
    assert error["message"] and error["hint"]
    return error


def raw_request(port: int, head: bytes) -> tuple[int, bytes]:
    """Send raw bytes (for requests httpx refuses to make); return (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


# --------------------------------------------------------------------------- auth


def test_missing_token_is_401_with_hint(client):
    r = check(client.get("/api/secret"))
    error = assert_modeldeck_error(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer <token>" in error["message"]
    assert TOKEN_HINT in error["message"]


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer", f"Basic {TOKEN}", TOKEN,
                                    f"Bearer {TOKEN[:-1]}"])
def test_wrong_token_is_401(client, header):
    r = check(client.get("/api/secret", headers={"Authorization": header}))
    assert_modeldeck_error(r, 401, "unauthorized")


def test_right_token_in_header(client):
    r = check(client.get("/api/secret", headers=AUTH))
    assert r.status_code == 200 and r.json()["ok"] is True


def test_bearer_scheme_is_case_insensitive(client):
    r = check(client.get("/api/secret", headers={"Authorization": f"bearer {TOKEN}"}))
    assert r.status_code == 200


def test_right_token_in_query_is_accepted_and_not_passed_on(client):
    r = check(client.get("/api/secret", params={"a": "1 2", "token": TOKEN, "b": "x"}))
    assert r.status_code == 200
    assert r.json()["query"] == "a=1+2&b=x"


def test_wrong_token_in_query_is_401(client):
    r = check(client.get("/api/secret", params={"token": "nope"}))
    assert_modeldeck_error(r, 401, "unauthorized")


def test_public_path_needs_no_token(client):
    r = check(client.get("/api/health"))
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_public_paths_match_exactly(client):
    assert check(client.get("/api/health/x")).status_code == 401


# --------------------------------------------------------------------------- Host (DNS rebinding)


@pytest.mark.parametrize("path", ["/api/health", "/api/secret"])
def test_foreign_host_is_403_even_on_public_path(client, path):
    r = check(client.get(path, headers={**AUTH, "Host": "evil.example"}))
    error = assert_modeldeck_error(r, 403, "forbidden_host")
    assert "evil.example" in error["message"]


@pytest.mark.parametrize("value", ["localhost.evil.example", "127.0.0.1.nip.io", "[::2]", "0.0.0.0",
                                   "192.168.1.10"])
def test_other_hosts_are_403(client, port, value):
    r = check(client.get("/api/health", headers={"Host": f"{value}:{port}"}))
    assert_modeldeck_error(r, 403, "forbidden_host")


@pytest.mark.parametrize("value", ["localhost:{port}", "127.0.0.1:{port}", "127.0.0.2:{port}",
                                   "[::1]:{port}", "localhost", "[::1]", "LocalHost:{port}"])
def test_loopback_hosts_are_allowed(client, port, value):
    r = check(client.get("/api/secret", headers={**AUTH, "Host": value.format(port=port)}))
    assert r.status_code == 200, r.text


def test_empty_host_is_403(port):
    status, data = raw_request(port, b"GET /api/health HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n")
    assert status == 403, data
    assert b"forbidden_host" in data


def test_port_only_host_is_403(port):
    head = f"GET /api/health HTTP/1.1\r\nHost: :{port}\r\nConnection: close\r\n\r\n".encode()
    status, data = raw_request(port, head)
    assert status == 403, data
    assert b"forbidden_host" in data


def test_missing_host_is_refused(port):
    # HTTP/1.0 allows leaving Host out; the server must not treat that as loopback.
    status, data = raw_request(port, b"GET /api/health HTTP/1.0\r\n\r\n")
    assert status == 403, data


def test_duplicate_host_headers_are_refused(port):
    head = (f"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n"
            "Connection: close\r\n\r\n").encode()
    status, _ = raw_request(port, head)
    assert status in (400, 403)


def test_is_loopback_host_edge_cases():
    assert is_loopback_host("127.255.255.254:1")
    assert is_loopback_host("[0:0:0:0:0:0:0:1]:8765")
    for bad in ["", ":8765", "localhost:", "127.1", "127.0.0.1:0", "127.0.0.1:65536", "::1",
                "0x7f.0.0.1", "127.0.0.1:80:80", "localhost:http"]:
        assert not is_loopback_host(bad), bad


# --------------------------------------------------------------------------- Origin


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://{host}", "http://127.0.0.1:1",
                                    "http://localhost:{port}"])
def test_foreign_origin_is_403(client, host, port, origin):
    headers = {**AUTH, "Origin": origin.format(host=host, port=port)}
    r = check(client.get("/api/secret", headers=headers))
    assert_modeldeck_error(r, 403, "forbidden_origin")


def test_foreign_origin_is_403_on_public_path_and_preflight(client):
    r = check(client.get("/api/health", headers={"Origin": "http://evil.example"}))
    assert r.status_code == 403
    preflight = check(client.options("/api/secret", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}))
    assert preflight.status_code == 403


def test_same_origin_is_allowed(client, host):
    r = check(client.get("/api/secret", headers={**AUTH, "Origin": f"http://{host}"}))
    assert r.status_code == 200


def test_same_origin_with_localhost_host(client, port):
    headers = {**AUTH, "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    assert check(client.get("/api/secret", headers=headers)).status_code == 200


# --------------------------------------------------------------------------- body size


def test_body_within_limit_is_read(client):
    r = check(client.post("/api/echo", headers=AUTH, content=b"x" * LIMIT))
    assert r.status_code == 200 and r.json() == {"size": LIMIT}


def test_content_length_over_limit_is_413(client):
    r = check(client.post("/api/echo", headers=AUTH, content=b"x" * (LIMIT + 1)))
    error = assert_modeldeck_error(r, 413, "request_too_large")
    assert str(LIMIT) in error["message"]


def test_content_length_over_limit_is_413_before_the_body_is_sent(port):
    # Headers only: the answer must come although the (huge) body never does.
    head = (f"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: 1000000000\r\n\r\n").encode()
    status, data = raw_request(port, head)
    assert status == 413, data


def test_chunked_body_within_limit_is_read(client):
    r = check(client.post("/api/echo", headers=AUTH, content=iter([b"a" * 300] * 3)))
    assert r.status_code == 200 and r.json() == {"size": 900}


def test_chunked_body_over_limit_is_413(client):
    body = iter([b"a" * 300] * 8)  # no Content-Length: httpx sends it chunked
    r = check(client.post("/api/echo", headers=AUTH, content=body))
    assert "content-length" not in r.request.headers
    assert_modeldeck_error(r, 413, "request_too_large")


def test_invalid_content_length_is_refused(port):
    head = (f"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Length: -5\r\nConnection: close\r\n\r\n").encode()
    status, _ = raw_request(port, head)
    assert status == 400


def test_unauthenticated_oversize_body_is_401_not_413(client):
    r = check(client.post("/api/echo", content=b"x" * (LIMIT + 1)))
    assert r.status_code == 401


# --------------------------------------------------------------------------- /v1 errors in OpenAI's shape


def assert_openai_error(response: httpx.Response, status: int, type_: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_ and error["param"] is None and error["code"]
    return error


def test_v1_401_in_openai_shape(client):
    r = check(client.get("/v1/models"))
    error = assert_openai_error(r, 401, "authentication_error")
    assert "Authorization: Bearer <token>" in error["message"]


def test_v1_403_in_openai_shape(client):
    r = check(client.get("/v1/models", headers={**AUTH, "Host": "evil.example"}))
    assert_openai_error(r, 403, "permission_error")
    r = check(client.get("/v1/models", headers={**AUTH, "Origin": "http://evil.example"}))
    assert_openai_error(r, 403, "permission_error")


def test_v1_413_in_openai_shape(client):
    r = check(client.post("/v1/chat/completions", headers=AUTH, content=b"{" * (LIMIT + 1)))
    assert_openai_error(r, 413, "invalid_request_error")
    r = check(client.post("/v1/chat/completions", headers=AUTH, content=iter([b"{" * 600] * 2)))
    assert_openai_error(r, 413, "invalid_request_error")


def test_v1_with_openai_client(base_url):
    good = openai.OpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0)
    assert list(good.models.list()) == []
    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert "bearer token" in str(info.value)


# --------------------------------------------------------------------------- streaming passes through


def test_streamed_chunks_arrive_incrementally(client, stream_state):
    stream_state["last_produced"].clear()
    received = []
    with client.stream("GET", "/api/stream", headers=AUTH) as r:
        assert r.status_code == 200
        check(r)
        for chunk in r.iter_raw():
            if not received:
                assert not stream_state["last_produced"].is_set(), \
                    "the first chunk arrived only after the last was produced: the body was buffered"
            received.append(chunk)
    assert b"".join(received) == b"".join(f"chunk {i}\n".encode() for i in range(STREAM_CHUNKS))


# --------------------------------------------------------------------------- WebSocket handshakes


def ws_handshake(port: int, host: str, path: str) -> bytes:
    head = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_websocket_is_checked_like_http(port, host):
    assert b" 101 " in ws_handshake(port, host, f"/api/ws?token={TOKEN}")
    # A refused handshake is closed before accept, which the server answers with 403.
    assert b" 403 " in ws_handshake(port, host, "/api/ws")
    assert b" 403 " in ws_handshake(port, "evil.example", f"/api/ws?token={TOKEN}")
    assert b" 403 " in ws_handshake(port, host, "/api/ws?token=wrong")


# --------------------------------------------------------------------------- middleware construction


def test_empty_token_is_refused():
    with pytest.raises(ValueError):
        SecurityMiddleware(FastAPI(), token="")


# --------------------------------------------------------------------------- token file


posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@posix_only
def test_token_file_is_created_0600_in_private_folders(tmp_path, monkeypatch):
    path = tmp_path / "a" / "b" / "token"
    old = os.umask(0)  # a permissive umask must not leak into the file's mode
    try:
        # Never written first and tightened after: chmod must not be needed at all.
        monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod called on creation"))
        token = ensure_token(path)
    finally:
        os.umask(old)
    assert len(token) >= 40
    assert path.read_text().strip() == token
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(path.parent.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["token"]  # no temporary file left


def test_token_file_is_reused(tmp_path):
    path = tmp_path / "token"
    first = ensure_token(path)
    assert ensure_token(path) == first
    assert first != ensure_token(tmp_path / "other")


@posix_only
def test_loose_token_file_is_tightened(tmp_path):
    path = tmp_path / "token"
    path.write_text("my-existing-token\n")
    os.chmod(path, 0o644)
    assert ensure_token(path) == "my-existing-token"
    assert mode(path) == 0o600


def test_blank_token_file_gets_a_new_token(tmp_path):
    path = tmp_path / "token"
    path.write_text("  \n")
    token = ensure_token(path)
    assert token and path.read_text().strip() == token
    if os.name != "nt":
        assert mode(path) == 0o600


def test_concurrent_creation_agrees_on_one_token(tmp_path):
    path = tmp_path / "token"
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_token(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and path.read_text().strip() == results[0]

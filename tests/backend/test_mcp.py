"""ModelDeck's MCP server through the SDK's real client: over stdio (`modeldeck-mcp`) and Streamable HTTP (/mcp).

A real backend (``modeldeck-backend`` in a temporary home, writing its own token file) and the
real demo model; the stdio server finds the backend and token the way a person's MCP client
would, through MODELDECK_HOME and MODELDECK_PORT.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from backend.launch_plan import LaunchRequest
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import BackendProcess
from tests.support.deployments import demo_body
from tests.support.live_server import free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX = f"t{RUN_ID}-mcp"
SECRET = "mcp-secret-value-4e1c"
TOOLS = {"listRuntimes", "listDeployments", "fitCheck", "launchDeployment", "stopDeployment", "startDeployment",
         "restartDeployment", "removeDeployment", "getStats", "askModel", "compareModels", "getDeploymentLogs"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                         "clientInfo": {"name": "test", "version": "0"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def backend(tmp_path_factory, demo_base_image, demo_image, engine):
    """One real backend for the module; it writes its own token into its home, as in use."""
    b = BackendProcess(tmp_path_factory.mktemp("mcp") / "home", demo_base_image=demo_base_image, token=None)
    b.start()
    yield b
    b.stop()
    for c in engine.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
        if c.labels.get("modeldeck.id", "").startswith(PREFIX):
            c.remove(force=True)


def mcp_script() -> str:
    script = Path(sys.executable).parent / "modeldeck-mcp"
    assert script.exists(), "the modeldeck-mcp entry point is not installed: pip install --no-deps -e ."
    return str(script)


def stdio_params(home: Path, port: int, *args: str) -> StdioServerParameters:
    env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_PORT": str(port),
           "MODELDECK_EXTRA_LABELS": f"{RUN_LABEL}={RUN_ID}"}
    env.pop("MODELDECK_TOKEN", None)
    return StdioServerParameters(command=mcp_script(), args=list(args), env=env)


@asynccontextmanager
async def connect(backend: BackendProcess, transport: str, mode: str = "auto"):
    """The SDK's client on ``transport``: "stdio" (modeldeck-mcp) or "http" (/mcp with the bearer token).

    ``mode``: "auto" negotiates the newest protocol (2026-07-28 with SDK 2.3); "legacy" the
    initialize handshake of the 2025 versions that today's desktop clients speak.
    """
    if transport == "stdio":
        async with Client(stdio_params(backend.home, backend.port, "--no-start"), mode=mode) as client:
            yield client
    else:
        async with httpx2.AsyncClient(headers=backend.auth, timeout=httpx2.Timeout(30, read=None)) as http:
            async with Client(streamable_http_client(f"{backend.url}/mcp", http_client=http), mode=mode) as client:
                yield client


def payload(result) -> dict:
    assert not result.is_error, result.content[0].text
    data = json.loads(result.content[0].text)
    assert result.structured_content == data
    return data


def error_text(result) -> str:
    assert result.is_error, result.content[0].text
    return result.content[0].text


async def launch(client: Client, served: str, **extra) -> tuple[dict, list[tuple[float, str]]]:
    progress: list[tuple[float, str]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message or ""))

    result = await client.call_tool("launchDeployment", demo_body(served, **extra), progress_callback=on_progress)
    return payload(result), progress


@pytest.mark.parametrize("transport, mode", [("stdio", "legacy"), ("http", "legacy"), ("stdio", "auto"),
                                             ("http", "auto")])
def test_tools_launch_ask_compare_stop_and_remove(backend, transport, mode):
    a, b = f"{PREFIX}-{transport}-{mode}-a", f"{PREFIX}-{transport}-{mode}-b"

    async def scenario() -> list[str]:
        texts: list[str] = []
        async with connect(backend, transport, mode) as client:
            assert (client.protocol_version < "2026") == (mode == "legacy"), client.protocol_version
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            # The launch tool's input is the HTTP API's own request model.
            assert tools["launchDeployment"].input_schema["properties"] == \
                LaunchRequest.model_json_schema()["properties"]
            assert tools["removeDeployment"].annotations.destructive_hint is True
            assert tools["stopDeployment"].annotations.destructive_hint is True
            assert tools["getStats"].annotations.read_only_hint is True

            launched, progress = await launch(client, a, env={"MCP_TEST_TOKEN": SECRET})
            assert launched["served_name"] == a and launched["status"] == "ready"
            assert launched["openai_base_url"] == f"{backend.url}/v1"
            assert progress and "ready" in progress[-1][1], progress
            assert [p for p, _ in progress] == sorted(p for p, _ in progress)
            launched_b, _ = await launch(client, b)
            assert launched_b["served_name"] == b

            answer = payload(await client.call_tool("askModel", {"deployment": a, "prompt": "Say hello.",
                                                                 "max_tokens": 12}))
            assert answer["text"] and answer["completion_tokens"] > 0
            assert answer["ttft_s"] > 0 and answer["tokens_per_s"] > 0

            compared = payload(await client.call_tool("compareModels", {"deployments": [a, launched_b["id"]],
                                                                        "prompt": "Count to three.",
                                                                        "max_tokens": 8}))
            assert [r["served_name"] for r in compared["results"]] == [a, b]
            assert all(r["text"] and r["completion_tokens"] > 0 for r in compared["results"])

            listed = {d["served_name"]: d for d in payload(await client.call_tool("listDeployments"))["deployments"]}
            assert listed[a]["ready"] and listed[b]["status"] == "ready"
            assert "mem_used_bytes" in listed[a]["memory"]
            logs = payload(await client.call_tool("getDeploymentLogs", {"deployment": a, "tail": 20}))
            assert isinstance(logs["lines"], list) and len(logs["lines"]) <= 20
            stats = payload(await client.call_tool("getStats"))
            assert stats["host"]["mem_total_bytes"] > 0

            stopped = payload(await client.call_tool("stopDeployment", {"deployment": a}))
            assert stopped["status"] == "stopped" and not stopped["ready"]
            for name in (a, b):
                assert payload(await client.call_tool("removeDeployment", {"deployment": name}))["removed"]
            remaining = payload(await client.call_tool("listDeployments"))["deployments"]
            assert not {a, b} & {d["served_name"] for d in remaining}
            texts += [json.dumps(x) for x in (launched, launched_b, listed, compared, answer)]
        return texts

    texts = asyncio.run(scenario())
    assert not any(SECRET in t for t in texts), "a tool returned a secret value"


def test_bad_input_is_the_tools_error_result_and_the_session_goes_on(backend):
    async def scenario() -> None:
        async with connect(backend, "http") as client:
            text = error_text(await client.call_tool("askModel", {"deployment": f"{PREFIX}-nope", "prompt": "hi"}))
            assert f"No deployment '{PREFIX}-nope'" in text and "listDeployments" in text
            text = error_text(await client.call_tool("stopDeployment", {"deployment": f"{PREFIX}-nope"}))
            assert "No deployment" in text
            text = error_text(await client.call_tool("launchDeployment", {"model": "demo-tiny", "colour": "red"}))
            assert "recipe: Field required" in text and "colour: Extra inputs are not permitted" in text
            assert "Fix the named fields" in text
            # Validated by LaunchRequest itself, and the value (a secret, maybe) is not echoed.
            text = error_text(await client.call_tool("launchDeployment",
                                                     demo_body(f"{PREFIX}-bad", env={"LD_PRELOAD": SECRET})))
            assert "LD_PRELOAD" in text and SECRET not in text
            text = error_text(await client.call_tool("launchDeployment", {"recipe": "no-such-runtime",
                                                                          "model": "x"}))
            assert "no-such-runtime" in text
            text = error_text(await client.call_tool("compareModels", {"deployments": ["one"], "prompt": "hi"}))
            assert "deployments" in text
            # The session is still usable.
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            assert "runtimes" in payload(await client.call_tool("listRuntimes"))

    asyncio.run(scenario())


@pytest.mark.parametrize("headers, status", [
    ({}, 401),  # no token
    ({"Origin": "http://evil.example"}, 403),  # a foreign page in a browser
    ({"Host": "evil.example:80"}, 403),  # DNS rebinding: a foreign name that resolves to 127.0.0.1
])
def test_mcp_endpoint_has_the_backends_front_door(backend, headers, status):
    auth = {} if status == 401 else backend.auth
    r = httpx.post(f"{backend.url}/mcp", headers={**MCP_HEADERS, **auth, **headers}, json=INITIALIZE, timeout=10)
    assert r.status_code == status, r.text
    assert "mcp-session-id" not in r.headers
    ok = httpx.post(f"{backend.url}/mcp", headers={**MCP_HEADERS, **backend.auth}, json=INITIALIZE, timeout=10)
    assert ok.status_code == 200, ok.text


def test_twenty_parallel_tool_calls_leave_the_backend_responsive(backend):
    async def scenario() -> None:
        async with connect(backend, "http") as client:
            names = ["getStats", "listDeployments", "listRuntimes", "fitCheck"] * 5
            args = {"fitCheck": {"recipe": "demo", "model": "demo-tiny"}}
            results = await asyncio.gather(*(client.call_tool(n, args.get(n, {})) for n in names))
            assert len(results) == 20
            for r in results:
                payload(r)

    asyncio.run(scenario())
    t0 = time.monotonic()
    r = httpx.get(f"{backend.url}/api/health", timeout=5)
    assert r.status_code == 200 and time.monotonic() - t0 < 1.0


def test_stdio_starts_the_backend_when_none_answers_and_stops_it_after(tmp_path, demo_base_image):
    home, port = tmp_path / "home", free_port()
    params = stdio_params(home, port)
    params.env["MODELDECK_DEMO_BASE_IMAGE"] = demo_base_image

    async def scenario() -> None:
        async with Client(params) as client:
            assert "runtimes" in payload(await client.call_tool("listRuntimes"))
            assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200

    asyncio.run(scenario())
    assert (home / "token").exists()  # the backend it started wrote the token it then used

    def gone() -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
        except httpx.ConnectError:
            return True
        return False

    wait_until(gone, 20, what="the backend modeldeck-mcp started to stop with it", ignoring=())

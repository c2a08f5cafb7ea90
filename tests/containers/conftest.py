"""Fixtures for the demo model server: a model trained once per session and a live server process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.live_server import free_port
from tests.support.waiting import wait_until

DEMO_DIR = Path(__file__).resolve().parents[2] / "containers" / "demo"
TOKEN_DELAY = 0.005

# The demo's modules are plain scripts (copied to /app in the image), not a package.
sys.path.insert(0, str(DEMO_DIR))


@dataclass
class DemoProcess:
    """A running server.py: its process, base URL and log file."""

    process: subprocess.Popen
    url: str
    log: Path

    def log_text(self) -> str:
        """Everything the server has written so far."""
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def demo_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the model with train.py exactly as the image build does, into a temporary folder."""
    out = tmp_path_factory.mktemp("demo-model") / "model.json.gz"
    subprocess.run([sys.executable, str(DEMO_DIR / "train.py"), "--out", str(out)], check=True,
                   cwd=DEMO_DIR, timeout=120, capture_output=True)
    return out


def start_demo(model_file: Path, log: Path, *extra: str, timeout: float = 20.0) -> DemoProcess:
    """Start server.py on a free loopback port and wait until /health answers.

    Raises:
        RuntimeError: the process exited or did not answer within timeout.
    """
    port = free_port()
    cmd = [sys.executable, "-u", str(DEMO_DIR / "server.py"), "--host", "127.0.0.1", "--port", str(port),
           "--model", "demo-tiny", "--served-name", "demo", "--token-delay", str(TOKEN_DELAY),
           "--model-file", str(model_file), *extra]
    with log.open("wb") as sink:
        process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=DEMO_DIR)
    demo = DemoProcess(process, f"http://127.0.0.1:{port}", log)

    def answers() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server.py exited with {process.returncode}:\n{demo.log_text()}")
        return httpx.get(demo.url + "/health", timeout=1).status_code == 200

    try:
        wait_until(answers, timeout, what="server.py to answer /health")
    except AssertionError as exc:
        process.kill()
        raise RuntimeError(f"{exc}:\n{demo.log_text()}") from None
    return demo


def stop_demo(demo: DemoProcess) -> None:
    """Terminate the process, killing it if SIGTERM is not enough."""
    if demo.process.poll() is None:
        demo.process.terminate()
        try:
            demo.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            demo.process.kill()
            demo.process.wait()


@pytest.fixture(scope="session")
def demo_server(demo_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    """One server.py shared by the session's HTTP tests."""
    demo = start_demo(demo_model_file, tmp_path_factory.mktemp("demo-log") / "server.log")
    try:
        yield demo
    finally:
        stop_demo(demo)


@pytest.fixture
def http(demo_server: DemoProcess) -> Iterator[httpx.Client]:
    """An httpx client for the shared server."""
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        yield client


@pytest.fixture
def openai_client(demo_server: DemoProcess):
    """The official OpenAI client pointed at the shared server."""
    client = openai.OpenAI(base_url=demo_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    yield client
    client.close()

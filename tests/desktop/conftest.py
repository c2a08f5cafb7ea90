"""Desktop fixtures: a real backend on a free port (real engine) and a ready demo deployment."""

from __future__ import annotations

import time

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import serve

pytestmark = pytest.mark.gui

TOKEN = "desktop-test-token"


@pytest.fixture(scope="session", autouse=True)
def gui_thread_gc(qapp):
    """As in the app: Python's cycle collector runs on the GUI thread only (see desktop.gc_guard).

    Without it, a collection triggered in the in-process backend's thread or a stream's
    thread can free Qt objects off the GUI thread and crash the test run.
    """
    from desktop.gc_guard import GuiThreadGarbageCollector
    guard = GuiThreadGarbageCollector()
    yield guard
    guard.stop()


@pytest.fixture(scope="session")
def live_backend(engine, demo_image, demo_base_image, tmp_path_factory):
    """(base_url, token) of a real backend on a free loopback port, shared by the desktop tests."""
    settings = Settings(home=tmp_path_factory.mktemp("backend-home"), token=TOKEN,
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url, TOKEN


@pytest.fixture(scope="session")
def demo_model(live_backend) -> str:
    """Served name of a ready demo deployment (launched once through the API)."""
    url, token = live_backend
    name = f"t{RUN_ID}-desk"
    h = {"Authorization": f"Bearer {token}"}
    r = httpx.post(f"{url}/api/deployments", headers=h, timeout=30,
                   json={"recipe": "demo", "model": "demo-tiny", "served_name": name,
                         "env": {"DEMO_TOKEN_DELAY": "0.02"}})
    r.raise_for_status()
    dep_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        d = httpx.get(f"{url}/api/deployments/{dep_id}", headers=h, timeout=10).json()
        if d["ready"]:
            break
        assert d["status"] != "failed", d
        assert time.monotonic() < deadline, d
        time.sleep(0.3)
    deadline = time.monotonic() + 10  # /v1 routing follows the refresh loop
    while name not in [m["id"] for m in httpx.get(f"{url}/v1/models", headers=h, timeout=10).json()["data"]]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return name

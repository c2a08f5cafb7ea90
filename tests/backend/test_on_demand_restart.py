"""Models on demand across backend restarts: settings survive, and a backend killed mid-load is reconciled."""

from __future__ import annotations

import stat
import threading
import time

import httpx
import pytest

from tests.support.backend_process import TOKEN, BackendProcess
from tests.support.deployments import demo_body, launch_ready, wait_ready
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture()
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture()
def backends(demo_image, demo_base_image):
    started: list[BackendProcess] = []

    def start(home) -> BackendProcess:
        b = BackendProcess(home, demo_base_image=demo_base_image)
        b.start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def test_settings_survive_a_restart(backends, home, run_id):
    first = backends(home)
    d = launch_ready(first.url, TOKEN, demo_body(f"rs{run_id}-keep", idle_ttl_s=900))
    r = httpx.patch(f"{first.url}/api/deployments/{d['id']}", headers=first.auth, timeout=30,
                    json={"pinned": True, "idle_ttl_s": 120})
    assert r.status_code == 200, r.text
    path = home / "lifecycle.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first.stop()

    second = backends(home)
    again = second.get(f"/api/deployments/{d['id']}").json()
    assert (again["pinned"], again["idle_ttl_s"], again["effective_idle_ttl_s"]) == (True, 120, 120)
    assert again["last_load"]["trigger"] == "launch"  # the last of each kind is kept too

    # Removed, its settings are dropped from the file by the refresh loop.
    assert second.delete(f"/api/deployments/{d['id']}").status_code == 204
    wait_until(lambda: d["id"] not in path.read_text(), 10, what="lifecycle.json to drop the removed deployment")


def test_backend_killed_mid_load_is_reconciled_by_the_next(backends, home, engine, run_id):
    first = backends(home)
    name = f"rs{run_id}-kill"
    d = launch_ready(first.url, TOKEN, demo_body(name))
    assert first.post(f"/api/deployments/{d['id']}/stop").json()["loads_on_request"]
    since = time.time()

    def cold_request() -> None:
        try:
            httpx.post(f"{first.url}/v1/chat/completions", headers=first.auth, timeout=60,
                       json={"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
        except httpx.HTTPError:
            pass  # the backend is killed under it

    client = threading.Thread(target=cold_request)
    client.start()
    # Killed as soon as Docker says the on-demand start happened, before the load could finish.
    wait_until(lambda: engine.inspect(d["container_id"]).state == "running", 30, interval=0.01,
               what="the on-demand start")
    first.kill()
    client.join(30)

    second = backends(home)
    wait_ready(second.url, TOKEN, d["id"], timeout=60)
    r = httpx.post(f"{second.url}/v1/chat/completions", headers=second.auth, timeout=60,
                   json={"model": name, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 200, r.text
    found = engine.list(labels={"modeldeck.id": d["id"]})
    assert [c.id for c in found] == [d["container_id"]], "no second container"
    starts = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                  filters={"container": d["container_id"], "event": "start"})
    assert sum(1 for e in starts if e["timeNano"] >= since * 1e9) == 1, "one start, no duplicate"
    assert found[0].restart_count == 0

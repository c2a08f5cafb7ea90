"""The Ollama recipe is ready only when its model answers, also after the backend was killed during the pull.

Ollama itself cannot run on the test machines (no registry serves ollama/ollama or its
models), so the container is a stand-in, tests/support/ollama_standin/: a small server that
speaks the real protocol of the routes the recipe uses (GET /api/version, POST /api/pull with
stream=false, POST /api/show answering 404 until the model is there), checked against
Ollama's server/routes.go, and that stops a pull when the client goes away as Ollama does.
It is not Ollama: it proves ModelDeck's side of the protocol, not Ollama's. The recipe is
containers/ollama.toml unchanged but for its image.
"""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from tests.conftest import RUN_ID
from tests.support.backend_process import AUTH
from tests.support.live_server import free_port
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
STANDIN = "tests/support/ollama_standin"


@pytest.fixture()
def catalog(tmp_path, demo_base_image):
    """containers/ with the Ollama recipe's image replaced by the stand-in's build (nothing else changed)."""
    from backend.settings import REPO_ROOT

    folder = tmp_path / "catalog"
    folder.mkdir()
    recipe = (REPO_ROOT / "containers" / "ollama.toml").read_text()
    recipe, n = re.subn(r'(?m)^ref = "ollama/ollama:[^"]*"$', 'build = "ollama-standin"', recipe)
    assert n == 1, "the Ollama recipe names its image in one 'ref' line"
    (folder / "ollama.toml").write_text(recipe)
    shutil.copytree(REPO_ROOT / STANDIN, folder / "ollama-standin")
    return folder


def env_for(catalog) -> dict[str, str]:
    # The recipe's Ollama cache from an empty test folder, not the shared modeldeck-cache-ollama volume.
    cache = catalog.parent / "ollama-cache"
    cache.mkdir(exist_ok=True)
    return {"MODELDECK_CATALOG_DIR": str(catalog), "MODELDECK_CACHE_DIR_OLLAMA": str(cache)}


def follow(base: str, dep_id: str, until) -> list[dict]:
    """Launch progress events until ``until(event)`` is true or the stream ends."""
    events: list[dict] = []
    with httpx.stream("GET", f"{base}/api/deployments/{dep_id}/events", headers=AUTH, timeout=180) as s:
        for _, data in sse_events(s):
            events.append(json.loads(data))
            if until(events[-1]):
                break
    return events


def standin(port: int, path: str, body: dict | None = None) -> httpx.Response:
    url = f"http://127.0.0.1:{port}{path}"
    return httpx.post(url, json=body, timeout=5) if body is not None else httpx.get(url, timeout=5)


def test_backend_killed_during_the_pull_never_marks_ollama_ready_without_its_model(backends, catalog, engine):
    prefix = f"t{RUN_ID}-ollpull"
    model = f"{prefix}:tiny"
    backend = backends(prefix=prefix, env=env_for(catalog))
    backend.start()
    r = backend.post("/api/deployments", json={"recipe": "ollama", "model": model, "gpus": [],
                                               "port": free_port(), "env": {"STANDIN_PULL_SECONDS": "6"}},
                     timeout=60)
    assert r.status_code == 202, r.text
    dep_id = r.json()["id"]
    follow(backend.url, dep_id, lambda e: "/api/pull" in e["message"])
    port = backend.get(f"/api/deployments/{dep_id}").json()["host_port"]
    wait_until(lambda: standin(port, "/standin/stats").json()["progress"].get(model, 0) >= 1.0, 30,
               what="the pull has run a while")
    backend.kill()

    # Ollama stops a pull whose client went away; the model is not there.
    wait_until(lambda: standin(port, "/standin/stats").json()["pulls_cancelled"] == 1, 10, what="pull cancelled")
    assert standin(port, "/api/show", {"model": model}).status_code == 404
    assert standin(port, "/api/version").status_code == 200, "the server itself answers: health alone says ready"

    backend.start()
    seen: list[tuple[bool, str, int]] = []

    def ready_with_model():
        d = backend.get(f"/api/deployments/{dep_id}").json()
        show = standin(port, "/api/show", {"model": model}).status_code
        seen.append((d["ready"], d["status"], show))
        assert not d["ready"] or show == 200, f"ready without its model: {d}"
        assert d["status"] != "failed", d
        return d["ready"]

    wait_until(ready_with_model, 60, interval=0.1, what="the interrupted pull resumes and the model answers")
    assert not seen[0][0], "the new backend did not take the server for ready at first sight"
    assert any(status == "loading" for _, status, _ in seen)
    stats = standin(port, "/standin/stats").json()
    assert stats["pulls_started"] == 2 and stats["pulls_cancelled"] == 1 and stats["pulls_completed"] == 1, stats
    policy = engine.client.api.inspect_container(f"modeldeck-{dep_id}")["HostConfig"]["RestartPolicy"]["Name"]
    assert policy == "on-failure", "the resumed launch completed: restarts on"
    assert model in [m["id"] for m in backend.get("/v1/models").json()["data"]]


def test_a_model_that_never_shows_up_fails_the_launch(backends, catalog):
    """The pull says success but the server does not have the model: failed, with the server's answer."""
    prefix = f"ghost-t{RUN_ID}"  # the stand-in's pull of a "ghost..." model succeeds, but it never shows up
    backend = backends(prefix=prefix, env=env_for(catalog))
    backend.start()
    r = backend.post("/api/deployments", json={"recipe": "ollama", "model": f"{prefix}:tiny", "gpus": [],
                                               "env": {"STANDIN_PULL_SECONDS": "0.2"}}, timeout=60)
    assert r.status_code == 202, r.text
    events = follow(backend.url, r.json()["id"], lambda e: e["phase"] in ("ready", "failed"))
    assert events[-1]["phase"] == "failed", events[-3:]
    assert "does not have the model" in events[-1]["message"] and "404" in events[-1]["message"]
    d = backend.get(f"/api/deployments/{r.json()['id']}").json()
    assert d["status"] == "failed" and not d["ready"]

"""The Docker engine going away and coming back while the backend runs: "down" at once, nothing crashes, recovery.

While it is away the deployments list is the last state seen, marked stale with the engine's
error; a container stopped meanwhile (Docker's shutdown stops running containers) is shown as
stopped while the engine was down once it is back.

The engine is reached through a Unix-socket forwarder that the test cuts (see
socket_cut.py and docs/reliability.md for why not a second dockerd).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import RUN_ID
from tests.reliability.socket_cut import SocketCut
from tests.reliability.support import figure
from tests.support.backend_process import TOKEN
from tests.support.deployments import demo_body, launch
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_engine_down_and_back(backends, engine, demo_image, tmp_path):
    prefix = f"t{RUN_ID}-outage"
    gate = SocketCut(tmp_path / "docker.sock")
    try:
        backend = backends(prefix=prefix, docker_host=gate.url)
        backend.start()
        dep_id, events = launch(backend.url, TOKEN, demo_body(prefix))
        assert events[-1]["phase"] == "ready", events[-3:]
        wait_until(lambda: prefix in [m["id"] for m in backend.get("/v1/models").json()["data"]], 5, what="routed")

        gate.cut()
        t_cut = time.monotonic()
        down = wait_until(lambda: (e := backend.get("/api/engine", timeout=2).json()) and not e["reachable"] and e,
                          2, interval=0.02, what='engine state "down"')
        figure("engine cut: /api/engine reads down after (s)", f"{time.monotonic() - t_cut:.2f}")
        assert down["reason"] and down["hint"]
        # The list is the registry's: stale at the engine's first refused connection, at the latest at the
        # refresh loop's next round (every 1.5 s).
        seen = wait_until(lambda: (r := backend.get("/api/deployments", timeout=5)).status_code == 200
                          and (s := {d["id"]: d for d in r.json()})[dep_id]["stale"] and s, 2 * 1.5, interval=0.05,
                          what="the deployments list marked stale")
        figure("engine cut: deployments list stale after (s)", f"{time.monotonic() - t_cut:.2f}")
        assert seen[dep_id]["state"] == "running" and seen[dep_id]["ready"], seen
        assert down["reason"] in seen[dep_id]["engine_error"], (down, seen[dep_id])
        one = backend.get(f"/api/deployments/{dep_id}", timeout=5)
        assert one.status_code == 200 and one.json()["stale"], one.text
        assert backend.get("/api/health").status_code == 200
        assert backend.get("/api/stats").status_code == 200
        assert backend.get("/api/history").status_code == 200
        # Inference does not need the engine: the last known routes keep answering.
        chat = backend.post("/v1/chat/completions", json={"model": prefix, "max_tokens": 3,
                                                          "messages": [{"role": "user", "content": "still there?"}]})
        assert chat.status_code == 200, chat.text
        refused = backend.post("/api/deployments", json={"recipe": "demo", "model": "demo-tiny",
                                                         "served_name": f"{prefix}-2"})
        assert refused.status_code == 503 and refused.json()["error"]["code"], refused.text
        # Not synchronisation but the test: time passes, the refresh loop (every 1.5 s, backend/app.py)
        # runs against the dead engine, and nothing signals a round that found the engine gone.
        time.sleep(2 * 1.5)
        assert backend.proc.poll() is None, "the backend must survive the engine's absence"
        # What a stopping dockerd does to running containers, done to this test's own container
        # through the real engine (the backend's way to it stays cut).
        container_id = seen[dep_id]["container_id"]
        engine.client.containers.get(container_id).stop(timeout=5)

        gate.restore()
        t_back = time.monotonic()
        wait_until(lambda: backend.get("/api/engine", timeout=5).json()["reachable"], 5, interval=0.05,
                   what="engine reachable again")
        back = wait_until(lambda: (r := backend.get("/api/deployments", timeout=5)).status_code == 200
                          and [d for d in r.json() if d["id"] == dep_id and not d["stale"]
                               and d["state"] != "running"], 5, interval=0.05,
                          what="deployments listed, not stale, the stopped one stopped")[0]
        figure("engine back: API fully recovered after (s)", f"{time.monotonic() - t_back:.2f}")
        assert back["status"] == "stopped" and not back["ready"] and back["engine_error"] is None, back
        assert "while the Docker engine was down" in back["message"], back
        # Started again, it is an ordinary deployment: the note goes with the stop it explained.
        assert backend.post(f"/api/deployments/{dep_id}/start", timeout=60).status_code == 200
        wait_until(lambda: (d := backend.get(f"/api/deployments/{dep_id}", timeout=5).json())["ready"]
                   and "engine was down" not in d["message"], 60, what="started again and ready")
        assert backend.get(f"/api/deployments/{dep_id}/logs").status_code == 200
        assert len(engine.client.containers.list(all=True, filters={"label": f"modeldeck.id={dep_id}"})) == 1
        assert "Traceback" not in backend.log(), backend.log()[-3000:]
    finally:
        gate.close()

"""A suite run survives kill -9 of the backend: the restarted backend answers only the cells still pending."""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from tests.conftest import RUN_ID
from tests.support.backend_process import TOKEN, BackendProcess
from tests.support.deployments import launch_ready, wait_served
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
CASES = 60


def _finished_cells(home) -> dict[int, tuple[str, str]]:
    """cell id → (status, text) of the finished cells, read from the file the killed backend left."""
    with sqlite3.connect(home / "suites.db") as db:
        return {i: (s, t) for i, s, t in db.execute("SELECT id, status, text FROM cells WHERE status != 'pending'")}


def _pending(home) -> int:
    with sqlite3.connect(home / "suites.db") as db:
        return db.execute("SELECT count(*) FROM cells WHERE status = 'pending'").fetchone()[0]


def test_kill_9_mid_run_resumes_without_repeating_cells(engine, demo_image, demo_base_image, tmp_path) -> None:
    home = tmp_path / "home"
    backend = BackendProcess(home, demo_base_image=demo_base_image)
    backend.start()
    served = f"t{RUN_ID}-suite-kill"
    dep = launch_ready(backend.url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                            "env": {"DEMO_TOKEN_DELAY": "0.01"}})
    try:
        wait_served(backend.url, TOKEN, served)
        demo = f"http://127.0.0.1:{dep['host_port']}"
        r = backend.post("/api/suites", json={"name": "kill", "cases": [{"prompt": f"Tell me tale {i} of the fox."}
                                                                        for i in range(CASES)]})
        assert r.status_code == 201, r.text
        r = backend.post(f"/api/suites/{r.json()['id']}/runs", json={
            "deployments": [served], "parameter_sets": [{"label": "p", "max_tokens": 16, "seed": 5}], "concurrency": 2})
        assert r.status_code == 202, r.text
        run_id = r.json()["id"]
        wait_until(lambda: backend.get(f"/api/runs/{run_id}").json()["run"]["done"] >= 15, 120,
                   what="15 cells answered")
        backend.kill()

        before = _finished_cells(home)
        pending = _pending(home)
        assert len(before) >= 15 and pending > 0 and len(before) + pending == CASES
        assert {s for s, _ in before.values()} == {"done"}
        # What the demo answered so far, once the requests the kill cut off have stopped.
        generations = wait_until(lambda: (h := httpx.get(f"{demo}/health", timeout=5).json())["active_generations"] == 0
                                 and h["total_generations"], 30, what="the demo to be idle")

        backend.start()
        run = wait_until(lambda: (d := backend.get(f"/api/runs/{run_id}").json())["run"]["status"] == "completed" and d,
                         180, what="the resumed run to complete")
        assert (run["run"]["done"], run["run"]["errors"]) == (CASES, 0)
        cells = {c["id"]: c for c in run["cells"]}
        assert len(cells) == CASES and {c["status"] for c in cells.values()} == {"done"}
        # The cells finished before the kill are the same cells, with the same answers.
        assert {i: (cells[i]["status"], cells[i]["text"]) for i in before} == before
        # Exactly one request per pending cell after the restart: none repeated a finished one.
        after = httpx.get(f"{demo}/health", timeout=5).json()["total_generations"]
        assert after - generations == pending
        # The new backend's own count agrees (it records a request just after its last byte went out).
        stats = wait_until(lambda: (m := backend.get("/api/stats").json()["requests"]["models"].get(served))
                           and m["requests"] >= pending and m, 10, what="the resumed requests in /api/stats")
        assert stats["requests"] == pending and stats["errors"] == 0
    finally:
        if backend.proc is not None and backend.proc.poll() is None:
            backend.delete(f"/api/deployments/{dep['id']}")
        backend.stop()


def test_a_stopped_backend_leaves_the_run_interrupted_and_resumes_it(engine, demo_image, demo_base_image,
                                                                     tmp_path) -> None:
    """SIGTERM mid-run: the cells cut off stay pending (not errors), the run reads "interrupted", and the
    next start finishes it."""
    home = tmp_path / "home"
    backend = BackendProcess(home, demo_base_image=demo_base_image)
    backend.start()
    served = f"t{RUN_ID}-suite-term"
    dep = launch_ready(backend.url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served,
                                            "env": {"DEMO_TOKEN_DELAY": "0.01"}})
    try:
        wait_served(backend.url, TOKEN, served)
        r = backend.post("/api/suites", json={"name": "term", "cases": [{"prompt": f"Tell me tale {i} of the crow."}
                                                                        for i in range(40)]})
        run_id = backend.post(f"/api/suites/{r.json()['id']}/runs", json={
            "deployments": [served], "parameter_sets": [{"max_tokens": 16}], "concurrency": 3}).json()["id"]
        wait_until(lambda: backend.get(f"/api/runs/{run_id}").json()["run"]["done"] >= 5, 120, what="5 cells answered")
        backend.stop()
        assert "Application shutdown complete" in backend.log(), backend.log()[-2000:]
        with sqlite3.connect(home / "suites.db") as db:
            status = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            counts = dict(db.execute("SELECT status, count(*) FROM cells GROUP BY status").fetchall())
        assert status == "interrupted" and counts.get("pending", 0) > 0 and "error" not in counts, counts

        backend.start()
        run = wait_until(lambda: (d := backend.get(f"/api/runs/{run_id}").json())["run"]["status"] == "completed" and d,
                         180, what="the resumed run to complete")
        assert (run["run"]["done"], run["run"]["errors"]) == (40, 0)
    finally:
        if backend.proc is not None and backend.proc.poll() is None:
            backend.delete(f"/api/deployments/{dep['id']}")
        backend.stop()

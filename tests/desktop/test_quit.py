"""Quitting with "keep models running" off stops only what this window launched (real backend, real engine)."""

from __future__ import annotations


import httpx
import pytest
from PySide6.QtCore import Qt

from tests.conftest import RUN_ID
from tests.support.deployments import launch_ready

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.slow]


def _api(live_backend):
    url, token = live_backend
    return url, {"Authorization": f"Bearer {token}"}


def _deployment(live_backend, dep_id: str) -> dict:
    url, h = _api(live_backend)
    r = httpx.get(f"{url}/api/deployments/{dep_id}", headers=h, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _launch_elsewhere(live_backend, served: str) -> str:
    """A deployment launched through the API, as a script or an agent would; returns its id once ready."""
    url, token = live_backend
    return launch_ready(url, token, {"recipe": "demo", "model": "demo-tiny", "served_name": served})["id"]


def _remove(live_backend, dep_id: str) -> None:
    url, h = _api(live_backend)
    httpx.delete(f"{url}/api/deployments/{dep_id}", headers=h, timeout=60)


def test_quit_leaves_a_deployment_it_did_not_launch_running_and_stops_its_own(make_main_window, qtbot,
                                                                              live_backend):
    other = _launch_elsewhere(live_backend, f"t{RUN_ID}-someone-else")
    own = None
    try:
        window = make_main_window(keep_running=False)
        qtbot.waitUntil(lambda: any(c.recipe["name"] == "demo" for c in window.models.cards), timeout=10000)
        dialog = window.models.open_launch_dialog(next(c.recipe for c in window.models.cards
                                                       if c.recipe["name"] == "demo"))
        dialog.served.setText(f"t{RUN_ID}-this-window")
        with qtbot.waitSignal(window.models.created, timeout=30000) as created:
            qtbot.mouseClick(dialog.launch_button, Qt.MouseButton.LeftButton)
        own = created.args[0]
        qtbot.waitUntil(lambda: dialog.progress.timeline.phase == "ready", timeout=120000)
        dialog.close()
        # Both are running, and the window's table shows both.
        qtbot.waitUntil(lambda: {own, other} <= {r.id for r in window.deployments.rows.rows if r.running},
                        timeout=15000)
        assert window.launched_here == {own}

        window.close()
        # Other tests' deployments may be running on the engine too: all of them are left alone.
        leaving = next(line for line in window.quit_note.splitlines() if line.startswith("Leaving "))
        assert f"t{RUN_ID}-someone-else" in leaving and f"t{RUN_ID}-this-window" not in leaving, window.quit_note
        assert "not launched from this window" in leaving
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=60000)

        assert _deployment(live_backend, own)["state"] != "running", "its own deployment is stopped"
        theirs = _deployment(live_backend, other)
        assert theirs["state"] == "running" and theirs["ready"], theirs
    finally:
        for dep_id in (own, other):
            if dep_id:
                _remove(live_backend, dep_id)

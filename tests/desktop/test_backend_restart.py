"""The desktop looks after the backend it started (restarts it when it dies) and only reports one it attached to.

Real processes throughout: the desktop spawns `python -m backend.server` itself, the test
SIGKILLs it; the attached backend is `modeldeck-backend` run by the test. Deployments live in
the real engine and are never touched by either.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import httpx
import pytest

from desktop.backend_process import BackendProcess
from desktop.client import BackendClient
from desktop.main_window import MainWindow
from desktop.settings_store import DesktopSettings, SettingsStore
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import TOKEN as EXTERNAL_TOKEN
from tests.support.backend_process import BackendProcess as ExternalBackend
from tests.support.live_server import free_port
from tests.support.deployments import launch_ready

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.slow]


def _window(qtbot, tmp_path, url: str, token: str = "") -> tuple[MainWindow, BackendProcess]:
    store = SettingsStore(tmp_path / "desktop.ini")
    settings = replace(DesktopSettings(), backend_url=url, token=token, home=str(tmp_path / "home"),
                       first_run_shown=True, keep_running=True)
    store.save(settings)
    client = BackendClient(url, token)
    backend = BackendProcess(client, settings)  # may start a backend: as the app does
    window = MainWindow(client, store, tray=False, backend=backend)
    with qtbot.waitExposed(window):
        window.show()
    return window, backend


def _close(window: MainWindow, backend: BackendProcess) -> None:
    window._quitting = True
    window.close()
    backend.stop(wait=True)
    window.deleteLater()
    window.client.deleteLater()


def test_a_backend_the_desktop_started_is_restarted_when_it_dies(qtbot, tmp_path, monkeypatch, engine,
                                                                   demo_image, demo_base_image):
    monkeypatch.setenv("MODELDECK_DEMO_BASE_IMAGE", demo_base_image)
    monkeypatch.setenv("MODELDECK_EXTRA_LABELS", f"{RUN_LABEL}={RUN_ID}")
    monkeypatch.delenv("MODELDECK_TOKEN", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    window, backend = _window(qtbot, tmp_path, url)
    dep = None
    try:
        with qtbot.waitSignal(backend.ready, timeout=60000):
            backend.start()
        assert backend.owned and backend.started_here
        token = (tmp_path / "home" / "token").read_text().strip()
        dep = launch_ready(url, token, {"recipe": "demo", "model": "demo-tiny", "served_name": f"t{RUN_ID}-survives"})
        qtbot.waitUntil(lambda: (r := window.deployments.rows.find(dep["id"])) is not None and r.status == "ready",
                        timeout=15000)

        first = backend.process.processId()
        os.kill(first, signal.SIGKILL)  # as a crash or the OOM killer would
        qtbot.waitUntil(lambda: "was killed" in window.banner.title.text(), timeout=10000)
        assert "restarting it in 1 s (attempt 1 of 5)" in window.banner.title.text(), window.banner.title.text()
        last_lines = backend.output_tail().splitlines()
        assert last_lines and last_lines[-1] in window.banner.hint.text(), "its last output lines"
        assert "HTTP Request:" not in backend.output_tail(), "no httpx request noise burying what matters"
        assert window.banner.action_button.isVisible() and window.banner.action_button.text() == "Restart backend"

        qtbot.waitUntil(lambda: backend.is_ready and backend.process is not None
                        and backend.process.processId() != first, timeout=60000)
        assert backend.owned and window.backend_ok
        assert "backend" not in window.banner.title.text().lower() or not window.banner.isVisible()
        # Docker held the deployment: the new backend finds it as it was, the window shows it.
        again = httpx.get(f"{url}/api/deployments/{dep['id']}", headers={"Authorization": f"Bearer {token}"},
                          timeout=10).json()
        assert again["ready"] and again["container_id"] == dep["container_id"], again
        qtbot.waitUntil(lambda: (r := window.deployments.rows.find(dep["id"])) is not None and r.status == "ready",
                        timeout=15000)

        # The banner's button restarts it on demand too, and the back-off starts over.
        second = backend.process.processId()
        window.restart_backend()
        qtbot.waitUntil(lambda: backend.is_ready and backend.process is not None
                        and backend.process.processId() != second, timeout=60000)
        assert backend.restarts == 0
    finally:
        if dep is not None:
            token = (tmp_path / "home" / "token").read_text().strip()
            try:  # best effort: an error here must not hide the one that failed the test
                httpx.delete(f"{url}/api/deployments/{dep['id']}", headers={"Authorization": f"Bearer {token}"},
                             timeout=60)
            except httpx.HTTPError:
                engine.remove(dep["container_id"])  # the run's label clean-up would get it too
        _close(window, backend)


def test_a_backend_the_desktop_attached_to_is_reported_never_started_twice(qtbot, tmp_path, demo_base_image):
    external = ExternalBackend(tmp_path / "external-home", demo_base_image=demo_base_image)
    external.start()
    window, backend = _window(qtbot, tmp_path, external.url, EXTERNAL_TOKEN)
    try:
        with qtbot.waitSignal(backend.ready, timeout=30000):
            backend.start()
        assert not backend.owned and not backend.started_here

        external.kill()
        qtbot.waitUntil(lambda: "does not answer" in window.banner.title.text(), timeout=10000)
        assert "did not start it" in window.banner.hint.text(), window.banner.hint.text()
        assert not window.banner.action_button.isVisible(), "no Restart button for someone else's backend"
        for _ in range(2):  # two more engine polls against nothing: still nothing started
            with qtbot.waitSignal(window.engine_changed, timeout=10000):
                pass
        assert backend.process is None and not backend.owned
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{external.url}/api/health", timeout=1)

        external.start()  # its owner starts it again: the window reconnects by itself
        qtbot.waitUntil(lambda: window.engine is not None and "does not answer" not in window.banner.title.text(),
                        timeout=15000)
        assert backend.process is None
    finally:
        _close(window, backend)
        external.stop()

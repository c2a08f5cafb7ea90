"""Desktop fixtures: a real backend on a free port (real engine) and a ready demo deployment."""

from __future__ import annotations

import gc
import os
from dataclasses import replace

import pytest
from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QApplication

from backend.app import create_app
from desktop import theme
from desktop.backend_process import BackendProcess
from desktop.client import BackendClient, SseStream
from desktop.main_window import MainWindow
from desktop.settings_store import DesktopSettings, SettingsStore
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import serve
from tests.support.deployments import launch_ready, wait_served

pytestmark = pytest.mark.gui

TOKEN = "desktop-test-token"
SHOTS = "/tmp/modeldeck-shots"  # screenshots the GUI tests save for a person to look at
os.makedirs(SHOTS, exist_ok=True)  # QPixmap.save fails silently into a missing folder


@pytest.fixture(scope="session", autouse=True)
def gui_thread_gc(qapp):
    """Python's cycle collector runs on the GUI thread only (see tests/desktop/gui_gc.py).

    Without it, a collection triggered in the in-process backend's thread can free Qt
    objects off the GUI thread and crash the test run.
    """
    from tests.desktop.gui_gc import GuiThreadGarbageCollector
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
    launch_ready(url, token, {"recipe": "demo", "model": "demo-tiny", "served_name": name,
                              "env": {"DEMO_TOKEN_DELAY": "0.02"}})
    wait_served(url, token, name)
    return name


def open_streams() -> list[SseStream]:
    return [o for o in gc.get_objects() if isinstance(o, SseStream) and _alive(o) and o.running]


def _alive(obj) -> bool:
    import shiboken6

    return shiboken6.isValid(obj)


def _flush_deletes() -> None:
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    QApplication.processEvents()


@pytest.fixture
def make_main_window(qtbot, live_backend, tmp_path):
    """Factory: a shown MainWindow attached to ``live_backend`` (or another URL/token).

    Teardown closes every window made, then checks that no top-level widget leaked and that
    every stream was closed with its window.
    """
    before = set(QApplication.topLevelWidgets())
    made: list[tuple[MainWindow, BackendClient]] = []

    def make(url: str | None = None, token: str | None = None, with_backend: bool = False,
             **settings) -> MainWindow:
        base, tok = live_backend
        # store_path: a settings file that outlives one window ("the second start"), kept as it is
        # but for the connection; otherwise a fresh one, with the first-run check already seen.
        store_path = settings.pop("store_path", None)
        store = SettingsStore(store_path or tmp_path / f"desktop-{len(made)}.ini")
        if store_path is None:
            settings.setdefault("first_run_shown", True)
        s = replace(store.load() if store_path else DesktopSettings(), backend_url=url or base,
                    token=token or tok, home=str(tmp_path / "home"), theme=settings.pop("theme", "light"),
                    **settings)
        store.save(s)
        theme.apply(s.theme)
        client = BackendClient(s.backend_url, s.token)
        backend = BackendProcess(client, s, spawn=False) if with_backend else None
        window = MainWindow(client, store, tray=False, backend=backend)
        made.append((window, client))
        with qtbot.waitExposed(window):  # mapped by the X server (a context manager: a bare call waits for nothing)
            window.show()
        if backend is not None:
            backend.start()
        else:
            window.on_backend_ready(s.backend_url, s.token)
        return window

    yield make
    for window, client in made:
        window._quitting = True  # tests that turned keep_running off do not stop the shared demo model
        window.close()
        window.deleteLater()
        client.deleteLater()
    qtbot.waitUntil(lambda: (_flush_deletes() or True) and not (set(QApplication.topLevelWidgets()) - before),
                    timeout=10000)
    leaked = set(QApplication.topLevelWidgets()) - before
    assert not leaked, f"top-level widgets leaked: {leaked}"
    assert not open_streams(), f"streams still open: {open_streams()}"

"""The desktop shell against a real backend: window, pages, shortcuts, banner, settings, start-up, no leaks."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QPushButton

from backend.app import create_app
from backend.settings import Settings
from desktop import theme
from desktop.backend_process import BackendProcess
from desktop.client import BackendClient
from desktop.main_window import PAGES
from desktop.settings_store import DesktopSettings, is_local
from desktop.tray import Tray, gpu_summary
from tests.conftest import RUN_ID
from tests.desktop.conftest import SHOTS
from tests.support.live_server import free_port, serve

# The offscreen platform warns when a shown window's size limits change; harmless there, so not a failure.
pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]




def test_window_has_pages_with_icons_and_shortcuts(make_main_window, qtbot):
    window = make_main_window()
    assert [window.nav.item(i).text() for i in range(window.nav.count())] == [label for _, label in PAGES]
    assert all(not window.nav.item(i).icon().isNull() for i in range(window.nav.count()))
    keys = {s.key().toString() for s in window._shortcuts}
    assert {f"Ctrl+{i + 1}" for i in range(len(PAGES))} | {"Ctrl+L", "Ctrl+Q", "F5"} <= keys
    assert [key for key, _ in PAGES][:3] == ["models", "discover", "library"] and PAGES[-1][0] == "settings"
    for i in range(len(PAGES)):
        window.show_page(i)
        assert window.stack.currentIndex() == i
    qtbot.waitUntil(lambda: len(window.models.cards) >= 1, timeout=10000)
    assert "demo" in [c.recipe["name"] for c in window.models.cards]
    with qtbot.waitActive(window):  # keys go to the active window; on X that takes a round trip
        window.activateWindow()
    for page in (window.discover, window.library, window.deployments):  # Ctrl+<its place in the navigation>
        key = Qt.Key(Qt.Key.Key_1.value + window.pages.index(page))
        qtbot.keyClick(window, key, Qt.KeyboardModifier.ControlModifier)
        assert window.stack.currentWidget() is page
    qtbot.keyClick(window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert window.stack.currentWidget() is window.models and window.models._dialogs
    assert window.models._dialogs[-1].recipe["name"] == window.models.recipes[0]["name"]


def test_healthy_engine_hides_error_banner_and_status_bar_says_docker(make_main_window, qtbot):
    window = make_main_window()
    qtbot.waitUntil(lambda: window.engine is not None, timeout=10000)
    assert window.engine["reachable"]
    assert window.banner.level != "error" or window.banner.isHidden()
    assert window.engine_label.text().startswith("Engine: Docker")
    if not window.engine["gpu_available"]:  # no GPU here: the quieter info banner says so
        assert window.banner.isVisible() and window.banner.level == "info"
        assert "No GPU" in window.banner.title.text()


@pytest.fixture
def dead_engine_backend(tmp_path, demo_base_image):
    """A second backend whose Docker host does not exist."""
    settings = Settings(home=tmp_path / "dead-home", token="dead-token", docker_host="unix:///nonexistent.sock",
                        demo_base_image=demo_base_image)
    with serve(create_app(settings)) as url:
        yield url, "dead-token"


def test_unreachable_engine_shows_banner_and_app_keeps_working(make_main_window, dead_engine_backend, qtbot):
    url, token = dead_engine_backend
    window = make_main_window(url, token)
    qtbot.waitUntil(lambda: window.banner.isVisible() and window.banner.level == "error", timeout=15000)
    assert "Docker is not reachable" in window.banner.title.text()
    assert window.banner.hint.text()
    assert window.engine_label.text() == "Engine: not reachable"
    qtbot.waitUntil(lambda: len(window.models.cards) >= 1, timeout=10000)  # the rest still works
    window.show_page(0)
    QApplication.processEvents()
    window.grab().save(f"{SHOTS}/banner-engine-down.png")
    # when the engine answers again, the next poll takes the banner away on its own
    window._on_engine_loaded({"reachable": True, "version": "27", "gpu_runtime": True, "gpu_available": True,
                              "gpus": [{"index": 0, "name": "H100", "memory_total_bytes": 1, "memory_free_bytes": 1}]})
    assert window.banner.isHidden() and window.engine_label.text() == "Engine: Docker 27 · 1 GPU"


def test_settings_page_theme_and_masked_token(make_main_window, qtbot):
    window = make_main_window()
    page = window.settings_page
    window.show_page(window.pages.index(page))
    assert page.token.echoMode() == page.token.EchoMode.Password
    page.reveal.setChecked(True)
    assert page.token.echoMode() == page.token.EchoMode.Normal
    qtbot.waitUntil(lambda: "unix://" in page.engine_endpoint.text(), timeout=10000)
    with qtbot.waitSignal(theme.notifier().changed, timeout=2000):
        page.theme.setCurrentIndex(page.theme.findData("dark"))
    assert theme.notifier().scheme == "dark"
    assert window.store.load().theme == "dark"
    page.keep_running.setChecked(False)
    assert window.store.load().keep_running is False
    page.caches["huggingface"].setText("/tmp/hf-cache")
    page.caches["huggingface"].editingFinished.emit()
    assert page.store.load().backend_env()["MODELDECK_CACHE_DIR_HUGGINGFACE"] == "/tmp/hf-cache"
    theme.apply("light")


def test_settings_apply_reconnects_through_the_backend_process(make_main_window, qtbot, live_backend):
    window = make_main_window(with_backend=True)
    qtbot.waitUntil(lambda: window.backend_ok, timeout=10000)
    page = window.settings_page
    window.show_page(window.pages.index(page))
    with qtbot.waitSignal(window.backend.ready, timeout=10000) as ready:
        qtbot.mouseClick(page.findChild(QPushButton, "applyButton"), Qt.MouseButton.LeftButton)
    assert ready.args == list(live_backend)
    assert window.backend_ok and not window.backend.owned


def test_window_remembers_size_and_page(make_main_window, qtbot):
    window = make_main_window()
    window.resize(900, 640)
    window.show_page(3)
    window.close()
    geometry, page = window.store.window_state()
    assert page == 3 and geometry is not None


def test_quit_stops_the_running_models_it_launched_when_told_not_to_keep_them(make_main_window, qtbot):
    window = make_main_window(keep_running=False)
    qtbot.waitUntil(lambda: window.deployments.loaded, timeout=10000)
    ghost = {"id": f"ghost-{RUN_ID}", "served_name": "ghost", "state": "running", "status": "ready"}
    theirs = {"id": f"theirs-{RUN_ID}", "served_name": "theirs", "state": "running", "status": "ready"}
    # Running models the backend does not know (a stop fails fast); only the first was launched here.
    window.deployments.rows.set_deployments([ghost, theirs])
    window.models.created.emit(ghost["id"])
    stopped: list[str] = []
    window._calls.client.post = _spy(window._calls.client.post, stopped)
    window.close()
    assert window.isVisible() and "Stopping 1 running model this window launched" in window.banner.title.text()
    assert "Leaving theirs running" in window.banner.hint.text(), window.banner.hint.text()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=15000)
    assert stopped == [f"/api/deployments/ghost-{RUN_ID}/stop"]


def _spy(post, calls: list[str]):
    def spy(path, *args, **kwargs):
        calls.append(path)
        return post(path, *args, **kwargs)
    return spy


def test_screenshots_of_each_page(make_main_window, qtbot, demo_model):
    import os

    os.makedirs(SHOTS, exist_ok=True)
    for scheme in ("light", "dark"):
        window = make_main_window(theme=scheme)
        window.resize(1280, 800)
        qtbot.waitUntil(lambda: len(window.models.cards) >= 1 and window.deployments.loaded, timeout=15000)
        qtbot.waitUntil(lambda: window.engine is not None, timeout=10000)
        for i, (key, _label) in enumerate(PAGES):
            window.show_page(i)
            QApplication.processEvents()  # let the page lay itself out before grabbing
            assert window.grab().save(f"{SHOTS}/{scheme}-{i + 1}-{key}.png")
        window.close()
    theme.apply("light")


def test_backend_process_attaches_to_running_backend(qtbot, live_backend):
    url, token = live_backend
    client = BackendClient(url, token)
    proc = BackendProcess(client, DesktopSettings(backend_url=url, token=token), spawn=False)
    with qtbot.waitSignal(proc.ready, timeout=10000) as ready:
        proc.start()
    assert ready.args == [url, token]
    assert not proc.owned
    proc.stop()
    client.deleteLater()


def test_backend_process_reports_when_nothing_answers_and_spawn_is_off(qtbot):
    url = f"http://127.0.0.1:{free_port()}"
    client = BackendClient(url, "")
    proc = BackendProcess(client, DesktopSettings(backend_url=url), spawn=False)
    with qtbot.waitSignal(proc.failed, timeout=10000) as failed:
        proc.start()
    assert "No ModelDeck backend answers" in failed.args[0] and "--no-spawn" in failed.args[0]
    client.deleteLater()


@pytest.mark.slow
def test_backend_process_spawns_and_stops_a_backend(qtbot, tmp_path, demo_base_image, monkeypatch):
    monkeypatch.setenv("MODELDECK_DEMO_BASE_IMAGE", demo_base_image)
    url = f"http://127.0.0.1:{free_port()}"
    client = BackendClient(url, "")
    settings = DesktopSettings(backend_url=url, home=str(tmp_path / "spawned-home"))
    proc = BackendProcess(client, settings)
    statuses: list[str] = []
    proc.status.connect(statuses.append)
    with qtbot.waitSignal(proc.ready, timeout=60000) as ready:
        proc.start()
    assert proc.owned and "Starting the ModelDeck backend…" in statuses
    assert ready.args[1] and ready.args[1] == (tmp_path / "spawned-home" / "token").read_text().strip()
    process = proc.process
    proc.stop()
    assert process is not None and process.state() == process.ProcessState.NotRunning
    client.deleteLater()


def test_settings_helpers_and_tray_summary():
    assert is_local("http://127.0.0.1:8765") and is_local("http://localhost:9") and not is_local("http://10.0.0.2:1")
    s = DesktopSettings(home="/tmp/x", docker_host="ssh://gpu", cache_dirs={"ollama": "/data/ollama"})
    assert s.backend_env() == {"MODELDECK_HOME": "/tmp/x", "MODELDECK_DOCKER_HOST": "ssh://gpu",
                               "MODELDECK_CACHE_DIR_OLLAMA": "/data/ollama"}
    engine = {"reachable": True, "gpus": [{"index": 0, "name": "H100", "memory_total_bytes": 80 * 2**30,
                                           "memory_free_bytes": 60 * 2**30}]}
    assert gpu_summary(engine) == "GPU 0 H100: 20.0 GiB of 80.0 GiB used"
    assert gpu_summary({"reachable": False, "reason": "no socket"}) == "Docker: no socket"


def test_tray_without_system_tray_is_harmless(qtbot):
    tray = Tray()
    assert tray.available is False or sys.platform != "linux"
    tray.update_engine({"reachable": True, "gpus": []})
    tray.update_deployments([{"id": "a", "state": "running", "served_name": "a"}])
    assert "No GPU" in tray.tooltip
    tray.shutdown()
    tray.deleteLater()

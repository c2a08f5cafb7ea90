"""The first-run check dialog and the Help menu, against a real backend and the real engine."""

from __future__ import annotations

import os
import stat

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLineEdit

from desktop.pages.first_run import FirstRunDialog
from desktop.settings_store import SettingsStore
from tests.conftest import RUN_ID
from tests.desktop.conftest import SHOTS

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]
HF_VALUE = f"hf_{RUN_ID}DesktopSecret"


@pytest.fixture
def no_hf_token(live_backend, monkeypatch):
    """No HF_TOKEN in the (in-process) backend's environment nor its store, before and after."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    url, token = live_backend
    forget = lambda: httpx.delete(f"{url}/api/setup/hf-token",  # noqa: E731
                                  headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert forget().status_code == 204
    yield
    forget()


def _menu_actions(window) -> list[str]:
    menus = [a.menu() for a in window.menuBar().actions() if a.menu() is not None]
    return [a.text() for m in menus for a in m.actions() if a.text()]


def test_dialog_lists_checks_with_fixes(make_main_window, qtbot, no_hf_token):
    window = make_main_window()
    dialog = window.show_first_run()
    qtbot.waitUntil(lambda: bool(dialog.checks), timeout=20000)
    assert dialog.level("engine") == "pass"
    if window.engine is None or not (window.engine.get("gpu_runtime") and window.engine.get("gpu_available")):
        assert dialog.level("gpu") in ("warn", "fail")
        gpu = dialog.rows["gpu"]
        assert gpu.fix is not None and "nvidia-ctk" in gpu.fix.text()
        assert gpu.fix.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
        gpu.copy.click()
        assert QApplication.clipboard().text() == gpu.check["fix"]
    assert dialog.level("hf_token") == "warn"
    assert set(dialog.rows) == {c["id"] for c in dialog.checks}
    assert dialog.rows["engine"].fix is None  # a passing check shows no fix
    assert dialog.state.text().endswith(f"of {len(dialog.checks)} checks passed.")
    os.makedirs(SHOTS, exist_ok=True)
    dialog.grab().save("/tmp/first-run.png")
    dialog.grab().save(f"{SHOTS}/first-run.png")


def test_entering_a_token_stores_it_owner_only(make_main_window, qtbot, no_hf_token, tmp_path_factory):
    window = make_main_window()
    dialog = window.show_first_run()
    qtbot.waitUntil(lambda: dialog.level("hf_token") == "warn", timeout=20000)
    assert dialog.token_edit.echoMode() == QLineEdit.EchoMode.Password
    assert not dialog.remove_token_button.isEnabled()
    dialog.token_edit.setText(HF_VALUE)
    with qtbot.waitSignal(dialog.token_saved, timeout=10000):
        dialog.save_token_button.click()
    qtbot.waitUntil(lambda: dialog.level("hf_token") == "pass", timeout=20000)
    assert dialog.token_edit.text() == ""
    assert dialog.remove_token_button.isEnabled()

    # in the live backend's home, readable by the owner only
    stored = list(tmp_path_factory.getbasetemp().glob("backend-home[0-9]*/secrets/HF_TOKEN"))
    assert len(stored) == 1, stored
    assert stored[0].read_text().strip() == HF_VALUE
    if os.name != "nt":
        assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600
    assert all(HF_VALUE not in str(c) for c in dialog.checks)

    with qtbot.waitSignal(dialog.token_saved, timeout=10000):
        dialog.remove_token_button.click()
    qtbot.waitUntil(lambda: dialog.level("hf_token") == "warn", timeout=20000)
    assert not stored[0].exists()


def test_first_start_shows_the_check_once(make_main_window, qtbot, tmp_path):
    ini = tmp_path / "first-start.ini"
    first = make_main_window(store_path=ini, first_run_shown=False)
    qtbot.waitUntil(lambda: first.first_run is not None and first.first_run.isVisible(), timeout=10000)
    assert SettingsStore(ini).load().first_run_shown is True
    first.close()

    second = make_main_window(store_path=ini)
    qtbot.waitUntil(lambda: second.engine is not None, timeout=10000)  # the backend answered
    assert second.first_run is None


def test_help_menu_has_check_docs_and_about(make_main_window, qtbot):
    window = make_main_window()
    assert _menu_actions(window) == ["First-run check…", "API docs", "Connect an agent…", "About ModelDeck"]
    url = window.api_docs_url()
    assert url.toString().startswith(window.client.base_url + "/docs?token=")
    assert url.query() == f"token={window.client.token}"
    # the page it opens answers (the token in the address is accepted)
    assert httpx.get(url.toString(), timeout=10).status_code == 200
    assert isinstance(window.show_first_run(), FirstRunDialog)

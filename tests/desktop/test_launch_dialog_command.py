"""The launch dialog's Advanced section shows the launch as a `docker run` command, kept up to date, copyable."""

from __future__ import annotations

import httpx
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from tests.conftest import RUN_ID
from tests.desktop.conftest import SHOTS

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]


def _open_launch_dialog(window, qtbot, recipe: str):
    """Click Launch on ``recipe``'s card as a person would; (the dialog, shown; the card)."""
    qtbot.waitUntil(lambda: any(c.recipe["name"] == recipe for c in window.models.cards), timeout=10000)
    card = next(c for c in window.models.cards if c.recipe["name"] == recipe)
    qtbot.mouseClick(card.launch_button, Qt.MouseButton.LeftButton)
    dialog = window.models._dialogs[-1]
    with qtbot.waitExposed(dialog):
        pass
    return dialog, card


def test_advanced_shows_the_docker_run_command_as_fields_change(make_main_window, qtbot, live_backend):
    dialog, _card = _open_launch_dialog(make_main_window(), qtbot, "demo")
    name = f"t{RUN_ID}-cmd"
    dialog.served.setText(name)
    assert dialog.command.toPlainText() == "", "nothing is asked for while Advanced is closed"

    dialog.advanced_toggle.setChecked(True)
    qtbot.waitUntil(lambda: f"--name modeldeck-{name}" in dialog.command.toPlainText(), timeout=10000)
    text = dialog.command.toPlainText()
    assert text.startswith("docker run -d \\\n") and "--init \\\n" in text and "demo-tiny" in text

    # Every field reaches the command: extra arguments, environment (secrets by name only), port.
    dialog.args.setPlainText("--token-delay\n0.01")
    dialog.env.setPlainText("HF_TOKEN=hf_dialogSecret\nPLAIN_SETTING=on")
    dialog.port_auto.setChecked(False)
    dialog.port.setText("40555")
    qtbot.waitUntil(lambda: "127.0.0.1:40555:8000" in dialog.command.toPlainText(), timeout=10000)
    text = dialog.command.toPlainText()
    assert text.rstrip().endswith("--token-delay 0.01") and "-e PLAIN_SETTING=on \\\n" in text, text
    assert "-e HF_TOKEN \\\n" in text and "hf_dialogSecret" not in text
    # It is exactly what the backend plans for the same form.
    body, _ = dialog.request_body()
    url, token = live_backend
    planned = httpx.post(f"{url}/api/deployments/plan", json=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}"}).json()
    assert text == planned["docker_run"]
    dialog.grab().save(f"{SHOTS}/launch-dialog-command.png")

    qtbot.mouseClick(dialog.copy_button, Qt.MouseButton.LeftButton)
    assert QApplication.clipboard().text() == text
    assert dialog.command_note.text() == "Copied to the clipboard."

    # A form the backend would refuse shows why instead of a command.
    dialog.model.setText("bad model")
    qtbot.waitUntil(lambda: dialog.command.toPlainText() == "", timeout=10000)
    assert "No spaces" in dialog.command_note.text() and not dialog.copy_button.isEnabled()
    dialog.model.setText("demo-tiny")
    dialog.served.setText(f"{name}-b")
    qtbot.waitUntil(lambda: f"--name modeldeck-{name}-b" in dialog.command.toPlainText(), timeout=10000)
    dialog.close()


def test_the_dialog_fits_the_screen_and_names_what_the_backend_will_serve(make_main_window, qtbot):
    """With Advanced open the form can be taller than a laptop's screen: it scrolls, rows never overlap."""
    dialog, card = _open_launch_dialog(make_main_window(), qtbot, "llama-cpp")
    assert dialog.served.placeholderText() == card.recipe["default_served_name"]
    # The screen has room: the whole form shows, nothing hidden below a scroll bar.
    qtbot.waitUntil(lambda: dialog.pages.currentWidget().verticalScrollBar().maximum() == 0)
    dialog.model.setText("/models/tiny-llama.gguf")  # a local file: served as its stem
    assert dialog.served.placeholderText() == "tiny-llama"
    dialog.model.setText("org/Some-GGUF:Q4_K_M")
    assert dialog.served.placeholderText() == "org/Some-GGUF:Q4_K_M"

    dialog.advanced_toggle.setChecked(True)
    qtbot.waitUntil(lambda: dialog.command.toPlainText() != "" or dialog.command_note.text() != "", timeout=10000)
    screen = dialog.screen().availableGeometry()
    form = dialog.pages.currentWidget()
    # However tall the form gets, the dialog asks for no more than the screen has: past that it scrolls.
    assert form._bounded(10**6) == int(screen.height() * 0.62)
    assert dialog.minimumSizeHint().height() <= screen.height() and dialog.sizeHint().height() <= screen.height()
    # Below that bound the dialog grows with the form (Advanced opened), as it did without scrolling.
    qtbot.waitUntil(lambda: form.verticalScrollBar().maximum() == 0 or form.height() >= form.sizeHint().height())
    rows = [dialog.model, dialog.served, dialog.gpu, dialog.args, dialog.env, dialog.command]
    for upper, lower in zip(rows, rows[1:]):  # no two rows drawn over each other
        assert upper.mapTo(form.widget(), upper.rect().bottomLeft()).y() < lower.mapTo(form.widget(), lower.rect().topLeft()).y()
    note_top = dialog.command_note.mapTo(form.widget(), dialog.command_note.rect().topLeft()).y()
    assert dialog.command.mapTo(form.widget(), dialog.command.rect().bottomLeft()).y() < note_top
    dialog.close()

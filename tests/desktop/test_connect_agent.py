"""The "Connect an agent" dialog in the real main window, against the real backend: token hidden, copies exact."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from PySide6.QtWidgets import QApplication

from desktop import theme
from desktop.agent_config import MASK
from desktop.pages.connect_agent import ConnectAgentDialog
from tests.desktop.conftest import SHOTS, TOKEN

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.qt_log_ignore("propagateSizeHints")]


def _help_action(window, text: str):
    menus = [a.menu() for a in window.menuBar().actions() if a.menu() is not None]
    actions = [a for m in menus for a in m.actions() if a.text() == text]
    assert len(actions) == 1, [a.text() for m in menus for a in m.actions()]
    return actions[0]


def _open_from_help(window, qtbot) -> ConnectAgentDialog:
    _help_action(window, "Connect an agent…").trigger()
    dialog = window.connect_agent
    assert isinstance(dialog, ConnectAgentDialog)
    qtbot.waitExposed(dialog)
    return dialog


def test_opens_from_the_help_menu_with_the_token_hidden_until_revealed(make_main_window, qtbot):
    window = make_main_window()  # its token is typed into Settings: not the one in its home folder
    dialog = _open_from_help(window, qtbot)
    assert dialog.isVisible() and dialog.parent() is window
    assert not dialog.reveal.isChecked()
    with_token = [s for s in dialog.snippets.values() if TOKEN in s.text]
    assert {s.key for s in with_token} == {"mcp_stdio_json", "claude_code_stdio", "mcp_http_json",
                                            "claude_code_http", "openai_env", "anthropic_env", "claude_code_env"}
    for snippet in dialog.snippets.values():
        assert TOKEN not in snippet.shown(), snippet.key
    assert all(MASK in s.shown() for s in with_token)
    dialog.reveal.click()
    assert all(TOKEN in s.shown() and MASK not in s.shown() for s in with_token)
    assert all(s.shown() == s.text for s in dialog.snippets.values())
    dialog.reveal.click()
    assert all(TOKEN not in s.shown() for s in dialog.snippets.values())
    # everything is selectable: read-only boxes, not disabled ones
    assert all(s.view.isReadOnly() and s.view.isEnabled() for s in dialog.snippets.values())
    # a second Help → Connect an agent brings the same dialog back
    _help_action(window, "Connect an agent…").trigger()
    assert window.connect_agent is dialog


def test_copy_while_hidden_puts_the_exact_json_with_the_token(make_main_window, qtbot):
    window = make_main_window()
    dialog = _open_from_help(window, qtbot)
    snippet = dialog.snippets["mcp_http_json"]
    assert TOKEN not in snippet.shown()
    with qtbot.waitSignal(dialog.copied, timeout=2000) as copied:
        snippet.copy.click()
    assert copied.args == ["mcp_http_json"]
    text = QApplication.clipboard().text()
    assert text == snippet.text
    server = json.loads(text)["mcpServers"]["modeldeck"]
    assert server == {"url": f"{window.client.base_url}/mcp", "headers": {"Authorization": f"Bearer {TOKEN}"}}
    assert "contains your token" in dialog.state.text()

    dialog.snippets["openai_base_url"].copy.click()
    assert QApplication.clipboard().text() == f"{window.client.base_url}/v1"
    assert "contains your token" not in dialog.state.text()


def test_stdio_config_names_an_existing_modeldeck_mcp_and_this_backend(make_main_window, qtbot, tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "token").write_text(TOKEN + "\n")  # the window's home folder holds its token
    window = make_main_window()
    dialog = _open_from_help(window, qtbot)
    dialog.snippets["mcp_stdio_json"].copy.click()
    text = QApplication.clipboard().text()
    assert TOKEN not in text  # modeldeck-mcp reads the token from the home folder: nothing secret here
    assert "contains your token" not in dialog.state.text()
    server = json.loads(text)["mcpServers"]["modeldeck"]
    command = Path(server["command"])
    assert command.is_absolute() and command.is_file(), server["command"]
    assert command.parent == Path(sys.executable).parent  # the one of this install
    assert os.access(command, os.X_OK)
    assert server["args"] == []
    # the window's home (tmp_path/home) and the live backend's port are not the defaults: both are passed on
    assert server["env"] == {"MODELDECK_HOME": str(tmp_path / "home"),
                             "MODELDECK_PORT": str(urlsplit(window.client.base_url).port)}
    assert not dialog.command_note.isVisible()


def test_settings_button_opens_the_same_dialog(make_main_window, qtbot):
    window = make_main_window()
    window.show_page(4)
    window.settings_page.connect_agent_button.click()
    dialog = window.connect_agent
    assert isinstance(dialog, ConnectAgentDialog)
    qtbot.waitUntil(dialog.isVisible, timeout=2000)
    _help_action(window, "Connect an agent…").trigger()
    assert window.connect_agent is dialog


def test_copied_settings_reach_the_deployed_model(make_main_window, qtbot, demo_model):
    """What the dialog gives works: the OpenAI SDK with its base URL and key lists the model, and the Claude
    Code lines name a model the backend serves."""
    window = make_main_window()
    dialog = _open_from_help(window, qtbot)
    qtbot.waitUntil(lambda: dialog.config.model != "", timeout=10000)
    client = openai.OpenAI(base_url=dialog.config.openai_base_url, api_key=dialog.config.token)
    served = {m.id for m in client.models.list().data}
    assert demo_model in served
    assert dialog.config.model in served
    assert f"ANTHROPIC_MODEL={dialog.config.model}" in dialog.snippets["claude_code_env"].text
    # the token really is the key: without it the same base URL answers 401
    assert httpx.get(f"{dialog.config.openai_base_url}/models", timeout=10).status_code == 401
    for theme_name in ("light", "dark"):
        theme.apply(theme_name)
        dialog.grab().save(f"{SHOTS}/connect-agent-{theme_name}.png")
    theme.apply("light")

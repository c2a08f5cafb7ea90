"""The "Connect an agent" dialog in the real main window, against the real backend: token hidden, copies exact."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx
import httpx2
import openai
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
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


def test_copied_mcp_configs_connect_the_sdks_client_over_stdio_and_http(make_main_window, qtbot):
    """The two MCP blocks, used exactly as copied (command, args and env; URL and headers), reach this
    backend through the official SDK's client, as Claude Desktop and Cursor would."""
    window = make_main_window()
    dialog = _open_from_help(window, qtbot)
    stdio = json.loads(dialog.snippets["mcp_stdio_json"].text)["mcpServers"]["modeldeck"]
    http = json.loads(dialog.snippets["mcp_http_json"].text)["mcpServers"]["modeldeck"]

    async def tool_names() -> tuple[set[str], set[str]]:
        params = StdioServerParameters(command=stdio["command"], args=stdio["args"], env=stdio.get("env"))
        async with Client(params, mode="legacy") as client:
            over_stdio = {t.name for t in (await client.list_tools()).tools}
        async with httpx2.AsyncClient(headers=http["headers"], timeout=httpx2.Timeout(30, read=None)) as session:
            async with Client(streamable_http_client(http["url"], http_client=session), mode="legacy") as client:
                over_http = {t.name for t in (await client.list_tools()).tools}
        return over_stdio, over_http

    over_stdio, over_http = asyncio.run(asyncio.wait_for(tool_names(), 60))
    assert "listDeployments" in over_stdio and "launchDeployment" in over_stdio
    assert over_http == over_stdio


def test_settings_button_opens_the_same_dialog(make_main_window, qtbot):
    window = make_main_window()
    window.show_page(window.pages.index(window.settings_page))
    window.settings_page.connect_agent_button.click()
    dialog = window.connect_agent
    assert isinstance(dialog, ConnectAgentDialog)
    qtbot.waitUntil(dialog.isVisible, timeout=2000)
    _help_action(window, "Connect an agent…").trigger()
    assert window.connect_agent is dialog


def _exports(text: str) -> dict[str, str]:
    """The variables the ``export`` lines set, as a POSIX shell would."""
    words = [shlex.split(line, comments=True) for line in text.splitlines()]
    return dict(w[1].split("=", 1) for w in words if w and w[0] == "export")


@pytest.mark.skipif(os.name == "nt", reason="the POSIX export lines")
def test_copied_settings_reach_the_deployed_model(make_main_window, qtbot, demo_model):
    """What the dialog gives works with the official SDKs: the OpenAI lines list and ask the model, the
    Anthropic SDK lines (x-api-key) and Claude Code's (bearer) get a Messages reply from it."""
    window = make_main_window()
    dialog = _open_from_help(window, qtbot)
    qtbot.waitUntil(lambda: dialog.config.model != "", timeout=10000)
    claude_code = _exports(dialog.snippets["claude_code_env"].text)
    assert claude_code["ANTHROPIC_MODEL"] == dialog.config.model  # a model served when the dialog asked

    env = _exports(dialog.snippets["openai_env"].text)
    client = openai.OpenAI(base_url=env["OPENAI_BASE_URL"], api_key=env["OPENAI_API_KEY"])
    assert demo_model in {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(model=demo_model, max_tokens=4,
                                           messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    # the token really is the key: without it the same base URL answers 401
    assert httpx.get(f"{env['OPENAI_BASE_URL']}/models", timeout=10).status_code == 401

    env = _exports(dialog.snippets["anthropic_env"].text)
    sdk = anthropic.Anthropic(base_url=env["ANTHROPIC_BASE_URL"], api_key=env["ANTHROPIC_API_KEY"])
    message = sdk.messages.create(model=demo_model, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text
    bearer = anthropic.Anthropic(base_url=claude_code["ANTHROPIC_BASE_URL"],
                                 auth_token=claude_code["ANTHROPIC_AUTH_TOKEN"], api_key=None)
    message = bearer.messages.create(model=demo_model, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text

    for scheme in ("light", "dark"):
        theme.apply(scheme)
        dialog.grab().save(f"{SHOTS}/connect-agent-{scheme}.png")
    theme.apply("light")

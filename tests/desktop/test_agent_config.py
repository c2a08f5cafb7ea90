"""desktop/agent_config.py: the texts "Connect an agent" shows, checked by parsing them as their readers do."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from desktop.agent_config import (MASK, AgentConfig, find_mcp_command, masked, stdio_env)

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the POSIX shell forms (Windows gets PowerShell lines)")

URL = "http://127.0.0.1:8765"
TOKEN = "tok-ABC_123-xyz"


def _exports(text: str) -> dict[str, str]:
    """What a POSIX shell would set from ``export`` lines (comments ignored)."""
    env = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "export" and len(words) == 2, line
        key, _, value = words[1].partition("=")
        env[key] = value
    return env


def test_finds_the_console_script_next_to_the_interpreter(tmp_path):
    (tmp_path / "python").touch()
    (tmp_path / "modeldeck-mcp").touch()
    found = find_mcp_command(str(tmp_path / "python"), which=lambda _name: "/elsewhere/modeldeck-mcp")
    assert found == str(tmp_path / "modeldeck-mcp")
    assert Path(found).is_absolute()


def test_falls_back_to_path_then_to_the_bare_name(tmp_path):
    python = str(tmp_path / "python")
    assert find_mcp_command(python, which=lambda name: f"/usr/local/bin/{name}") == "/usr/local/bin/modeldeck-mcp"
    assert find_mcp_command(python, which=lambda _name: None) == "modeldeck-mcp"


def test_stdio_env_says_only_what_differs_from_the_defaults(tmp_path):
    default = tmp_path / "default-home"
    assert stdio_env(URL, "", default) == {}
    assert stdio_env(URL, str(default), default) == {}
    assert stdio_env(URL, str(tmp_path / "other"), default) == {"MODELDECK_HOME": str(tmp_path / "other")}
    assert stdio_env("http://127.0.0.1:9001", "", default) == {"MODELDECK_PORT": "9001"}
    assert stdio_env("http://localhost:8765", "", default) == {"MODELDECK_HOST": "localhost"}
    assert stdio_env("http://[::1]:8765", "", default) == {"MODELDECK_HOST": "::1"}
    # the token is passed on only when it is not the one modeldeck-mcp finds in the home folder
    assert stdio_env(URL, "", default, token=TOKEN, home_token=TOKEN) == {}
    assert stdio_env(URL, "", default, token=TOKEN, home_token="") == {"MODELDECK_TOKEN": TOKEN}
    assert stdio_env(URL, "", default, token="", home_token="") == {}


def test_stdio_json_is_the_mcp_servers_block_without_the_token():
    plain = json.loads(AgentConfig(URL, TOKEN, "/venv/bin/modeldeck-mcp").mcp_stdio_json())
    assert plain == {"mcpServers": {"modeldeck": {"command": "/venv/bin/modeldeck-mcp", "args": []}}}
    env = {"MODELDECK_HOME": "/data/deck", "MODELDECK_PORT": "9001"}
    text = AgentConfig(URL, TOKEN, "/venv/bin/modeldeck-mcp", env).mcp_stdio_json()
    assert json.loads(text)["mcpServers"]["modeldeck"]["env"] == env
    assert TOKEN not in text


def test_claude_code_stdio_command_names_the_server_before_env_and_the_program_after_the_dashes():
    # --env takes several values: before the name it would swallow it (anthropics/claude-code#62332)
    config = AgentConfig(URL, TOKEN, "/my apps/bin/modeldeck-mcp", {"MODELDECK_HOME": "/home/me/deck dir"})
    words = shlex.split(config.claude_code_stdio_command())
    assert words == ["claude", "mcp", "add", "--transport", "stdio", "modeldeck", "--env",
                     "MODELDECK_HOME=/home/me/deck dir", "--", "/my apps/bin/modeldeck-mcp"]
    assert shlex.split(AgentConfig(URL, TOKEN, "/b/modeldeck-mcp").claude_code_stdio_command()) == [
        "claude", "mcp", "add", "--transport", "stdio", "modeldeck", "--", "/b/modeldeck-mcp"]


def test_http_json_is_cursors_url_and_headers_shape():
    server = json.loads(AgentConfig(URL + "/", TOKEN).mcp_http_json())["mcpServers"]["modeldeck"]
    assert server == {"url": f"{URL}/mcp", "headers": {"Authorization": f"Bearer {TOKEN}"}}


def test_claude_code_http_command_sends_the_token_as_a_bearer_header():
    words = shlex.split(AgentConfig(URL, TOKEN).claude_code_http_command())
    assert words == ["claude", "mcp", "add", "--transport", "http", "modeldeck", f"{URL}/mcp",
                     "--header", f"Authorization: Bearer {TOKEN}"]


def test_openai_lines():
    config = AgentConfig(URL, TOKEN)
    assert config.openai_base_url == f"{URL}/v1"
    assert _exports(config.openai_env()) == {"OPENAI_BASE_URL": f"{URL}/v1", "OPENAI_API_KEY": TOKEN}


def test_anthropic_lines_for_the_sdks_and_for_claude_code():
    config = AgentConfig(URL, TOKEN)
    assert config.anthropic_base_url == URL  # the SDKs append /v1/messages
    assert _exports(config.anthropic_env()) == {"ANTHROPIC_BASE_URL": URL, "ANTHROPIC_API_KEY": TOKEN}
    without_model = config.claude_code_env()
    assert _exports(without_model) == {"ANTHROPIC_BASE_URL": URL, "ANTHROPIC_AUTH_TOKEN": TOKEN}
    assert "deploy one first" in without_model
    with_model = AgentConfig(URL, TOKEN, model="qwen-small").claude_code_env()
    assert _exports(with_model) == {"ANTHROPIC_BASE_URL": URL, "ANTHROPIC_AUTH_TOKEN": TOKEN,
                                    "ANTHROPIC_MODEL": "qwen-small", "ANTHROPIC_DEFAULT_HAIKU_MODEL": "qwen-small"}


def test_masked_hides_every_occurrence_of_the_token_and_nothing_else():
    text = AgentConfig(URL, TOKEN).openai_env() + "\n" + AgentConfig(URL, TOKEN).claude_code_http_command()
    hidden = masked(text, TOKEN)
    assert TOKEN not in hidden
    assert hidden.count(MASK) == 2
    assert hidden.replace(MASK, TOKEN) == text
    assert masked(text, "") == text

"""What an agent needs to reach ModelDeck: MCP client configs, Claude Code commands and OpenAI/Anthropic env lines.

Plain Python (no Qt), so the "Connect an agent" dialog only shows these strings and tests
check them without a window. The shapes follow each client's documentation:

- Claude Desktop (``claude_desktop_config.json``), Cursor (``.cursor/mcp.json``) and Claude
  Code (``.mcp.json``) read ``{"mcpServers": {name: {"command", "args", "env"}}}`` for a stdio
  server. Claude Desktop's file takes stdio servers only.
- A Streamable HTTP server is ``{"url": ..., "headers": {...}}`` in Cursor's file; Claude Code
  takes ``claude mcp add --transport http <name> <url> --header "Authorization: Bearer ..."``.
  ``--env`` and ``--header`` take several values, so they come after the name (placed before
  it, ``--env`` swallows the name: anthropics/claude-code#23365, #62332), and ``--`` ends them
  before a stdio server's command.
- OpenAI clients read ``OPENAI_BASE_URL`` (ending in ``/v1``) and ``OPENAI_API_KEY``.
- Anthropic SDKs read ``ANTHROPIC_BASE_URL`` (no ``/v1``: they append ``/v1/messages``) and
  ``ANTHROPIC_API_KEY`` (sent as ``x-api-key``). Claude Code sends ``ANTHROPIC_AUTH_TOKEN`` as
  ``Authorization: Bearer`` (and prefers it to a claude.ai login, without asking), and asks for
  the model named by ``ANTHROPIC_MODEL``, background work by ``ANTHROPIC_DEFAULT_HAIKU_MODEL``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

SERVER_NAME = "modeldeck"
MCP_SCRIPT = "modeldeck-mcp"
#: What the dialog shows in place of the token until it is revealed.
MASK = "••••••••"
#: The backend's default port (desktop/settings_store.py and backend/settings.py hold the same number).
DEFAULT_PORT = 8765


def find_mcp_command(executable: str = sys.executable,
                     which: Callable[[str], str | None] = shutil.which) -> str:
    """The ``modeldeck-mcp`` console script of this install, as an absolute path where one is found.

    It sits next to the Python that runs the desktop (a venv's ``bin``, ``Scripts`` on Windows;
    the bundle's folder when frozen); otherwise the one on PATH; otherwise the bare name.
    """
    folder = Path(executable).parent
    names = [MCP_SCRIPT + ".exe", MCP_SCRIPT] if os.name == "nt" else [MCP_SCRIPT]
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return str(candidate.absolute())
    return which(MCP_SCRIPT) or MCP_SCRIPT


def stdio_env(backend_url: str, home: str, default_home: Path, token: str = "",
              home_token: str = "") -> dict[str, str]:
    """The environment ``modeldeck-mcp`` needs to reach this backend: only what differs from its defaults.

    It talks to ``MODELDECK_HOST:MODELDECK_PORT`` (127.0.0.1:8765) with the token it reads from
    ``MODELDECK_HOME`` (backend/mcp_stdio.py). ``MODELDECK_TOKEN`` is set only when the token in
    use is not the one in that folder (one typed into Settings): the block then holds a secret.

    Args:
        home: the home folder the desktop is set to ('' for the default).
        token: the token the desktop uses; home_token: the one in the home folder's token file.
    """
    env: dict[str, str] = {}
    if home and Path(home).expanduser() != default_home:
        env["MODELDECK_HOME"] = str(Path(home).expanduser())
    parts = urlsplit(backend_url)
    if parts.hostname and parts.hostname not in ("127.0.0.1", "0.0.0.0"):
        env["MODELDECK_HOST"] = parts.hostname
    if parts.port is not None and parts.port != DEFAULT_PORT:
        env["MODELDECK_PORT"] = str(parts.port)
    if token and token != home_token:
        env["MODELDECK_TOKEN"] = token
    return env


def _quote(arg: str) -> str:
    return subprocess.list2cmdline([arg]) if os.name == "nt" else shlex.quote(arg)


def _env_lines(pairs: list[tuple[str, str]]) -> str:
    if os.name == "nt":  # PowerShell, the Windows terminal's default
        return "\n".join(f'$env:{k} = "{v}"' for k, v in pairs)
    return "\n".join(f"export {k}={_quote(v)}" for k, v in pairs)


@dataclass(frozen=True)
class AgentConfig:
    """Everything one backend offers agents; each method returns text ready to paste (with the real token).

    Attributes:
        backend_url: the backend's base URL (``http://127.0.0.1:8765``).
        token: the bearer token ('' when none is known yet).
        mcp_command: the stdio server's program (:func:`find_mcp_command`).
        mcp_env: what the stdio server needs in its environment (:func:`stdio_env`).
        model: a served model name for Claude Code's ``ANTHROPIC_MODEL`` ('' when none is deployed).
    """

    backend_url: str
    token: str
    mcp_command: str = MCP_SCRIPT
    mcp_env: dict[str, str] = field(default_factory=dict)
    model: str = ""

    @property
    def base(self) -> str:
        return self.backend_url.rstrip("/")

    # -- MCP over stdio ---------------------------------------------------------------

    def mcp_stdio_json(self) -> str:
        """The ``mcpServers`` block Claude Desktop, Cursor and Claude Code's ``.mcp.json`` read."""
        server: dict = {"command": self.mcp_command, "args": []}
        if self.mcp_env:
            server["env"] = dict(self.mcp_env)
        return json.dumps({"mcpServers": {SERVER_NAME: server}}, indent=2)

    def claude_code_stdio_command(self) -> str:
        """``claude mcp add`` for the stdio server: the name, then any ``--env``, then ``--`` and the program."""
        env = "".join(f" --env {_quote(f'{k}={v}')}" for k, v in self.mcp_env.items())
        return f"claude mcp add --transport stdio {SERVER_NAME}{env} -- {_quote(self.mcp_command)}"

    # -- MCP over Streamable HTTP -----------------------------------------------------

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    def mcp_http_json(self) -> str:
        """Cursor's shape for a remote server: its URL and the bearer token as a header."""
        server = {"url": self.mcp_url, "headers": {"Authorization": f"Bearer {self.token}"}}
        return json.dumps({"mcpServers": {SERVER_NAME: server}}, indent=2)

    def claude_code_http_command(self) -> str:
        """``claude mcp add --transport http`` with the token in an Authorization header."""
        return (f"claude mcp add --transport http {SERVER_NAME} {_quote(self.mcp_url)} "
                f"--header {_quote(f'Authorization: Bearer {self.token}')}")

    # -- OpenAI and Anthropic APIs ----------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return f"{self.base}/v1"

    def openai_env(self) -> str:
        return _env_lines([("OPENAI_BASE_URL", self.openai_base_url), ("OPENAI_API_KEY", self.token)])

    @property
    def anthropic_base_url(self) -> str:
        """No ``/v1``: Anthropic's SDKs and Claude Code append ``/v1/messages`` themselves."""
        return self.base

    def anthropic_env(self) -> str:
        """For Anthropic's SDKs: the key goes out as ``x-api-key``, which ModelDeck accepts."""
        return _env_lines([("ANTHROPIC_BASE_URL", self.anthropic_base_url), ("ANTHROPIC_API_KEY", self.token)])

    def claude_code_env(self) -> str:
        """For Claude Code: the token as a bearer token, and the deployed model to ask for."""
        lines = _env_lines([("ANTHROPIC_BASE_URL", self.anthropic_base_url), ("ANTHROPIC_AUTH_TOKEN", self.token)])
        if self.model:
            return lines + "\n" + _env_lines([("ANTHROPIC_MODEL", self.model),
                                              ("ANTHROPIC_DEFAULT_HAIKU_MODEL", self.model)])
        return (lines + "\n# then ANTHROPIC_MODEL and ANTHROPIC_DEFAULT_HAIKU_MODEL: a model "
                "ModelDeck serves (deploy one first)")


def masked(text: str, token: str) -> str:
    """``text`` with every occurrence of ``token`` shown as :data:`MASK` (unchanged when there is no token)."""
    return text.replace(token, MASK) if token else text

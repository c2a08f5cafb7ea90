"""The "Connect an agent" dialog: copyable MCP, OpenAI and Anthropic settings for this backend, token hidden."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QDialog, QFrame, QGroupBox, QHBoxLayout, QLabel, QPlainTextEdit,
                               QPushButton, QScrollArea, QVBoxLayout, QWidget)

from desktop import fonts, theme
from desktop.agent_config import MASK, AgentConfig, find_mcp_command, masked, stdio_env
from desktop.client import ApiError, BackendClient, read_token
from desktop.settings_store import default_home
from desktop.widgets.calls import Calls


class Snippet(QWidget):
    """One copyable piece: a caption, the text in a monospace box (token masked until revealed) and Copy.

    Signals:
        copied(str): the text that went to the clipboard (always with the real token).
    """

    copied = Signal(str)

    def __init__(self, key: str, caption: str, name: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.key, self.name = key, name
        self.text = ""  # the real text, token included
        self.token = ""
        self.caption = QLabel(caption)
        self.caption.setProperty("muted", True)
        self.caption.setWordWrap(True)
        self.view = QPlainTextEdit()
        self.view.setObjectName("mono")
        self.view.setReadOnly(True)  # still selectable by mouse and keyboard
        self.view.setFont(fonts.fixed_font())
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.setAccessibleName(caption)
        self.copy = QPushButton(theme.icon("copy"), "Copy")
        self.copy.setToolTip("Copy to the clipboard, with the real token")
        self.copy.clicked.connect(self._on_copy_clicked)
        theme.notifier().changed.connect(self._on_theme_changed)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.view, 1)
        row.addWidget(self.copy, 0, Qt.AlignmentFlag.AlignTop)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(int(self.fontMetrics().height() * 0.25))
        box.addWidget(self.caption)
        box.addLayout(row)

    def set_text(self, text: str, token: str, reveal: bool) -> None:
        self.text, self.token = text, token
        self.show_token(reveal)
        self._fit_height()

    def _fit_height(self) -> None:
        """As tall as the lines, plus a horizontal scroll bar only while the widest line does not fit."""
        view = self.view
        metrics = view.fontMetrics()
        lines = view.toPlainText().split("\n")
        margin = view.document().documentMargin()
        frame = view.contentsMargins()  # the style sheet's border and padding
        room = view.width() - frame.left() - frame.right()
        needs_bar = max(metrics.horizontalAdvance(line) for line in lines) + 2 * margin > room
        height = len(lines) * metrics.lineSpacing() + 2 * margin + frame.top() + frame.bottom()
        bar = view.horizontalScrollBar().sizeHint().height() if needs_bar else 0
        view.setFixedHeight(int(height + bar + 1))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        self._fit_height()

    def show_token(self, reveal: bool) -> None:
        self.view.setPlainText(self.text if reveal else masked(self.text, self.token))

    def shown(self) -> str:
        """What the box shows now."""
        return self.view.toPlainText()

    def _on_copy_clicked(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
        self.copied.emit(self.text)

    def _on_theme_changed(self, _scheme: str) -> None:
        self.copy.setIcon(theme.icon("copy"))


class ConnectAgentDialog(QDialog):
    """How agents reach this backend: MCP (stdio and HTTP), the OpenAI and the Anthropic APIs.

    The URL and token are the ones the window's client uses now (``refresh`` re-reads them);
    the token shows as dots until **Reveal token** is checked. **Copy** always copies the real
    text, and says so when it holds the token. A served model name for Claude Code comes from
    ``GET /v1/models``.

    Signals:
        copied(str): the key of the snippet just copied ("mcp_stdio_json", "openai_env", ...).
    """

    copied = Signal(str)

    def __init__(self, client: BackendClient, home: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("ModelDeck: connect an agent")
        self.client = client
        self.home = home
        self.config = AgentConfig(client.base_url, client.token)
        self._calls = Calls(client, self)
        self.snippets: dict[str, Snippet] = {}
        em = self.fontMetrics().horizontalAdvance("M")

        title = QLabel("Connect an agent")
        title.setObjectName("pageTitle")
        sub = QLabel("Agents drive ModelDeck through MCP, and reach its models through the OpenAI or the "
                     "Anthropic API, all at this private address. Paste these into the agent's settings.")
        sub.setObjectName("pageSubtitle")
        sub.setWordWrap(True)
        sub.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.reveal = QPushButton(theme.icon("eye"), "Reveal token")
        self.reveal.setCheckable(True)
        self.reveal.setToolTip("Show the backend's token in the text below")
        self.reveal.toggled.connect(self._on_reveal_toggled)
        theme.notifier().changed.connect(self._on_theme_changed)
        reveal_note = QLabel(f"The token shows as {MASK} until revealed; Copy always copies the real token.")
        reveal_note.setProperty("muted", True)
        reveal_note.setWordWrap(True)
        reveal_row = QHBoxLayout()
        reveal_row.addWidget(self.reveal)
        reveal_row.addWidget(reveal_note, 1)

        self.command_note = QLabel()
        self.command_note.setObjectName("warnText")
        self.command_note.setWordWrap(True)
        self.command_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.token_note = QLabel()
        self.token_note.setObjectName("warnText")
        self.token_note.setWordWrap(True)
        self.model_note = QLabel()
        self.model_note.setProperty("muted", True)
        self.model_note.setWordWrap(True)

        stdio = self._group("MCP: a local server (stdio)",
                            "The agent starts modeldeck-mcp, which talks to this backend with the token from "
                            "ModelDeck's home folder (or MODELDECK_TOKEN, when the token in use was typed into "
                            "Settings), and starts the backend when none answers.",
                            [("mcp_stdio_json", "Claude Desktop (claude_desktop_config.json), Cursor "
                              "(.cursor/mcp.json), Claude Code (.mcp.json)", "the MCP config (stdio)"),
                             ("claude_code_stdio", "Claude Code, from a terminal",
                              "the Claude Code command (stdio)")],
                            extra=self.command_note)
        http = self._group("MCP: over HTTP (Streamable HTTP)",
                           "For agents that connect to a URL; the token goes in the Authorization header. "
                           "Claude Desktop's config file takes local servers only: use the block above there.",
                           [("mcp_url", "URL", "the MCP URL"),
                            ("mcp_http_json", "Cursor (.cursor/mcp.json)", "the MCP config (HTTP)"),
                            ("claude_code_http", "Claude Code, from a terminal", "the Claude Code command (HTTP)")])
        openai = self._group("OpenAI API",
                             "Any OpenAI client or SDK; the model is a deployment's served name "
                             "(GET /v1/models lists them).",
                             [("openai_base_url", "Base URL", "the OpenAI base URL"),
                              ("openai_env", "Environment (OpenAI SDKs and tools)", "the OpenAI environment")])
        anthropic = self._group("Anthropic API",
                                "Anthropic's SDKs add /v1/messages to the base URL and send the key as "
                                "x-api-key, which ModelDeck accepts as well as the bearer token.",
                                [("anthropic_base_url", "Base URL", "the Anthropic base URL"),
                                 ("anthropic_env", "Environment (Anthropic SDKs)", "the Anthropic environment"),
                                 ("claude_code_env", "Claude Code: the token as ANTHROPIC_AUTH_TOKEN (a bearer "
                                  "token, used instead of a claude.ai login), and a model ModelDeck serves",
                                  "the Claude Code environment")],
                                extra=self.model_note)

        inner = QWidget()
        inner.setObjectName("cardsHost")
        ib = QVBoxLayout(inner)
        ib.setContentsMargins(0, 0, int(em * 0.5), 0)
        ib.setSpacing(em)
        for group in (stdio, http, openai, anthropic):
            ib.addWidget(group)
        ib.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(inner)

        self.state = QLabel()
        self.state.setProperty("muted", True)
        self.state.setWordWrap(True)
        close = QPushButton("Close")
        close.setProperty("primary", True)
        close.setAutoDefault(False)
        close.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.state, 1)
        buttons.addWidget(close)

        box = QVBoxLayout(self)
        box.setContentsMargins(int(em * 1.5), int(em * 1.2), int(em * 1.5), int(em * 1.2))
        box.addWidget(title)
        box.addWidget(sub)
        box.addLayout(reveal_row)
        box.addWidget(self.token_note)
        box.addWidget(scroll, 1)
        box.addLayout(buttons)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        width, height = em * 80, em * 64
        if screen is not None:
            width, height = min(width, int(screen.width() * 0.9)), min(height, int(screen.height() * 0.9))
        self.resize(width, height)
        self.refresh()

    def _group(self, title: str, note: str, items: list[tuple[str, str, str]],
               extra: QLabel | None = None) -> QGroupBox:
        group = QGroupBox(title)
        lay = QVBoxLayout(group)
        lay.setSpacing(int(self.fontMetrics().height() * 0.6))
        intro = QLabel(note)
        intro.setWordWrap(True)
        intro.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(intro)
        if extra is not None:
            lay.addWidget(extra)
        for key, caption, name in items:
            snippet = Snippet(key, caption, name)
            snippet.copied.connect(lambda _text, key=key: self._on_snippet_copied(key))
            self.snippets[key] = snippet
            lay.addWidget(snippet)
        return group

    # -- content ----------------------------------------------------------------------

    def refresh(self, home: str | None = None) -> None:
        """Re-read the URL and token the client uses now (and the home folder), rebuild every text."""
        if home is not None:
            self.home = home
        command = find_mcp_command()
        self.config = AgentConfig(self.client.base_url, self.client.token, mcp_command=command,
                                  mcp_env=stdio_env(self.client.base_url, self.home, default_home(),
                                                    self.client.token, read_token(self._home_path())),
                                  model=self.config.model)
        self.command_note.setVisible(command == "modeldeck-mcp")
        self.command_note.setText("modeldeck-mcp was not found next to this Python nor on PATH: install "
                                  "ModelDeck's package (pip install modeldeck) where the agent runs, or put "
                                  "the full path to modeldeck-mcp in place of the bare name.")
        self.token_note.setVisible(not self.client.token)
        self.token_note.setText("No token yet: the backend has not answered. These settings fill in once it "
                                "does (reopen this dialog).")
        self._render()
        self._calls.get("/v1/models", self._on_models_loaded, self._on_models_failed, timeout_ms=10000)

    def _home_path(self) -> Path:
        return Path(self.home).expanduser() if self.home else default_home()

    def _render(self) -> None:
        c = self.config
        texts = {
            "mcp_stdio_json": c.mcp_stdio_json(),
            "claude_code_stdio": c.claude_code_stdio_command(),
            "mcp_url": c.mcp_url,
            "mcp_http_json": c.mcp_http_json(),
            "claude_code_http": c.claude_code_http_command(),
            "openai_base_url": c.openai_base_url,
            "openai_env": c.openai_env(),
            "anthropic_base_url": c.anthropic_base_url,
            "anthropic_env": c.anthropic_env(),
            "claude_code_env": c.claude_code_env(),
        }
        for key, text in texts.items():
            self.snippets[key].set_text(text, c.token, self.reveal.isChecked())
        self.model_note.setText(f"Claude Code asks for the model {c.model}, a deployment running now; any "
                                "served name works." if c.model else
                                "No model is deployed yet: launch one, then reopen this dialog for Claude "
                                "Code's model lines.")

    def _on_models_loaded(self, body) -> None:
        models = [m.get("id") for m in (body or {}).get("data", []) if isinstance(m, dict) and m.get("id")]
        model = models[0] if models else ""
        if model != self.config.model:
            self.config = AgentConfig(self.config.backend_url, self.config.token, self.config.mcp_command,
                                      self.config.mcp_env, model)
            self._render()

    def _on_models_failed(self, error: ApiError) -> None:
        self.model_note.setText(f"Could not list the deployed models: {error}")

    # -- token and clipboard ----------------------------------------------------------

    def _on_reveal_toggled(self, on: bool) -> None:
        self.reveal.setText("Hide token" if on else "Reveal token")
        for snippet in self.snippets.values():
            snippet.show_token(on)

    def _on_theme_changed(self, _scheme: str) -> None:
        self.reveal.setIcon(theme.icon("eye"))

    def _on_snippet_copied(self, key: str) -> None:
        snippet = self.snippets[key]
        has_token = bool(self.config.token) and self.config.token in snippet.text
        self.state.setText(f"Copied {snippet.name}. It contains your token: keep it private."
                           if has_token else f"Copied {snippet.name}.")
        self.copied.emit(key)

    def shutdown(self) -> None:
        """Abort calls in flight (the window's shutdown calls this)."""
        self._calls.abort_all()

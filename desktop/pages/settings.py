"""The Settings page: backend URL and token, Docker host, other machines (nodes), model-cache folders, theme,
behaviour on quit."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QPushButton, QScrollArea, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import BackendClient
from desktop.pages.nodes import NodesSection
from desktop.settings_store import CACHE_KINDS, DesktopSettings, SettingsStore, default_home

THEMES = [("system", "Follow the system"), ("light", "Light"), ("dark", "Dark")]


class SettingsPage(QWidget):
    """Edits DesktopSettings; the theme applies at once, the connection on "Apply and reconnect".

    Signals:
        connection_changed(object): DesktopSettings with a new URL/token/home to reconnect with.
        settings_saved(object): DesktopSettings after any change was saved.
        connect_agent_requested(): "Connect an agent…" was clicked (the window opens its dialog).
    """

    connection_changed = Signal(object)
    settings_saved = Signal(object)
    connect_agent_requested = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None, store: SettingsStore | None = None):
        super().__init__(parent)
        self.client = client
        self.store = store or SettingsStore()
        s = self.store.load()
        em = self.fontMetrics().horizontalAdvance("M")

        self.url = QLineEdit(s.backend_url)
        self.token = QLineEdit(s.token)
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("read from the home folder's token file")
        self.reveal = QPushButton(theme.icon("eye"), "Reveal")
        self.reveal.setCheckable(True)
        self.reveal.toggled.connect(self._on_reveal_toggled)
        token_row = QHBoxLayout()
        token_row.addWidget(self.token, 1)
        token_row.addWidget(self.reveal)
        self.home = QLineEdit(s.home)
        self.home.setPlaceholderText(str(default_home()))
        home_row = self._with_browse(self.home)
        apply = QPushButton("Apply and reconnect")
        apply.setObjectName("applyButton")
        apply.setProperty("primary", True)
        apply.clicked.connect(self._on_apply_clicked)
        self.connection_state = QLabel()
        self.connection_state.setProperty("muted", True)
        self.connection_state.setWordWrap(True)
        conn = QGroupBox("Backend")
        cf = QFormLayout(conn)
        cf.addRow("URL", self.url)
        cf.addRow("Token", token_row)
        cf.addRow("Home folder", home_row)
        cf.addRow("", self.connection_state)
        self.connect_agent_button = QPushButton("Connect an agent…")
        self.connect_agent_button.setToolTip("MCP, OpenAI and Anthropic settings for agents, ready to copy")
        self.connect_agent_button.clicked.connect(self.connect_agent_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(apply)
        buttons.addWidget(self.connect_agent_button)
        buttons.addStretch(1)
        cf.addRow("", buttons)

        self.engine_endpoint = QLabel("Asking the backend…")
        self.engine_endpoint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.engine_endpoint.setWordWrap(True)
        self.docker_host = QLineEdit(s.docker_host)
        self.docker_host.setPlaceholderText("the local engine (unix socket)")
        self.docker_host.editingFinished.connect(self._save)
        note = QLabel("The backend talks to Docker; this is its MODELDECK_DOCKER_HOST "
                      "(e.g. ssh://user@gpu-box or tcp://host:2376). It applies to a backend that ModelDeck "
                      "starts itself, from its next start.")
        note.setProperty("muted", True)
        note.setWordWrap(True)
        docker = QGroupBox("Docker engine")
        df = QFormLayout(docker)
        df.addRow("In use now", self.engine_endpoint)
        df.addRow("Docker host", self.docker_host)
        df.addRow("", note)

        self.nodes = NodesSection(client)
        nodes_note = QLabel("Other machines running modeldeck-backend, reached over SSH with your keys (or TLS "
                            "with client certificates). Their models launch, show and answer on /v1 here.")
        nodes_note.setProperty("muted", True)
        nodes_note.setWordWrap(True)
        nodes = QGroupBox("Nodes")
        nodes.setObjectName("nodesGroup")
        nb = QVBoxLayout(nodes)
        nb.addWidget(nodes_note)
        nb.addWidget(self.nodes)

        self.caches: dict[str, QLineEdit] = {}
        caches = QGroupBox("Model caches")
        kf = QFormLayout(caches)
        for kind in CACHE_KINDS:
            edit = QLineEdit(s.cache_dirs.get(kind, ""))
            edit.setPlaceholderText("a Docker volume (default)")
            edit.editingFinished.connect(self._save)
            self.caches[kind] = edit
            kf.addRow(kind.capitalize(), self._with_browse(edit))
        cache_note = QLabel("Host folders where downloaded models are kept (MODELDECK_CACHE_DIR_<KIND> of a "
                            "backend that ModelDeck starts). Empty: a named Docker volume.")
        cache_note.setProperty("muted", True)
        cache_note.setWordWrap(True)
        kf.addRow("", cache_note)

        self.theme = QComboBox()
        for key, label in THEMES:
            self.theme.addItem(label, key)
        self.theme.setCurrentIndex(max(0, [k for k, _ in THEMES].index(s.theme) if s.theme in dict(THEMES) else 0))
        self.theme.currentIndexChanged.connect(self._on_theme_current_index_changed)
        self.keep_running = QCheckBox("Keep models running after ModelDeck quits")
        self.keep_running.setChecked(s.keep_running)
        self.keep_running.setToolTip("Off: quitting stops the models this window launched or started, and only "
                                     "those; models a script, an agent or another window started keep running.")
        self.keep_running.toggled.connect(self._save)
        look = QGroupBox("Appearance and behaviour")
        lf = QFormLayout(look)
        lf.addRow("Theme", self.theme)
        lf.addRow("", self.keep_running)

        title = QLabel("Settings")
        title.setObjectName("pageTitle")
        inner = QWidget()
        ib = QVBoxLayout(inner)
        ib.setContentsMargins(em * 2, em * 2, em * 2, em)
        ib.setSpacing(em)
        ib.addWidget(title)
        for group in (conn, docker, nodes, caches, look):
            group.setMaximumWidth(em * (90 if group is nodes else 60))
            ib.addWidget(group)
        ib.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(inner)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(scroll)

    def _with_browse(self, edit: QLineEdit) -> QHBoxLayout:
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        browse = QPushButton(theme.icon("folder"), "Browse…")
        browse.clicked.connect(lambda: self._browse_into(edit))
        row.addWidget(browse)
        return row

    def _browse_into(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text() or str(default_home()))
        if folder:
            edit.setText(folder)
            self._save()

    def current(self) -> DesktopSettings:
        """The settings as the page shows them."""
        return replace(self.store.load(), backend_url=self.url.text().strip() or self.store.load().backend_url,
                       token=self.token.text().strip(), home=self.home.text().strip(),
                       docker_host=self.docker_host.text().strip(), theme=self.theme.currentData(),
                       keep_running=self.keep_running.isChecked(),
                       cache_dirs={k: e.text().strip() for k, e in self.caches.items()})

    def _save(self, *_args) -> DesktopSettings:
        s = self.current()
        self.store.save(s)
        self.settings_saved.emit(s)
        return s

    def _on_reveal_toggled(self, on: bool) -> None:
        self.token.setEchoMode(QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password)
        self.reveal.setText("Hide" if on else "Reveal")

    def _on_theme_current_index_changed(self, _index: int) -> None:
        theme.apply(self.theme.currentData())
        self._save()

    def _on_apply_clicked(self) -> None:
        s = self._save()
        self.connection_state.setText(f"Reconnecting to {s.backend_url}…")
        self.connection_changed.emit(s)

    def show_engine(self, engine: dict | None) -> None:
        """Show the engine the backend uses, from the window's engine poll (None: no answer)."""
        if engine is None:
            self.engine_endpoint.setText("unknown (the backend did not answer)")
            return
        state = "reachable" if engine.get("reachable") else f"not reachable — {engine.get('reason') or ''}"
        version = f", Docker {engine['version']}" if engine.get("version") else ""
        self.engine_endpoint.setText(f"{engine.get('endpoint')} ({state}{version})")

    def shutdown(self) -> None:
        """Stop the Nodes section's polling and calls (the engine comes from the window)."""
        self.nodes.shutdown()

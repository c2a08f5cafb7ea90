"""The main window: side navigation, the banner, the pages, the status bar, shortcuts and the tray."""

from __future__ import annotations

import importlib
import sys
from dataclasses import replace
from importlib import metadata
from urllib.parse import quote

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow,
                               QMessageBox, QStackedWidget, QVBoxLayout, QWidget)

from desktop import theme
from desktop.backend_process import BackendProcess
from desktop.client import ApiError, BackendClient
from desktop.pages.connect_agent import ConnectAgentDialog
from desktop.pages.deployments import DeploymentsPage
from desktop.pages.first_run import FirstRunDialog
from desktop.pages.models import ModelsPage
from desktop.pages.settings import SettingsPage
from desktop.settings_store import DesktopSettings, SettingsStore, is_local
from desktop.tray import Tray, gpu_summary
from desktop.widgets.banner import Banner
from desktop.widgets.calls import Calls

ENGINE_POLL_MS = 1500  # the banner must say "engine down" within 2 s (docs/reliability.md)
QUIT_STOP_TIMEOUT_S = 30.0
PAGES = [("models", "Models"), ("discover", "Discover"), ("library", "Library"), ("deployments", "Deployments"), ("playground", "Playground"),
         ("monitor", "Monitor"), ("suites", "Suites"), ("settings", "Settings")]


class PlaceholderPage(QWidget):
    """Stands in for a page whose module is not there (yet)."""

    def __init__(self, title: str, why: str, parent: QWidget | None = None):
        super().__init__(parent)
        label = QLabel(f"<h2>{title}</h2><p>{why}</p>")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setWordWrap(True)
        label.setProperty("muted", True)
        QVBoxLayout(self).addWidget(label)

    def shutdown(self) -> None:
        pass


def load_page(module: str, cls: str, title: str, client: BackendClient) -> QWidget:
    """Build ``desktop.pages.<module>.<cls>(client)``, or a placeholder when that module is missing or broken."""
    try:
        page_cls = getattr(importlib.import_module(f"desktop.pages.{module}"), cls)
    except (ImportError, AttributeError) as exc:
        return PlaceholderPage(title, f"This page is not available in this build ({exc}).")
    return page_cls(client)


class MainWindow(QMainWindow):
    """ModelDeck's window. The backend may not answer yet: pages fill in once ``on_backend_ready`` runs.

    Signals:
        engine_changed(object): the latest ``/api/engine`` answer (None when the backend is unreachable).
    """

    engine_changed = Signal(object)

    def __init__(self, client: BackendClient, store: SettingsStore, *, tray: bool = True,
                 backend: BackendProcess | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.client, self.store, self.backend = client, store, backend
        self.settings: DesktopSettings = store.load()
        self.engine: dict | None = None
        self.backend_ok = False
        self._quitting = False
        self._stopping: set[str] = set()
        # Deployments this window launched (new ones, not adopted) or started, this session: with
        # "keep models running" off, quitting stops these and nothing else. Others on the same
        # engine belong to scripts, agents or other windows that may be using them.
        self.launched_here: set[str] = set()
        self.quit_note = ""  # what the last quit stopped and what it left running, and why
        self._left_running: list[str] = []  # names of the running deployments the last quit leaves be
        self._backend_trouble = False  # the banner shows why the backend this window started is gone
        self.first_run: FirstRunDialog | None = None
        self.connect_agent: ConnectAgentDialog | None = None
        self._calls = Calls(client, self)
        self.setWindowTitle("ModelDeck")
        self.setWindowIcon(theme.app_icon())

        self.models = ModelsPage(client)
        self.discover = load_page("discover", "DiscoverPage", "Discover", client)
        self.library = load_page("library", "LibraryPage", "Library", client)
        self.deployments = DeploymentsPage(client)
        self.playground = load_page("playground", "PlaygroundPage", "Playground", client)
        self.monitor = load_page("monitor", "MonitorPage", "Monitor", client)
        self.settings_page = SettingsPage(client, store=store)
        self.suites = load_page("suites", "SuitesPage", "Suites", client)
        self.pages = [self.models, self.discover, self.library, self.deployments, self.playground, self.monitor, self.suites,
                      self.settings_page]

        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        em = self.fontMetrics().horizontalAdvance("M")
        self.nav.setIconSize(QSize(int(em * 1.4), int(em * 1.4)))
        side_width = em * 15
        for i, (key, label) in enumerate(PAGES):
            item = QListWidgetItem(theme.icon(key), label)
            item.setToolTip(f"{label} (Ctrl+{i + 1})")
            item.setSizeHint(QSize(0, int(self.fontMetrics().height() * 2.4)))
            self.nav.addItem(item)
        self.stack = QStackedWidget()
        for page in self.pages:
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self._on_nav_current_row_changed)
        logo = QLabel()
        logo.setPixmap(theme.app_icon().pixmap(int(em * 1.9), int(em * 1.9)))
        name = QLabel("ModelDeck")
        name.setObjectName("brand")
        brand = QWidget()
        bl = QHBoxLayout(brand)
        bl.setContentsMargins(em, 0, em, em // 2)
        bl.addWidget(logo)
        bl.addWidget(name, 1)
        side = QFrame()
        side.setObjectName("side")
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, em, 0, 0)
        sl.setSpacing(0)
        sl.addWidget(brand)
        sl.addWidget(self.nav, 1)
        side.setFixedWidth(side_width)
        self.banner = Banner()
        right = QVBoxLayout()
        right.setContentsMargins(em, em, em, 0)
        right.setSpacing(0)
        right.addWidget(self.banner)
        right.addWidget(self.stack, 1)
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(side)
        row.addLayout(right, 1)
        self.setCentralWidget(central)

        self.url_label = QLabel(client.base_url)
        self.engine_label = QLabel("Engine: unknown")
        self.statusBar().addPermanentWidget(self.engine_label)
        self.statusBar().addPermanentWidget(self.url_label)

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction("First-run check…", self.show_first_run)
        help_menu.addAction("API docs", self.open_api_docs)
        help_menu.addAction("Connect an agent…", self.show_connect_agent)
        help_menu.addSeparator()
        help_menu.addAction("About ModelDeck", self.show_about)

        self.tray = Tray(self) if tray else None
        if self.tray is not None:
            self.tray.open_requested.connect(self._on_tray_open_requested)
            self.tray.quit_requested.connect(self.close)
            self.tray.stop_requested.connect(self._on_tray_stop_requested)
        self.models.show_deployments.connect(self._on_models_show_deployments)
        self.models.launched.connect(self._on_models_launched)
        self.models.created.connect(self._on_deployment_ours)
        self.models.discover_requested.connect(self._on_models_discover_requested)
        self.models.library_requested.connect(self._on_models_library_requested)
        for page in (self.discover, self.library):
            if hasattr(page, "launch_requested"):  # not a placeholder
                page.launch_requested.connect(self._on_page_launch_requested)
                page.message.connect(self._on_page_message_flagged)
        self.deployments.started.connect(self._on_deployment_ours)
        self.deployments.message.connect(self._on_page_message)
        self.deployments.deployments_changed.connect(self._on_deployments_changed)
        self.settings_page.connection_changed.connect(self._on_settings_connection_changed)
        self.settings_page.settings_saved.connect(self._on_settings_saved)
        self.settings_page.connect_agent_requested.connect(self.show_connect_agent)
        self.engine_changed.connect(self.settings_page.show_engine)
        theme.notifier().changed.connect(self._on_theme_changed)
        if backend is not None:
            backend.status.connect(self.on_backend_status)
            backend.ready.connect(self.on_backend_ready)
            backend.failed.connect(self.on_backend_failed)
            backend.died.connect(self.on_backend_died)

        shortcuts = [(f"Ctrl+{i + 1}", lambda i=i: self.show_page(i)) for i in range(len(PAGES))]
        shortcuts += [("Ctrl+L", self.launch), ("Ctrl+Q", self.close), ("F5", self.refresh)]
        self._shortcuts = [QShortcut(QKeySequence(k), self, activated=f) for k, f in shortcuts]

        self._engine_timer = QTimer(self)
        self._engine_timer.setInterval(ENGINE_POLL_MS)
        self._engine_timer.timeout.connect(self._poll_engine)
        self._quit_timer = QTimer(self)
        self._quit_timer.setSingleShot(True)
        self._quit_timer.timeout.connect(self._on_quit_timer_timeout)

        geometry, page = store.window_state()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(em * 112, em * 70)
        self.show_page(page if 0 <= page < len(PAGES) else 0)

    # -- navigation -------------------------------------------------------------------

    def show_page(self, index: int) -> None:
        self.nav.setCurrentRow(index)

    def _on_nav_current_row_changed(self, row: int) -> None:
        if row >= 0:
            self.stack.setCurrentIndex(row)

    def current_page(self) -> QWidget:
        return self.stack.currentWidget()

    def launch(self) -> None:
        """Ctrl+L: the Models page and the Launch dialog for the first runtime."""
        self.show_page(0)
        self.models.open_launch_dialog()

    def refresh(self) -> None:
        """F5: reload the current page and the engine state."""
        page = self.current_page()
        if hasattr(page, "refresh"):
            page.refresh()
        self._poll_engine()

    # -- backend and engine -----------------------------------------------------------

    def on_backend_status(self, text: str) -> None:
        """Progress of finding or starting the backend (from BackendProcess.status)."""
        if not self.backend_ok and not self._backend_trouble:
            self.banner.show_message("info", text)
        self.statusBar().showMessage(text, 5000)

    def on_backend_failed(self, text: str) -> None:
        self.backend_ok = False
        title, _, rest = text.partition("\n")
        can_start = (self.backend is not None and self.backend.spawn_allowed
                     and is_local(self.backend.settings.backend_url))
        self.banner.show_message("error", title, rest or None,
                                 action=("Restart backend", self.restart_backend) if can_start else None)
        self.engine_label.setText("Backend: not connected")

    def on_backend_died(self, text: str) -> None:
        """The backend this window started exited: say so, with its last lines; it restarts by itself."""
        self.backend_ok = False
        self._backend_trouble = True
        self._engine_timer.stop()
        title, _, rest = text.partition("\n")
        self.banner.show_message("error", title, (rest + "\n" if rest else "") + "Deployments keep running: "
                                 "Docker holds them, not the backend.",
                                 action=("Restart backend", self.restart_backend))
        self.engine_label.setText("Backend: restarting" if self.backend.restart_pending else "Backend: stopped")

    def restart_backend(self) -> None:
        """The banner's **Restart backend**: (re)start the backend this window looks after."""
        if self.backend is None:
            return
        self._backend_trouble = False
        self.backend_ok = False
        self._engine_timer.stop()
        self.banner.show_message("info", "Restarting the ModelDeck backend…")
        if self.backend.started_here or self.backend.owned:
            self.backend.restart()
        else:
            self.backend.start()

    def on_backend_ready(self, base_url: str, token: str) -> None:
        """The backend answers: fill every page and start watching the engine."""
        self.client.configure(base_url, token)
        self.backend_ok = True
        if self._backend_trouble:
            self.statusBar().showMessage("The ModelDeck backend was restarted; deployments were untouched.", 8000)
        self._backend_trouble = False
        self.url_label.setText(base_url)
        self.banner.clear()
        for page in self.pages:
            if hasattr(page, "refresh"):
                page.refresh()
        self._poll_engine()
        self._engine_timer.start()
        if not self.store.load().first_run_shown:
            self.store.save(replace(self.store.load(), first_run_shown=True))
            self.show_first_run()

    def _poll_engine(self) -> None:
        if self.backend_ok:
            self._calls.get("/api/engine", self._on_engine_loaded, self._on_engine_failed, timeout_ms=10000)

    def _on_engine_loaded(self, engine: dict) -> None:
        self.engine = engine
        if not engine.get("reachable"):
            reason = (engine.get("reason") or "").strip()
            title = "Docker is not reachable" + (f": {reason}" if reason else ".")
            hint = engine.get("hint") or "Start Docker; ModelDeck notices on its own when it is back."
            self.banner.show_message("error", title, hint + "  Everything else keeps working.")
            self.engine_label.setText("Engine: not reachable")
        elif not engine.get("gpu_runtime") or not engine.get("gpu_available"):
            why = engine.get("gpu_reason") or "Docker has no NVIDIA runtime."
            self.banner.show_message("info", "No GPU available to containers: models run on the CPU.",
                                     f"{why.rstrip('.')}. {engine.get('hint') or ''}".strip())
            self.engine_label.setText(f"Engine: Docker {engine.get('version') or ''} · no GPU")
        else:
            self.banner.clear()
            n = len(engine.get("gpus") or [])
            self.engine_label.setText(f"Engine: Docker {engine.get('version') or ''} · {n} GPU{'s' * (n != 1)}")
        if self.tray is not None:
            self.tray.update_engine(engine)
        self.engine_label.setToolTip(gpu_summary(engine))
        self.engine_changed.emit(engine)

    def _on_engine_failed(self, error: ApiError) -> None:
        self.engine = None
        if not self.backend_ok:
            return  # the backend is being (re)started: the banner already says so
        if error.status == 0 and self.backend is not None and self.backend.started_here:
            self.banner.show_message("error", "The ModelDeck backend this window started does not answer.",
                                     f"{error.hint or ''} Restarting it keeps every deployment: Docker holds "
                                     "them.".strip(), action=("Restart backend", self.restart_backend))
        elif error.status == 0:
            self.banner.show_message(
                "error", f"The ModelDeck backend at {self.client.base_url} does not answer.",
                "This window did not start it (a terminal, systemd or another ModelDeck did), so it does not "
                "start a second one: start it again where it runs (modeldeck-backend, or systemctl --user "
                "start modeldeck-backend). This window reconnects by itself.")
        else:
            self.banner.show_message("warning", f"Could not read the engine state: {error.message}", error.hint)
        self.engine_label.setText("Engine: unknown")
        self.engine_changed.emit(None)

    # -- help -------------------------------------------------------------------------

    def show_first_run(self) -> FirstRunDialog:
        """Open the first-run check (one dialog per window; opening it again re-checks)."""
        if self.first_run is None:
            self.first_run = FirstRunDialog(self.client, self)
        else:
            self.first_run.recheck()
        if self.first_run.isVisible():
            self.first_run.raise_()  # already open behind the window: bring it forward
            self.first_run.activateWindow()
        else:
            self.first_run.show()
        return self.first_run

    def show_connect_agent(self) -> ConnectAgentDialog:
        """Open "Connect an agent" (one per window; opening it again re-reads the URL and token)."""
        home = self.store.load().home
        if self.connect_agent is None:
            self.connect_agent = ConnectAgentDialog(self.client, home, self)
        else:
            self.connect_agent.refresh(home)
        if self.connect_agent.isVisible():
            self.connect_agent.raise_()
            self.connect_agent.activateWindow()
        else:
            self.connect_agent.show()
        return self.connect_agent

    def api_docs_url(self) -> QUrl:
        """The backend's /docs page, with the token in the address (the page cannot set headers)."""
        return QUrl(f"{self.client.base_url}/docs?token={quote(self.client.token, safe='')}")

    def open_api_docs(self) -> None:
        QDesktopServices.openUrl(self.api_docs_url())

    def show_about(self) -> None:
        try:
            version = metadata.version("modeldeck")
        except metadata.PackageNotFoundError:
            version = "(not installed)"
        QMessageBox.about(self, "About ModelDeck",
                          f"<h3>ModelDeck {version}</h3><p>A desktop control panel for local model "
                          f"containers.</p><p>Backend: {self.client.base_url}<br>OpenAI endpoint: "
                          f"{self.client.base_url}/v1</p>")

    # -- page and tray events ---------------------------------------------------------

    def _on_models_show_deployments(self) -> None:
        self.show_page(self.pages.index(self.deployments))

    def _on_models_discover_requested(self) -> None:
        self.show_page(self.pages.index(self.discover))

    def _on_models_library_requested(self) -> None:
        self.show_page(self.pages.index(self.library))

    def _on_page_launch_requested(self, recipe: str, model: str) -> None:
        """Discover's or Library's Launch: the Launch dialog with the runtime and model filled in."""
        if self.models.open_launch_for(recipe, model) is None:
            self.statusBar().showMessage(f"Cannot launch {model}: {self.models.state.text()}", 8000)

    def _on_page_message_flagged(self, text: str, _is_error: bool) -> None:
        self.statusBar().showMessage(text, 8000)

    def _on_models_launched(self, dep_id: str) -> None:
        self.deployments.refresh_now()
        self.statusBar().showMessage(f"Launching {dep_id}…", 5000)

    def _on_deployment_ours(self, dep_id: str) -> None:
        self.launched_here.add(dep_id)

    def _on_page_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 8000)

    def _on_deployments_changed(self, deployments: list) -> None:
        if self.tray is not None:
            self.tray.update_deployments(deployments)

    def _on_tray_open_requested(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def _on_tray_stop_requested(self, dep_id: str) -> None:
        self._calls.post(f"/api/deployments/{dep_id}/stop", None, lambda _d: self.deployments.refresh_now(),
                         self._on_stop_failed, timeout_ms=60000)

    def _on_stop_failed(self, error: ApiError) -> None:
        self.statusBar().showMessage(f"Could not stop: {error}", 8000)

    def _on_settings_connection_changed(self, settings: DesktopSettings) -> None:
        self.settings = settings
        self.backend_ok = False
        self._engine_timer.stop()
        if self.backend is None:
            self.on_backend_ready(settings.backend_url, settings.effective_token())
            return
        old = self.backend.settings
        if settings.backend_url != old.backend_url or settings.home != old.home:
            # A backend this desktop started for the old URL is not needed any more; the
            # window stays responsive while it exits.
            self.backend.stop(wait=False)
        self.backend.start(settings)

    def _on_settings_saved(self, settings: DesktopSettings) -> None:
        self.settings = settings

    def _on_theme_changed(self, _scheme: str) -> None:
        for i, (key, _label) in enumerate(PAGES):
            self.nav.item(i).setIcon(theme.icon(key))

    # -- closing ----------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if not self._quitting and not self.settings.keep_running and self.backend_ok:
            running = [r for r in self.deployments.rows.rows if r.running]
            ours = [r.id for r in running if r.id in self.launched_here]
            others = [r.data.get("served_name") or r.id for r in running if r.id not in self.launched_here]
            self.quit_note = quit_note(ours, others)
            self._left_running = others
            if ours:
                event.ignore()
                self._stop_ours_then_close(ours)
                return
            if others:
                self._tell_left_running()
        self.store.save_window_state(self.saveGeometry(), self.stack.currentIndex())
        self.shutdown()
        event.accept()

    def _stop_ours_then_close(self, dep_ids: list[str]) -> None:
        self._quitting = True
        self._stopping = set(dep_ids)
        title, _, detail = self.quit_note.partition("\n")
        self.banner.show_message("info", title, detail)
        self._tell_left_running()
        for dep_id in dep_ids:
            self._calls.post(f"/api/deployments/{dep_id}/stop", None,
                             lambda _d, dep_id=dep_id: self._on_quit_stop_done(dep_id),
                             lambda _e, dep_id=dep_id: self._on_quit_stop_done(dep_id), timeout_ms=60000)
        self._quit_timer.start(int(QUIT_STOP_TIMEOUT_S * 1000))

    def _on_quit_stop_done(self, dep_id: str) -> None:
        self._stopping.discard(dep_id)
        if not self._stopping:
            self._quit_timer.stop()
            QTimer.singleShot(0, self.close)

    def _tell_left_running(self) -> None:
        """Say on standard error (and in the tray where there is one) what quitting leaves running, and why."""
        print(f"modeldeck: {self.quit_note}", file=sys.stderr, flush=True)
        if self.tray is not None and self.tray.icon is not None and self._left_running:
            self.tray.icon.showMessage("ModelDeck", self.quit_note)

    def _on_quit_timer_timeout(self) -> None:
        self.close()

    def shutdown(self) -> None:
        """Stop timers, streams and calls of every page (idempotent)."""
        self._engine_timer.stop()
        self._quit_timer.stop()
        self._calls.abort_all()
        if self.first_run is not None:
            self.first_run.shutdown()
        if self.connect_agent is not None:
            self.connect_agent.shutdown()
        for page in self.pages:
            if hasattr(page, "shutdown"):
                page.shutdown()
        if self.tray is not None:
            self.tray.shutdown()


def quit_note(ours: list[str], others: list[str]) -> str:
    """What quitting with "keep models running" off does: a title line, then the details.

    Args:
        ours: ids of running deployments this window launched or started (stopped on quit).
        others: names of running deployments it did not (left running).
    """
    lines = []
    if ours:
        lines.append(f"Stopping {len(ours)} running model{'s' * (len(ours) != 1)} this window launched "
                     "before quitting…")
    if others:
        names = ", ".join(others)
        pronoun = "them" if len(others) != 1 else "it"
        lines.append(f"Leaving {names} running: {'they were' if len(others) != 1 else 'it was'} not launched "
                     "from this window (a script, an agent or another ModelDeck may be using "
                     f"{pronoun}). Stop {pronoun} on the Deployments page if you mean to.")
    if ours:
        lines.append("Settings → 'Keep models running after ModelDeck quits' skips stopping.")
    return "\n".join(lines) if lines else "Nothing was running."

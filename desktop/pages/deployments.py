"""The Deployments page: every deployment with live figures, and start/stop/restart/remove/logs/endpoint/compose,
pin and the on-demand settings (load on request, unload when idle)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from PySide6.QtCore import QEvent, QObject, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QInputDialog,
                               QLabel, QMenu, QMessageBox, QTableView, QToolBar, QToolButton, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient
from desktop.lifecycle import MAX_TTL_MINUTES, TTL_PRESETS_MIN, ttl_text
from desktop.nodes import ALL_NODES, node_choices
from desktop.pages.logs_dialog import LogsDialog
from desktop.widgets.calls import Calls
from desktop.widgets.deployment_table import MODEL_COLUMN, DeploymentRows, DeploymentTableModel

REFRESH_MS = 2000
EMPTY_TEXT = "No deployments yet. Launch a model from the Models page (Ctrl+L)."
PROGRESSIVE = {"start": "Starting", "stop": "Stopping", "restart": "Restarting", "remove": "Removing"}
ACTIONS = [  # key, label, icon, tooltip
    ("start", "Start", "start", "Start the stopped container"),
    ("stop", "Stop", "stop", "Stop the container (it is kept)"),
    ("restart", "Restart", "restart", "Restart the container"),
    ("remove", "Remove", "remove", "Remove the container (model caches stay)"),
    ("logs", "Logs", "logs", "Follow the container's log"),
    ("copy", "Copy endpoint", "copy", "Copy the OpenAI base URL and model name"),
    ("export", "Export compose", "export", "Save a docker-compose.yml for this deployment"),
    ("export_k8s", "Export Kubernetes…", "export",
     "Save Kubernetes manifests for this deployment: Deployment, Service and a claim per model cache"),
    ("pin", "Pin", "pin", "Never unload this model: not when idle, not to make room for another"),
    ("on_demand", "On demand", "timer", "Load on request, and when to unload it when idle"),
]
#: "Unload when idle" menu entries: (label, idle_ttl_s); None is the backend's default, 0 never.
TTL_MENU = [("Default", None), ("Never", 0.0),
            *((f"After {ttl_text(m * 60)}", float(m * 60)) for m in TTL_PRESETS_MIN)]


class DeploymentsPage(QWidget):
    """Deployments from ``/api/deployments`` joined with ``/api/stats``, refreshed every 2 s.

    Signals:
        message(str): a short result to show in the status bar.
        deployments_changed(list): the latest deployments (for the tray).
        started(str): this page started a stopped deployment (its id).
    """

    message = Signal(str)
    deployments_changed = Signal(list)
    started = Signal(str)

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self.client = client
        self._calls = Calls(client, self)
        self.rows = DeploymentRows()
        self.model = DeploymentTableModel(self.rows, self)
        self.pending: set[str] = set()
        self._listing = False
        self._logs: list[LogsDialog] = []
        self.loaded = False

        title = QLabel("Deployments")
        title.setObjectName("pageTitle")
        self.summary = QLabel("Loading…")
        self.summary.setObjectName("pageSubtitle")
        self.toolbar = QToolBar()
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.actions_by_key: dict[str, QAction] = {}
        for key, label, icon_name, tip in ACTIONS:
            action = QAction(theme.icon(icon_name), label, self)
            action.setToolTip(tip)
            action.setData(icon_name)
            action.triggered.connect(getattr(self, f"_on_{key}_triggered"))
            self.actions_by_key[key] = action
            self.toolbar.addAction(action)
            if key in ("remove", "export_k8s"):
                self.toolbar.addSeparator()
        self.actions_by_key["pin"].setCheckable(True)
        self._build_on_demand_menu()
        # Where the labelled buttons do not fit (a narrow window), icons alone (names in tooltips) rather than
        # the last buttons hidden behind the toolbar's overflow arrow.
        self._toolbar_text_width = self.toolbar.sizeHint().width()
        self.toolbar.installEventFilter(self)
        self.actions_by_key["remove"].setShortcut("Delete")
        self.actions_by_key["remove"].setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.addAction(self.actions_by_key["remove"])

        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        self.table.verticalHeader().hide()
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_context_menu_requested)
        self.table.doubleClicked.connect(self._on_logs_triggered)
        header = self.table.horizontalHeader()
        self._fit_columns_to_contents(False)  # until the page is shown
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        header.setHighlightSections(False)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.model.modelReset.connect(self._on_model_reset)
        self.empty = QLabel(EMPTY_TEXT)
        self.empty.setProperty("muted", True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.hide()

        em = self.fontMetrics().horizontalAdvance("M")
        head = QHBoxLayout()
        head.addWidget(title)
        head.addStretch(1)
        # Issue 17: which machine's deployments to show (every node's by default).
        self.node_filter = QComboBox()
        self.node_filter.setObjectName("nodeFilter")
        self.node_filter.setToolTip("Show the deployments of one machine")
        self.node_filter.addItem("All nodes", ALL_NODES)
        self.node_filter.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.node_filter.currentIndexChanged.connect(self._on_node_filter_current_index_changed)
        self._known_nodes: list[dict] = []
        node_label = QLabel("Node")
        node_label.setBuddy(self.node_filter)
        head.addWidget(node_label)
        head.addWidget(self.node_filter)
        box = QVBoxLayout(self)
        box.setContentsMargins(em * 2, em * 2, em * 2, em)
        box.setSpacing(em // 2)
        box.addLayout(head)
        box.addWidget(self.summary)
        box.addWidget(self.toolbar)
        box.addWidget(self.table, 1)
        box.addWidget(self.empty)
        self._selected_id: str | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()
        theme.notifier().changed.connect(self._on_theme_changed)
        self._update_actions()

    def _build_on_demand_menu(self) -> None:
        """The On demand action's menu: load on request, and the idle time-out (presets, or any minutes)."""
        menu = self.on_demand_menu = QMenu(self)
        menu.setToolTipsVisible(True)
        self.load_on_request_action = menu.addAction("Load on request")
        self.load_on_request_action.setCheckable(True)
        self.load_on_request_action.setToolTip("A /v1 request for this model starts it when it is unloaded")
        self.load_on_request_action.triggered.connect(self._on_load_on_request_action_triggered)
        menu.addSection("Unload when idle")
        self.ttl_group = QActionGroup(self)
        self.ttl_actions: list[QAction] = []
        for label, seconds in [*TTL_MENU, ("Other…", -1.0)]:
            action = menu.addAction(label)
            action.setCheckable(True)
            action.setData(seconds)
            self.ttl_group.addAction(action)
            self.ttl_actions.append(action)
        self.ttl_group.triggered.connect(self._on_ttl_group_triggered)
        menu.aboutToShow.connect(self._on_on_demand_menu_about_to_show)
        action = self.actions_by_key["on_demand"]
        action.setMenu(menu)
        button = self.toolbar.widgetForAction(action)
        if isinstance(button, QToolButton):
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)

    def _fit_columns_to_contents(self, fit: bool) -> None:
        """Columns as wide as their contents (shown), or left as they are (hidden).

        Fitting asks the model for every cell's data each time the rows change: 2,160 calls and
        13-16 ms of the GUI thread per refresh with 30 deployments, every 2 s, on a page nobody saw
        (the stall watchdog's stacks in the bench's streaming run, issue 13).
        """
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents if fit
                                    else QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(MODEL_COLUMN, QHeaderView.ResizeMode.Stretch)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        self._fit_columns_to_contents(True)
        super().showEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        super().hideEvent(event)
        self._fit_columns_to_contents(False)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's naming)
        if watched is self.toolbar and event.type() == QEvent.Type.Resize:
            self._fit_toolbar()
        return super().eventFilter(watched, event)

    def _fit_toolbar(self) -> None:
        labelled = self.toolbar.toolButtonStyle() == Qt.ToolButtonStyle.ToolButtonTextBesideIcon
        if labelled:  # what the labelled toolbar needs now (Pin/Pinned changes it a little)
            self._toolbar_text_width = self.toolbar.sizeHint().width()
        style = (Qt.ToolButtonStyle.ToolButtonTextBesideIcon if self.toolbar.width() >= self._toolbar_text_width
                 else Qt.ToolButtonStyle.ToolButtonIconOnly)
        if style != self.toolbar.toolButtonStyle():
            self.toolbar.setToolButtonStyle(style)

    # -- data -------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the backend for the deployments and the latest stats (skipped while a refresh is in flight)."""
        if self._listing:
            return
        self._listing = True
        self._calls.get("/api/deployments", self._on_list_loaded, self._on_list_failed)
        self._calls.get("/api/stats", self._on_stats_loaded)
        self._calls.get("/api/nodes", self._on_nodes_loaded)  # a backend before issue 17 answers 404: ignored

    def _on_nodes_loaded(self, answer) -> None:
        self._known_nodes = list((answer or {}).get("nodes") or []) if isinstance(answer, dict) else []
        self._fill_node_filter()

    def _fill_node_filter(self) -> None:
        """The filter's entries: All, This machine, then every node known or running a deployment."""
        names = [{"name": n} for n in self.rows.nodes()] + self._known_nodes
        choices = node_choices(names, with_all=True)
        current = [self.node_filter.itemData(i) for i in range(self.node_filter.count())]
        if current == [value for _label, value in choices]:
            return
        chosen = self.node_filter.currentData()
        self.node_filter.blockSignals(True)
        self.node_filter.clear()
        for label, value in choices:
            self.node_filter.addItem(label, value)
        index = self.node_filter.findData(chosen)
        self.node_filter.setCurrentIndex(max(0, index))
        self.node_filter.blockSignals(False)
        if index < 0 and chosen != ALL_NODES:  # the node went away: show every node again
            self._on_node_filter_current_index_changed(0)

    def _show_empty(self) -> None:
        """The empty-table note: nothing deployed, or nothing on the machine the filter shows."""
        if self.rows.node != ALL_NODES and self.rows.has_deployments():
            self.empty.setText(f"Nothing runs on {self.node_filter.currentText()}. Choose All nodes to see the rest.")
        else:
            self.empty.setText(EMPTY_TEXT)
        self.empty.setVisible(not self.rows.rows)

    def _on_node_filter_current_index_changed(self, _index: int) -> None:
        self.rows.set_node(self.node_filter.currentData() or ALL_NODES)
        self.model.refreshed()
        self._show_empty()
        self._update_actions()

    def _on_list_loaded(self, deployments: list) -> None:
        self._listing = False
        self.loaded = True
        self.rows.set_deployments(deployments)
        self.model.refreshed()
        self._fill_node_filter()
        ready = sum(1 for d in deployments if d.get("ready"))
        running = sum(1 for d in deployments if d.get("state") == "running")
        stale = next((d for d in deployments if d.get("stale")), None)
        if stale is not None:
            self.summary.setText(f"Docker does not answer: this is the last state seen ({len(deployments)} "
                                 f"deployments · {running} were running), not the present one. "
                                 f"{stale.get('engine_error') or ''}".strip())
        else:
            self.summary.setText(f"{len(deployments)} deployments · {running} running · {ready} ready"
                                 if deployments else "Nothing deployed.")
        self._show_empty()
        if self.rows.node != ALL_NODES:
            self.summary.setText(self.summary.text() + f" · showing {len(self.rows.rows)} on "
                                 f"{self.node_filter.currentText()}")
        self._update_actions()
        self.deployments_changed.emit(deployments)

    def _on_list_failed(self, error: ApiError) -> None:
        self._listing = False
        self.summary.setText(f"Could not list deployments: {error.message}")

    def _on_stats_loaded(self, snapshot: dict) -> None:
        self.rows.set_stats(snapshot if isinstance(snapshot, dict) else None)
        self.model.refreshed()

    def _on_theme_changed(self, _scheme: str) -> None:
        for action in self.actions_by_key.values():
            action.setIcon(theme.icon(action.data()))

    # -- selection --------------------------------------------------------------------

    def selected(self) -> dict | None:
        """The selected deployment (API object), or None."""
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        row = self.rows.find(self.model.data(rows[0], Qt.ItemDataRole.UserRole))
        return row.data if row else None

    def select(self, dep_id: str) -> bool:
        """Select the row of ``dep_id``; False when it is not in the table."""
        ids = self.rows.ids()
        if dep_id not in ids:
            return False
        self.table.selectRow(ids.index(dep_id))
        return True

    def _on_selection_changed(self, *_args) -> None:
        dep = self.selected()
        self._selected_id = dep["id"] if dep else None
        self._update_actions()

    def _on_model_reset(self) -> None:
        if self._selected_id:
            self.select(self._selected_id)

    def _update_actions(self) -> None:
        dep = self.selected()
        # Nothing but reading while the engine does not answer: the row is the last state seen.
        busy = dep is not None and (dep["id"] in self.pending or bool(dep.get("stale")))
        running = bool(dep) and dep.get("state") in ("running", "restarting")
        has_container = bool(dep) and bool(dep.get("container_id"))
        # Pin and On demand need a backend that has them (issue 14) and a deployment that is not being changed.
        on_demand = has_container and "on_demand" in (dep or {}) and not busy
        enabled = {
            "start": has_container and not running, "stop": running, "restart": has_container,
            "remove": dep is not None, "logs": has_container, "copy": dep is not None,
            "export": has_container, "export_k8s": has_container, "pin": on_demand, "on_demand": on_demand,
        }
        for key, action in self.actions_by_key.items():
            action.setEnabled(enabled[key] and not (busy and key in ("start", "stop", "restart", "remove")))
        pin = self.actions_by_key["pin"]
        if not (dep and dep["id"] in self.pending):  # while a change is on its way, the click shows
            pin.setChecked(bool(dep and dep.get("pinned")))
        pin.setText("Pinned" if pin.isChecked() else "Pin")

    def _on_table_context_menu_requested(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        self.table.selectRow(index.row())
        menu = QMenu(self)
        for key, action in self.actions_by_key.items():
            menu.addAction(action)
            if key in ("remove", "export"):
                menu.addSeparator()
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(self.table.viewport().mapToGlobal(pos))

    # -- actions ----------------------------------------------------------------------

    def _act(self, verb: str, dep: dict) -> None:
        dep_id = dep["id"]
        self.pending.add(dep_id)
        self._update_actions()
        name = dep.get("served_name") or dep_id

        def ok(_answer):
            self.pending.discard(dep_id)
            if verb == "start":
                self.started.emit(dep_id)
            self.message.emit(f"{verb.capitalize()}: {name} — done.")
            self.refresh_now()

        def err(error: ApiError):
            self.pending.discard(dep_id)
            self.message.emit(f"Could not {verb} {name}: {error}")
            self._update_actions()
            QMessageBox.warning(self, f"Could not {verb} {name}", str(error))

        if verb == "remove":
            self._calls.delete(f"/api/deployments/{dep_id}", ok, err, timeout_ms=60000)
        else:
            self._calls.post(f"/api/deployments/{dep_id}/{verb}", None, ok, err, timeout_ms=60000)
        self.message.emit(f"{PROGRESSIVE[verb]} {name}…")

    def update_deployment(self, dep: dict, changes: dict, done: str) -> None:
        """PATCH ``changes`` (on_demand, idle_ttl_s, pinned) onto ``dep``; ``done`` is said when it worked."""
        dep_id = dep["id"]
        name = dep.get("served_name") or dep_id
        self.pending.add(dep_id)
        self._update_actions()

        def ok(_answer):
            self.pending.discard(dep_id)
            self.message.emit(f"{name}: {done}.")
            self.refresh_now()

        def err(error: ApiError):
            self.pending.discard(dep_id)
            self.message.emit(f"Could not change {name}: {error}")
            self._update_actions()
            QMessageBox.warning(self, f"Could not change {name}", str(error))

        self._calls.patch(f"/api/deployments/{dep_id}", changes, ok, err)

    def refresh_now(self) -> None:
        self._listing = False
        self.refresh()

    def _on_start_triggered(self) -> None:
        if dep := self.selected():
            self._act("start", dep)

    def _on_stop_triggered(self) -> None:
        if dep := self.selected():
            self._act("stop", dep)

    def _on_restart_triggered(self) -> None:
        if dep := self.selected():
            self._act("restart", dep)

    def _on_remove_triggered(self) -> None:
        dep = self.selected()
        if dep is None:
            return
        name = dep.get("served_name") or dep["id"]
        answer = QMessageBox.question(
            self, f"Remove {name}?",
            f"Remove the deployment “{name}”? Its container is deleted; downloaded models stay in the cache.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        if answer == QMessageBox.StandardButton.Yes:
            self._act("remove", dep)

    def _on_pin_triggered(self, checked: bool = False) -> None:
        dep = self.selected()
        if dep is None:
            return
        self.update_deployment(dep, {"pinned": checked},
                               "pinned: ModelDeck never unloads it" if checked else "unpinned")

    def _on_on_demand_triggered(self, *_args) -> None:
        # The toolbar button opens the menu itself; from a shortcut or the context menu, show it here.
        if self.selected() is not None and not self.on_demand_menu.isVisible():
            self.on_demand_menu.popup(self.table.viewport().mapToGlobal(self.table.viewport().rect().center()))

    def _on_on_demand_menu_about_to_show(self) -> None:
        dep = self.selected() or {}
        self.load_on_request_action.setChecked(bool(dep.get("on_demand", True)))
        ttl = dep.get("idle_ttl_s")
        current = next((a for a in self.ttl_actions if a.data() == ttl), None) or (
            self.ttl_actions[-1] if ttl is not None else self.ttl_actions[0])
        current.setChecked(True)
        applies = dep.get("effective_idle_ttl_s")
        self.ttl_actions[0].setText(f"Default ({ttl_text(applies)})" if "effective_idle_ttl_s" in dep and ttl is None
                                    else "Default (the backend's setting)")
        self.ttl_actions[-1].setText(f"After {ttl_text(ttl)}…" if current is self.ttl_actions[-1] else "Other…")
        pinned = bool(dep.get("pinned"))  # a pinned model is never unloaded: its time-out waits until unpinned
        for action in self.ttl_actions:
            action.setEnabled(not pinned)
            action.setToolTip("Pinned: never unloaded. Unpin it first." if pinned else "")

    def _on_load_on_request_action_triggered(self, checked: bool) -> None:
        if dep := self.selected():
            self.update_deployment(dep, {"on_demand": checked},
                                   "loads on request" if checked else "no longer loads on request")

    def _on_ttl_group_triggered(self, action: QAction) -> None:
        dep = self.selected()
        if dep is None:
            return
        seconds = action.data()
        if seconds is not None and seconds < 0:  # Other…: any number of minutes
            now = dep.get("idle_ttl_s") or 900
            minutes, ok = QInputDialog.getInt(self, "Unload when idle",
                                              f"Unload {dep.get('served_name') or dep['id']} after this many "
                                              "minutes with no request:", max(1, round(now / 60)), 1,
                                              MAX_TTL_MINUTES)
            if not ok:
                return
            seconds = float(minutes * 60)
        self.set_idle_ttl(dep, seconds)

    def set_idle_ttl(self, dep: dict, seconds: float | None) -> None:
        """PATCH ``idle_ttl_s``: None for the backend's default, 0 for never, else seconds."""
        said = ("unloads when idle as the backend's default says" if seconds is None
                else "never unloads when idle" if seconds == 0 else f"unloads after {ttl_text(seconds)} idle")
        self.update_deployment(dep, {"idle_ttl_s": seconds}, said)

    def _on_logs_triggered(self, *_args) -> None:
        dep = self.selected()
        if dep is None or not dep.get("container_id"):
            return
        dialog = LogsDialog(self.client, dep, self)
        dialog.destroyed.connect(self._on_logs_destroyed)
        self._logs.append(dialog)
        dialog.show()

    def _on_logs_destroyed(self, obj=None) -> None:
        import shiboken6

        self._logs = [d for d in self._logs if d is not obj and shiboken6.isValid(d)]

    def open_logs(self) -> LogsDialog | None:
        """Open the logs of the selected deployment; returns the dialog (for tests and shortcuts)."""
        before = len(self._logs)
        self._on_logs_triggered()
        return self._logs[-1] if len(self._logs) > before else None

    def endpoint_text(self, dep: dict) -> str:
        return f"base_url: {self.client.base_url}/v1\nmodel: {dep.get('served_name')}"

    def _on_copy_triggered(self) -> None:
        if dep := self.selected():
            QGuiApplication.clipboard().setText(self.endpoint_text(dep))
            self.message.emit(f"Copied the OpenAI endpoint {self.client.base_url}/v1 and model "
                              f"“{dep.get('served_name')}”.")

    def _on_export_triggered(self) -> None:
        self._export("Export compose file", "docker-compose.yml", "Compose files (*.yml *.yaml)", "compose", "")

    def _on_export_k8s_triggered(self) -> None:
        """Save the backend's Kubernetes export (defaults: namespace "default", 50Gi per cache; docs/kubernetes.md)."""
        self._export("Export Kubernetes manifests", "kubernetes.yaml", "Kubernetes manifests (*.yaml *.yml)",
                     "kubernetes", " (apply it with kubectl apply -f; see its comments first)")

    def _export(self, title: str, suffix: str, file_filter: str, route: str, note: str) -> None:
        """Ask where, then save the selected deployment's export from ``/api/deployments/{id}/<route>``."""
        dep = self.selected()
        if dep is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path.home() / f"{dep['id']}-{suffix}"), file_filter)
        if not path:
            return

        def ok(text):
            try:
                Path(path).write_text(text if isinstance(text, str) else str(text), encoding="utf-8")
            except OSError as exc:
                QMessageBox.warning(self, "Could not save", str(exc))
                return
            self.message.emit(f"Saved {path}{note}")

        def err(error: ApiError):
            QMessageBox.warning(self, "Could not export", str(error))

        self._calls.get(f"/api/deployments/{quote(dep['id'], safe='@')}/{route}", ok, err)

    def shutdown(self) -> None:
        """Stop polling, abort calls, close log windows (their streams stop)."""
        self._timer.stop()
        self._calls.abort_all()
        for dialog in list(self._logs):
            import shiboken6

            if shiboken6.isValid(dialog):
                dialog.close()
        self._logs = []

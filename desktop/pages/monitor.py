"""The Monitor page: live charts of GPUs, host and deployments from the backend's stats stream, with the models'
loads, unloads and evictions marked on them and listed (``GET /api/lifecycle``); or, with a node chosen, the same
charts of another machine from ``GET /api/nodes/{name}/stats`` (issue 17)."""

from __future__ import annotations

from urllib.parse import quote

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QFrame, QGridLayout, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QPushButton, QScrollArea, QScrollBar, QTreeWidget,
                               QTreeWidgetItem, QVBoxLayout, QWidget)

from desktop import theme
from desktop.client import ApiError, BackendClient, SseStream
from desktop.lifecycle import EVENT_TITLES, EventLog, LifecycleEvent, clock, event_parts
from desktop.monitor.series import WINDOW_S
from desktop.monitor.store import HOST_CPU, HOST_MEM, StatsStore, deployment_key, gpu_key
from desktop.nodes import LOCAL, node_choices
from desktop.widgets.calls import Calls
from desktop.widgets.chart import LineChart, TimeWindow, format_bytes, format_celsius, format_watts
from desktop.widgets.marked_chart import MarkedLineChart

RETRY_MS = 3000
#: How often a node's stats are asked for (it has no stream through the local backend), and its list refreshed.
NODE_POLL_MS = 1000
NODE_LIST_MS = 5000
#: How often the page asks for new lifecycle events, and how many its list shows.
LIFECYCLE_POLL_MS = 2000
LIFECYCLE_LIST_ROWS = 50
EVENT_COLUMNS = ("Time", "Model", "What", "Why")
SPANS = (("Last minute", 60), ("Last 5 minutes", 300), ("Last 15 minutes", WINDOW_S))
BADGE_STYLE = "background: #e65100; color: white; border-radius: 4px; padding: 2px 8px; font-weight: bold;"
NOTICE_STYLE = "background: rgba(230, 81, 0, 0.12); border: 1px solid #e65100; border-radius: 4px; padding: 6px;"


class DeploymentCard(QFrame):
    """One deployment's CPU, memory and VRAM charts under its name, with a "running on CPU" badge."""

    def __init__(self, deployment_id: str, store: StatsStore, window: TimeWindow, parent: QWidget | None = None,
                 events: EventLog | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.deployment_id = deployment_id
        self.name_label = QLabel(f"<b>{deployment_id}</b>")
        self.badge = QLabel("running on CPU")
        self.badge.setStyleSheet(BADGE_STYLE)
        self.badge.setToolTip("This deployment asked for a GPU but holds no GPU memory: it runs on the CPU, "
                              "slowly. Check the GPU runtime (NVIDIA Container Toolkit) and its logs.")
        self.badge.hide()
        self.state_label = QLabel()
        self._present, self._loads_on_request = True, False
        latest = lambda: store.latest_time  # noqa: E731
        marks = {"events": events, "deployment_id": deployment_id}  # this deployment's loads and unloads
        self.charts = [
            MarkedLineChart("CPU (100 % = one core)", window, latest, y_floor=100.0, **marks),
            MarkedLineChart("Memory", window, latest, format_bytes, **marks),
            MarkedLineChart("VRAM", window, latest, format_bytes, **marks),
        ]
        for chart, what, label in zip(self.charts, ("cpu", "mem", "vram"), ("cpu", "used", "vram")):
            chart.add_line(store.get(deployment_key(deployment_id, what)), label)
        self.charts[2].y_floor = float(1 << 30)
        head = QHBoxLayout()
        head.addWidget(self.name_label)
        head.addWidget(self.badge)
        head.addWidget(self.state_label)
        head.addStretch(1)
        row = QHBoxLayout()
        for chart in self.charts:
            row.addWidget(chart)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addLayout(row)

    def set_name(self, name: str) -> None:
        suffix = "" if name == self.deployment_id else f" <span style='color: gray'>({self.deployment_id})</span>"
        self.name_label.setText(f"<b>{name}</b>{suffix}")

    def set_flags(self, running_on_cpu: bool, present: bool, wants_gpu: bool) -> None:
        self.badge.setVisible(running_on_cpu)
        self.charts[2].empty_text = "waiting for data…" if wants_gpu else "CPU-only: no VRAM"
        self._present = present
        self._show_state()

    def set_loads_on_request(self, loads_on_request: bool) -> None:
        """Whether the backend says it is unloaded and loads on request (not merely "not running")."""
        self._loads_on_request = loads_on_request
        self._show_state()

    def _show_state(self) -> None:
        if self._present:
            self.state_label.setText("")
        else:
            self.state_label.setText("<i>unloaded (loads on request)</i>" if self._loads_on_request
                                     else "<i>not running</i>")


class MonitorPage(QWidget):
    """Follows ``/api/stats/stream`` (after a 15-minute backfill) and charts it at the stream's pace.

    Signals:
        updated(): a new snapshot was charted.
    """

    updated = Signal()

    def __init__(self, client: BackendClient, parent: QWidget | None = None):
        super().__init__(parent)
        self._client = client
        self._calls = Calls(client, self)
        self.store = StatsStore()
        self.events = EventLog()
        self._polling_events = False
        self.window = TimeWindow(span=60.0, parent=self)  # like a task manager: the last minute first
        self.window.changed.connect(self._on_window_changed)
        self._stream: SseStream | None = None
        self._started = False
        self._closing = False
        self._layout_version = -1
        self._names: dict[str, str] = {}
        self._loads_on_request: dict[str, bool] = {}
        self.gpu_charts: dict[int, list[LineChart]] = {}
        self.cards: dict[str, DeploymentCard] = {}
        self._retry = QTimer(self)
        self._retry.setSingleShot(True)
        self._retry.setInterval(RETRY_MS)
        self._retry.timeout.connect(self._on_retry_timeout)
        self._events_timer = QTimer(self)
        self._events_timer.setInterval(LIFECYCLE_POLL_MS)
        self._events_timer.timeout.connect(self.poll_events)
        #: The machine charted: ``local`` (the stats stream) or a node's name (polled).
        self.node = LOCAL
        self._node_polling = False
        self._node_timer = QTimer(self)
        self._node_timer.setInterval(NODE_POLL_MS)
        self._node_timer.timeout.connect(self.poll_node)
        self._node_list_timer = QTimer(self)
        self._node_list_timer.setInterval(NODE_LIST_MS)
        self._node_list_timer.timeout.connect(self._list_nodes)
        self._build()
        theme.notifier().changed.connect(self._on_theme_changed)

    def _build(self) -> None:
        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("color: #b00020; padding: 4px;")
        self.banner.hide()
        self.span_combo = QComboBox()
        for label, seconds in SPANS:
            self.span_combo.addItem(label, seconds)
        self.span_combo.setCurrentIndex(0)
        self.span_combo.currentIndexChanged.connect(self._on_span_combo_current_index_changed)
        self.scroll_bar = QScrollBar(Qt.Orientation.Horizontal)
        self.scroll_bar.setToolTip("Scroll back within the last 15 minutes (or drag a chart; wheel zooms)")
        self.scroll_bar.valueChanged.connect(self._on_scroll_bar_value_changed)
        self.live_button = QPushButton("Live")
        self.live_button.setToolTip("Follow the newest samples (double-click a chart does the same)")
        self.live_button.clicked.connect(self.window.go_live)
        self.node_combo = QComboBox()
        self.node_combo.setObjectName("monitorNode")
        self.node_combo.setToolTip("The machine whose GPUs, host and deployments are charted")
        self.node_combo.addItem("This machine", LOCAL)
        self.node_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.node_combo.currentIndexChanged.connect(self._on_node_combo_current_index_changed)
        controls = QHBoxLayout()
        controls.addWidget(self.node_combo)
        controls.addWidget(self.span_combo)
        controls.addWidget(self.scroll_bar, 1)
        controls.addWidget(self.live_button)

        latest = lambda: self.store.latest_time  # noqa: E731
        self.cpu_chart = MarkedLineChart("Host CPU", self.window, latest, y_max=100.0, events=self.events)
        self.cpu_chart.add_line(self.store.get(HOST_CPU), "cpu")
        self.mem_chart = MarkedLineChart("Host memory", self.window, latest, format_bytes, events=self.events)
        self.mem_chart.add_line(self.store.get(HOST_MEM), "used")
        host = QGroupBox("Host")
        host_row = QHBoxLayout(host)
        host_row.addWidget(self.cpu_chart)
        host_row.addWidget(self.mem_chart)
        self.gpu_notice = QLabel()
        self.gpu_notice.setWordWrap(True)
        self.gpu_notice.setStyleSheet(NOTICE_STYLE)
        self.gpu_notice.hide()
        self.gpu_box = QGroupBox("GPUs")
        self.gpu_layout = QVBoxLayout(self.gpu_box)
        self.gpu_layout.addWidget(self.gpu_notice)
        self.events_box = QGroupBox("Loads, unloads and evictions")
        self.events_box.setToolTip("Models loaded on request, unloaded when idle and evicted to make room; each is "
                                   "also marked on the charts below (hover a mark for why)")
        self.events_list = QTreeWidget()
        self.events_list.setColumnCount(len(EVENT_COLUMNS))
        self.events_list.setHeaderLabels(list(EVENT_COLUMNS))
        self.events_list.setRootIsDecorated(False)
        self.events_list.setAlternatingRowColors(True)
        self.events_list.setWordWrap(False)
        self.events_list.setUniformRowHeights(True)
        self.events_list.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.events_list.header().setStretchLastSection(True)
        self.events_list.header().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.events_list.setMaximumHeight(self.fontMetrics().lineSpacing() * 7 + 16)
        self.no_events = QLabel("None yet. A model with “Load on request” loads when a request names it and "
                                "unloads when idle for its time-out.")
        self.no_events.setProperty("muted", True)
        self.no_events.setWordWrap(True)
        events_layout = QVBoxLayout(self.events_box)
        events_layout.addWidget(self.no_events)
        events_layout.addWidget(self.events_list)
        self.events_list.hide()
        self.deployments_box = QGroupBox("Deployments")
        self.deployments_layout = QVBoxLayout(self.deployments_box)
        self.no_deployments = QLabel("No deployment is running.")
        self.deployments_layout.addWidget(self.no_deployments)
        content = QWidget()
        body = QVBoxLayout(content)
        body.addWidget(self.events_box)
        body.addWidget(self.gpu_box)
        body.addWidget(host)
        body.addWidget(self.deployments_box)
        body.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setWidget(content)
        self.scroll.verticalScrollBar().valueChanged.connect(self._on_window_changed)
        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addLayout(controls)
        layout.addWidget(self.scroll, 1)
        self._sync_scroll_bar()

    # ------------------------------------------------------------------ state

    def charts(self) -> list[LineChart]:
        out = [self.cpu_chart, self.mem_chart]
        for charts in self.gpu_charts.values():
            out += charts
        for card in self.cards.values():
            out += card.charts
        return out

    def streams(self) -> list[SseStream]:
        """The live stats stream while it is open."""
        return [s for s in [self._stream] if s is not None and s.running]

    def ingest(self, snapshot: dict) -> bool:
        """Chart one StatsSnapshot (decoded JSON); False when it is not newer than the last."""
        if not self.store.ingest(snapshot):
            return False
        self._refresh()
        return True

    # ------------------------------------------------------------------ streaming

    def start(self) -> None:
        """Backfill the last 15 minutes, then follow the live stream (called on first show)."""
        self._started = True
        if not self._node_list_timer.isActive() and not self._closing:
            self._list_nodes()
            self._node_list_timer.start()
        if self.node != LOCAL:
            self.poll_node()
            self._node_timer.start()
            return
        if not self._events_timer.isActive() and not self._closing:
            self.poll_events()
            self._events_timer.start()
        reply = self._client.get(f"/api/stats/history?seconds={WINDOW_S}", timeout_ms=30000)
        reply.succeeded.connect(self._on_history_reply_succeeded)
        reply.failed.connect(self._on_history_reply_failed)

    def shutdown(self) -> None:
        """Abort the stream (the window is closing); returns at once."""
        self._closing = True
        self._retry.stop()
        self._events_timer.stop()
        self._node_timer.stop()
        self._node_list_timer.stop()
        self._calls.abort_all()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()

    def _open_stream(self) -> None:
        if self._closing:
            return
        stream = self._client.stream("/api/stats/stream")
        stream.event.connect(self._on_stream_event)
        stream.failed.connect(self._on_stream_failed)
        stream.ended.connect(self._on_stream_ended)
        self._stream = stream
        stream.start()

    def _schedule_retry(self, why: str) -> None:
        if self._closing:
            return
        self.banner.setText(f"{why} Retrying in {RETRY_MS // 1000} s…")
        self.banner.show()
        self._retry.start()

    def _refresh(self) -> None:
        if self.store.layout_version != self._layout_version:
            self._layout_version = self.store.layout_version
            self._rebuild()
        if self.store.host_mem_total:
            self.mem_chart.y_max = float(self.store.host_mem_total)
        for chart in self.charts():
            if chart.isVisible() and not chart.visibleRegion().isEmpty():
                chart.update()
        self.updated.emit()

    def _rebuild(self) -> None:
        status = self.store.gpu_status
        if status and not status.get("available"):
            reason = (status.get("reason") or "NVML did not answer").rstrip(".") + "."
            self.gpu_notice.setText(f"<b>No GPU available.</b> {reason} Host and deployment charts still work.")
            self.gpu_notice.show()
        else:
            self.gpu_notice.hide()
        for index, facts in sorted(self.store.gpus.items()):
            if index in self.gpu_charts:
                continue
            self.gpu_charts[index] = self._add_gpu(index, facts.name)
        new_ids = False
        for dep_id, facts in self.store.deployments.items():
            card = self.cards.get(dep_id)
            if card is None:
                card = self.cards[dep_id] = DeploymentCard(dep_id, self.store, self.window,
                                                           events=self.events if self.node == LOCAL else None)
                self.deployments_layout.addWidget(card)
                new_ids = new_ids or dep_id not in self._names
                if dep_id in self._names:
                    card.set_name(self._names[dep_id])
                card.set_loads_on_request(self._loads_on_request.get(dep_id, False))
            card.set_flags(facts.running_on_cpu, facts.present, facts.wants_gpu)
        for dep_id in [d for d in self.cards if d not in self.store.deployments]:
            self.cards.pop(dep_id).deleteLater()
        running_first = sorted(self.cards.values(), key=lambda c: (
            not self.store.deployments[c.deployment_id].present, self._names.get(c.deployment_id, c.deployment_id)))
        for card in running_first:  # re-adding moves a card to the end of the layout
            self.deployments_layout.removeWidget(card)
            self.deployments_layout.addWidget(card)
        self.no_deployments.setVisible(not self.cards)
        if new_ids or self.events.events:
            # New names to show; or, where models load and unload on request, a card whose deployment
            # came or went says whether it is unloaded (the layout changes only on such changes).
            reply = self._client.get("/api/deployments")
            reply.succeeded.connect(self._on_deployments_reply_succeeded)

    def _add_gpu(self, index: int, name: str) -> list[LineChart]:
        latest = lambda: self.store.latest_time  # noqa: E731
        box = QGroupBox(f"GPU {index} · {name}")
        grid = QGridLayout(box)
        util = LineChart("Utilisation", self.window, latest, y_max=100.0)
        util.add_line(self.store.get(gpu_key(index, "util")), "util")
        vram = LineChart("VRAM", self.window, latest, format_bytes)
        vram.add_line(self.store.get(gpu_key(index, "mem")), "used")
        vram.add_line(self.store.get(gpu_key(index, "mem_total")), "total", "#7f7f7f", dashed=True)
        temp = LineChart("Temperature", self.window, latest, format_celsius, y_floor=90.0)
        temp.add_line(self.store.get(gpu_key(index, "temp")), "temp", "#d62728")
        power = LineChart("Power", self.window, latest, format_watts)
        power.add_line(self.store.get(gpu_key(index, "power")), "power", "#9467bd")
        limit = self.store.gpus[index].power_limit_w
        if limit:
            power.y_floor = float(limit)
        charts = [util, vram, temp, power]
        for k, chart in enumerate(charts):
            grid.addWidget(chart, k // 2, k % 2)
        self.gpu_layout.addWidget(box)
        return charts

    # ------------------------------------------------------------------ lifecycle events

    def poll_events(self) -> None:
        """Ask for the lifecycle events after the last one held (skipped while a poll is in flight)."""
        if self._polling_events or self._closing:
            return
        self._polling_events = True
        self._calls.get(f"/api/lifecycle?after={self.events.last_seq}&limit=500", self._on_events_loaded,
                        self._on_events_failed)

    def add_events(self, answer: dict) -> list[LifecycleEvent]:
        """Take one ``GET /api/lifecycle`` answer: list the new events and mark them on the charts."""
        new = self.events.add(answer)
        if not new:
            return new
        self.no_events.hide()
        self.events_list.show()
        for ev in new:
            what, why = event_parts(ev.data)
            item = QTreeWidgetItem([clock(ev.at), ev.served_name, what, why])
            for col in range(len(EVENT_COLUMNS)):
                item.setToolTip(col, f"{EVENT_TITLES.get(ev.kind, ev.kind)}: {ev.text}")
            item.setForeground(2, theme.color(ev.role))
            item.setData(0, Qt.ItemDataRole.UserRole, ev.seq)
            item.setData(2, Qt.ItemDataRole.UserRole, ev.role)
            self.events_list.insertTopLevelItem(0, item)  # newest first
        while self.events_list.topLevelItemCount() > LIFECYCLE_LIST_ROWS:
            self.events_list.takeTopLevelItem(self.events_list.topLevelItemCount() - 1)
        for chart in self.charts():
            if chart.isVisible():
                chart.update()
        # A load or unload changes who is unloaded (loads on request): the cards say so.
        self._calls.get("/api/deployments", self._on_deployments_reply_succeeded)
        return new

    def _on_theme_changed(self, _scheme: str) -> None:
        for i in range(self.events_list.topLevelItemCount()):  # the kinds' colours follow the theme
            item = self.events_list.topLevelItem(i)
            item.setForeground(2, theme.color(item.data(2, Qt.ItemDataRole.UserRole)))

    def _on_events_loaded(self, answer: object) -> None:
        self._polling_events = False
        if isinstance(answer, dict):
            self.add_events(answer)

    def _on_events_failed(self, error: ApiError) -> None:
        self._polling_events = False
        if error.status in (404, 405):  # a backend from before models on demand: nothing to follow
            self._events_timer.stop()
            self.events_box.hide()

    def _sync_scroll_bar(self) -> None:
        self.scroll_bar.blockSignals(True)
        room = int(self.window.limit - self.window.span)
        self.scroll_bar.setRange(0, room)
        self.scroll_bar.setPageStep(int(self.window.span))
        self.scroll_bar.setValue(room - int(self.window.back))  # right end = live
        self.scroll_bar.blockSignals(False)
        self.live_button.setEnabled(not self.window.live)

    # ------------------------------------------------------------------ slots

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's naming)
        super().showEvent(event)
        if not self._started:
            self.start()

    def _on_history_reply_succeeded(self, body: object) -> None:
        if self.node != LOCAL or self._closing:  # another machine was chosen meanwhile
            return
        snapshots = body.get("snapshots", []) if isinstance(body, dict) else []
        self.store.ingest_many(snapshots)
        self._refresh()
        self._open_stream()

    def _on_history_reply_failed(self, error: ApiError) -> None:
        self._schedule_retry(f"Cannot load stats: {error}")

    def _on_retry_timeout(self) -> None:
        self.start()

    def _on_stream_event(self, name: str, data: object) -> None:
        if name == "stats" and isinstance(data, dict) and self.sender() is self._stream:
            if self.banner.isVisible():
                self.banner.hide()
            self.ingest(data)

    def _on_stream_failed(self, error: ApiError) -> None:
        if self.sender() is self._stream:
            self._schedule_retry(f"Live stats lost: {error}")

    def _on_stream_ended(self) -> None:
        stream = self.sender()
        if stream is self._stream:
            self._stream = None
            if not self._retry.isActive():
                self._schedule_retry("The stats stream ended.")

    def _on_deployments_reply_succeeded(self, body: object) -> None:
        for dep in body if isinstance(body, list) else []:
            if isinstance(dep, dict) and dep.get("id"):
                # A node's stats name its deployments by the node's own ids; the list here says <id>@<node>.
                dep_id = dep["id"]
                if self.node != LOCAL and dep.get("node") == self.node:
                    dep_id = dep_id.removesuffix(f"@{self.node}")
                self._names[dep_id] = dep.get("served_name") or dep.get("name") or dep["id"]
                self._loads_on_request[dep_id] = bool(dep.get("loads_on_request"))
        for dep_id, card in self.cards.items():
            if dep_id in self._names:
                card.set_name(self._names[dep_id])
            card.set_loads_on_request(self._loads_on_request.get(dep_id, False))

    def _on_span_combo_current_index_changed(self, _index: int) -> None:
        self.window.set_span(float(self.span_combo.currentData()))

    def _on_scroll_bar_value_changed(self, value: int) -> None:
        self.window.set_back(float(self.scroll_bar.maximum() - value))

    def _on_window_changed(self, *_args) -> None:
        self._sync_scroll_bar()
        for chart in self.charts():
            if chart.isVisible():
                chart.update()

    # ------------------------------------------------------------------ other machines (issue 17)

    def _list_nodes(self) -> None:
        self._calls.get("/api/nodes", self._on_nodes_listed, self._on_nodes_list_failed)

    def _on_nodes_listed(self, answer: object) -> None:
        nodes = answer.get("nodes") or [] if isinstance(answer, dict) else []
        choices = node_choices(nodes)
        if [self.node_combo.itemData(i) for i in range(self.node_combo.count())] == [v for _l, v in choices]:
            return
        self.node_combo.blockSignals(True)
        self.node_combo.clear()
        for label, value in choices:
            self.node_combo.addItem(label, value)
        index = self.node_combo.findData(self.node)
        if index < 0:  # the node charted was removed: back to this machine
            index = self.node_combo.findData(LOCAL)
        self.node_combo.setCurrentIndex(index)
        self.node_combo.blockSignals(False)
        self.set_node(self.node_combo.currentData())

    def _on_nodes_list_failed(self, error: ApiError) -> None:
        if error.status in (404, 405):  # a backend from before issue 17: this machine only
            self._node_list_timer.stop()
            self.node_combo.hide()

    def _on_node_combo_current_index_changed(self, _index: int) -> None:
        self.set_node(self.node_combo.currentData() or LOCAL)

    def set_node(self, node: str) -> None:
        """Chart ``node`` (``local``: this machine's stream) from now on; the charts start empty."""
        if node == self.node:
            return
        self.node = node
        self._retry.stop()
        self._node_timer.stop()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
        self._clear_charts()
        local = node == LOCAL
        # Loads and unloads are this machine's: listed and marked only on its charts.
        self.events_box.setVisible(local)
        for chart in (self.cpu_chart, self.mem_chart):
            chart.events = self.events if local else None
        if local:
            self._events_timer.start()
        else:
            self._events_timer.stop()
        self.banner.hide()
        if self._started and not self._closing:
            self.start()

    def _clear_charts(self) -> None:
        """Empty the store and drop the GPU and deployment sections (another machine's come from its data)."""
        store = self.store
        for series in store.series.values():
            series.clear()
        store.gpus.clear()
        store.deployments.clear()
        store.gpu_status = {}
        store.host_mem_total = None
        store.latest_time = None
        store.layout_version += 1
        for charts in self.gpu_charts.values():
            box = charts[0].parentWidget()
            self.gpu_layout.removeWidget(box)
            box.deleteLater()
        self.gpu_charts.clear()
        for card in self.cards.values():
            self.deployments_layout.removeWidget(card)
            card.deleteLater()
        self.cards.clear()
        self._names.clear()
        self._loads_on_request.clear()
        self._refresh()

    def poll_node(self) -> None:
        """Ask for the chosen node's newest stats (skipped while a poll is in flight)."""
        if self.node == LOCAL or self._node_polling or self._closing:
            return
        self._node_polling = True
        node = self.node

        def ok(snapshot: object) -> None:
            self._node_polling = False
            if node != self.node:
                return
            self.banner.hide()
            if isinstance(snapshot, dict):
                self.ingest(snapshot)

        def failed(error: ApiError) -> None:
            self._node_polling = False
            if node == self.node:
                self.banner.setText(f"No stats from {node}: {error}")
                self.banner.show()

        self._calls.get(f"/api/nodes/{quote(node, safe='')}/stats", ok, failed)

"""The deployments table: plain rows built from the API (testable without a window) and their Qt model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

from desktop import theme
from desktop.formatting import format_bytes
from desktop.lifecycle import last_events_text, memory_need_text, on_demand_note, policy_text
from desktop.nodes import ALL_NODES, filter_deployments, node_label, node_of

COLUMNS = ["Name", "Status", "Runtime", "Model", "GPU / VRAM", "CPU", "Memory", "Port", "Uptime", "Node"]
STATUS_COLUMN, MODEL_COLUMN = 1, 3
#: The machine a deployment runs on (issue 17); not in DeploymentRow.cells(), which keeps the figures.
NODE_COLUMN = COLUMNS.index("Node")
STATUS_ROLE = {"ready": "success", "failed": "danger", "stopped": "text_muted", "created": "text_muted",
               "paused": "text_muted", "unknown": "text_muted"}
RUNNING_STATES = {"running", "restarting"}


def parse_docker_time(text: str | None) -> float | None:
    """Seconds since the epoch from Docker's RFC 3339 time with nanoseconds; None for empty/zero times."""
    if not text or text.startswith("0001-"):
        return None
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        frac = "".join(c for c in frac if c.isdigit())[:6]
        stamp = datetime.fromisoformat(head + "+00:00")
        return stamp.timestamp() + (int(frac.ljust(6, "0")) / 1e6 if frac else 0.0)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@dataclass(frozen=True)
class DeploymentRow:
    """One deployment as the table shows it; ``data`` is the API's Deployment object."""

    data: dict
    stats: dict | None
    now: float

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def status(self) -> str:
        return self.data.get("status", "unknown")

    @property
    def running(self) -> bool:
        return self.data.get("state") in RUNNING_STATES

    @property
    def stale(self) -> bool:
        """The engine does not answer: this row is the last state the backend saw."""
        return bool(self.data.get("stale"))

    @property
    def loads_on_request(self) -> bool:
        """Unloaded (stopped) with on demand on: the next /v1 request for it loads it."""
        return bool(self.data.get("loads_on_request"))

    def status_text(self) -> str:
        if self.loads_on_request:
            text = "Unloaded (loads on request)"
        else:
            text = self.status.capitalize()
            note = on_demand_note(self.data, self.now)
            if note:
                text += f" · {note}"
        if self.stale:
            text += " · last seen"
        if self.stats and self.stats.get("running_on_cpu"):
            text += " · on CPU!"
        if self.status == "failed" and self.data.get("exit_code") is not None:
            text += f" (exit {self.data['exit_code']})"
        return text

    def gpu_text(self) -> str:
        gpus = self.data.get("gpus") or []
        vram = (self.stats or {}).get("vram_bytes")
        where = ("GPU " + ",".join(gpus)) if gpus else "CPU"
        return f"{where} · {format_bytes(vram)}" if vram else where

    def cpu_text(self) -> str:
        pct = (self.stats or {}).get("cpu_pct")
        return f"{pct:.0f} %" if pct is not None and self.running else "—"

    def memory_text(self) -> str:
        used = (self.stats or {}).get("mem_used_bytes")
        return format_bytes(used) if used is not None and self.running else "—"

    def uptime_text(self) -> str:
        started = parse_docker_time(self.data.get("started_at"))
        return human_duration(self.now - started) if started and self.running else "—"

    @property
    def node(self) -> str:
        """The node it runs on: ``local`` (this machine) or another machine's name."""
        return node_of(self.data)

    def node_text(self) -> str:
        return node_label(self.node)

    def cells(self) -> list[str]:
        d = self.data
        return [d.get("served_name") or d.get("name") or self.id, self.status_text(), d.get("recipe", ""),
                d.get("model", ""), self.gpu_text(), self.cpu_text(), self.memory_text(),
                str(d["host_port"]) if d.get("host_port") else "—", self.uptime_text()]


class DeploymentRows:
    """The table's content: deployments from ``GET /api/deployments`` joined with the latest stats."""

    def __init__(self) -> None:
        self.rows: list[DeploymentRow] = []
        self.stats: dict[str, dict] = {}
        self._deployments: list[dict] = []
        #: The node filter: ALL_NODES, ``local`` or a node's name.
        self.node = ALL_NODES

    def set_deployments(self, deployments: list[dict], now: float | None = None) -> None:
        self._deployments = sorted(deployments, key=lambda d: (d.get("served_name") or d.get("id", "")).lower())
        self._rebuild(now)

    def set_stats(self, snapshot: dict | None, now: float | None = None) -> None:
        self.stats = dict((snapshot or {}).get("deployments") or {})
        self._rebuild(now)

    def set_node(self, node: str, now: float | None = None) -> None:
        """Show only the deployments on ``node`` (ALL_NODES: every node's)."""
        self.node = node
        self._rebuild(now)

    def has_deployments(self) -> bool:
        """Whether any deployment is listed, whatever the filter shows."""
        return bool(self._deployments)

    def nodes(self) -> list[str]:
        """The nodes the deployments run on, whatever the filter."""
        return sorted({node_of(d) for d in self._deployments})

    def _rebuild(self, now: float | None) -> None:
        now = time.time() if now is None else now
        shown = filter_deployments(self._deployments, self.node)
        self.rows = [DeploymentRow(d, self.stats.get(d["id"]), now) for d in shown]

    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    def find(self, dep_id: str) -> DeploymentRow | None:
        return next((r for r in self.rows if r.id == dep_id), None)


class DeploymentTableModel(QAbstractTableModel):
    """A QAbstractTableModel over DeploymentRows; ``UserRole`` gives the deployment id."""

    def __init__(self, rows: DeploymentRows, parent=None):
        super().__init__(parent)
        self.content = rows
        self._shown_ids: list[str] = []

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.content.rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt override
                   role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self.content.rows):
            return None
        row = self.content.rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return row.node_text() if col == NODE_COLUMN else row.cells()[col]
        if role == Qt.ItemDataRole.UserRole:
            return row.id
        if role == Qt.ItemDataRole.ForegroundRole and row.stale:
            return theme.color("text_muted")
        if role == Qt.ItemDataRole.ForegroundRole and col == STATUS_COLUMN:
            on_cpu = row.stats and row.stats.get("running_on_cpu")
            if row.loads_on_request and not on_cpu:
                return theme.color("info")
            return theme.color("warning" if on_cpu else STATUS_ROLE.get(row.status, "info"))
        if role == Qt.ItemDataRole.ToolTipRole:
            d = row.data
            tip = [f"{d.get('served_name')} — {d.get('status')} ({d.get('state')})"]
            if row.stale:
                tip.append(f"Last state seen: Docker does not answer ({d.get('engine_error') or 'no reason given'}).")
            if d.get("message"):
                tip.append(d["message"])
            if d.get("endpoint"):
                tip.append(f"Container endpoint: {d['endpoint']}")
            if "on_demand" in d:  # a backend with models on demand (issue 14)
                tip.append(f"On demand: {policy_text(d)}")
                if memory_need_text(d):
                    tip.append(memory_need_text(d))
                tip += last_events_text(d)
            return "\n".join(tip)
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (5, 6, 7, 8):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def refreshed(self) -> None:
        """Tell views that the content changed: a cheap repaint when the rows are the same deployments."""
        ids = self.content.ids()
        if ids == self._shown_ids and ids:
            self.dataChanged.emit(self.index(0, 0), self.index(len(ids) - 1, len(COLUMNS) - 1))
        elif ids != self._shown_ids:
            self.beginResetModel()
            self._shown_ids = ids
            self.endResetModel()

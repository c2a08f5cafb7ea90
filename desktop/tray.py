"""The system tray icon: GPU summary in the tooltip, running deployments with Stop, open window, quit."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from desktop import theme
from desktop.formatting import format_bytes


def gpu_summary(engine: dict | None) -> str:
    """One line per GPU ("GPU 0 NVIDIA H100: 12.0 GB of 80.0 GB used"), or why there is none."""
    if not engine:
        return "Backend not connected"
    if not engine.get("reachable"):
        return f"Docker: {engine.get('reason') or 'not reachable'}"
    gpus = engine.get("gpus") or []
    if not gpus:
        return "No GPU: " + (engine.get("gpu_reason") or "none found")
    lines = []
    for g in gpus:
        total, free = g.get("memory_total_bytes"), g.get("memory_free_bytes")
        used = total - free if total is not None and free is not None else None
        lines.append(f"GPU {g['index']} {g.get('name') or ''}: {format_bytes(used)} of {format_bytes(total)} used")
    return "\n".join(lines)


class Tray(QObject):
    """A QSystemTrayIcon when the platform has a tray; without one (offscreen, some desktops) it does nothing.

    Signals:
        open_requested(): show and raise the main window.
        quit_requested(): quit the application.
        stop_requested(str): stop the deployment with this id.
    """

    open_requested = Signal()
    quit_requested = Signal()
    stop_requested = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon: QSystemTrayIcon | None = None
        self.menu: QMenu | None = None
        self.tooltip = "ModelDeck"
        self.running: list[dict] = []
        if not self.available:
            return
        self.menu = QMenu()
        self.icon = QSystemTrayIcon(theme.app_icon(), self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._on_icon_activated)
        self._rebuild_menu()
        self.icon.show()

    def update_engine(self, engine: dict | None) -> None:
        self.tooltip = "ModelDeck\n" + gpu_summary(engine)
        if self.icon is not None:
            self.icon.setToolTip(self.tooltip)

    def update_deployments(self, deployments: list[dict]) -> None:
        running = [d for d in deployments if d.get("state") == "running"]
        if [d["id"] for d in running] != [d["id"] for d in self.running]:
            self.running = running
            self._rebuild_menu()

    def _rebuild_menu(self) -> None:
        if self.menu is None:
            return
        self.menu.clear()
        self.menu.addAction(theme.icon("window"), "Open ModelDeck", self.open_requested.emit)
        self.menu.addSeparator()
        if not self.running:
            self.menu.addAction("No models running").setEnabled(False)
        for dep in self.running:
            sub = self.menu.addMenu(theme.icon("deployments"), dep.get("served_name") or dep["id"])
            dep_id = dep["id"]
            sub.addAction(theme.icon("stop"), "Stop", lambda dep_id=dep_id: self.stop_requested.emit(dep_id))
        self.menu.addSeparator()
        self.menu.addAction(theme.icon("quit"), "Quit ModelDeck", self.quit_requested.emit)

    def _on_icon_activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit()

    def shutdown(self) -> None:
        if self.icon is not None:
            self.icon.hide()
        if self.menu is not None:
            self.menu.deleteLater()
            self.menu = None

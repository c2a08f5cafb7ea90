"""Light and dark palettes, the style sheet, and icons recoloured to match the current theme."""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from PySide6.QtCore import QByteArray, QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtSvg import QSvgRenderer

from desktop.fonts import fixed_family

ASSETS = Path(__file__).resolve().parent.parent / "assets"
_EM = re.compile(r"(\d*\.?\d+)em\b")
MODES = ("system", "light", "dark")

PALETTES: dict[str, dict[str, str]] = {
    "light": {
        "window": "#f5f6fa", "surface": "#ffffff", "surface_alt": "#eef0f6", "border": "#d8dbe6",
        "text": "#1c1f2e", "text_muted": "#5e6377", "accent": "#4a5af0", "accent_hover": "#3a49d8",
        "accent_text": "#ffffff", "nav_bg": "#eceef5", "nav_sel": "#dde1ff", "success": "#1b8f5a",
        "warning": "#a8650b", "danger": "#cc3b3b", "info": "#2c67c7", "error_bg": "#fdeeee",
        "warn_bg": "#fff4dc", "info_bg": "#e9f0fc", "ok_bg": "#e3f5ec", "mono_bg": "#f2f4f8",
    },
    "dark": {
        "window": "#15171e", "surface": "#1d2029", "surface_alt": "#262a37", "border": "#353a4b",
        "text": "#e5e7ef", "text_muted": "#9ba1b5", "accent": "#7884ff", "accent_hover": "#8d97ff",
        "accent_text": "#10121f", "nav_bg": "#191b23", "nav_sel": "#2d3454", "success": "#43cf8f",
        "warning": "#e3b453", "danger": "#f17878", "info": "#70a9ff", "error_bg": "#3b2026",
        "warn_bg": "#3a3020", "info_bg": "#1e2a40", "ok_bg": "#1c3328", "mono_bg": "#111318",
    },
}


class ThemeNotifier(QObject):
    """Tells widgets that the theme changed, so they can recolour icons and custom paint.

    Signals:
        changed(str): the resolved scheme now in use, "light" or "dark".
    """

    changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.mode = "system"
        self.scheme = "light"


_notifier: ThemeNotifier | None = None
_icon_cache: dict[tuple[str, str], QIcon] = {}


def notifier() -> ThemeNotifier:
    """The process-wide notifier (created on first use, after the QApplication)."""
    global _notifier
    if _notifier is None:
        _notifier = ThemeNotifier()
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(_on_hints_color_scheme_changed)
    return _notifier


def _on_hints_color_scheme_changed(*_args) -> None:
    if _notifier is not None and _notifier.mode == "system":
        apply(_notifier.mode)


def resolve(mode: str) -> str:
    """'light' or 'dark' for a mode of MODES ('system' asks the platform)."""
    if mode in ("light", "dark"):
        return mode
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme() if hasattr(hints, "colorScheme") else None
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def color(role: str) -> QColor:
    """A colour of the palette in use, by role name ('danger', 'success', 'text_muted', ...)."""
    return QColor(PALETTES[notifier().scheme][role])


def apply(mode: str) -> str:
    """Apply a theme mode to the running application at once; returns the resolved scheme."""
    from PySide6.QtWidgets import QApplication

    note = notifier()
    note.mode = mode if mode in MODES else "system"
    scheme = resolve(note.mode)
    colors = PALETTES[scheme]
    app = QApplication.instance()
    app.setStyle("Fusion")
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: "window", QPalette.ColorRole.WindowText: "text",
        QPalette.ColorRole.Base: "surface", QPalette.ColorRole.AlternateBase: "surface_alt",
        QPalette.ColorRole.Text: "text", QPalette.ColorRole.Button: "surface",
        QPalette.ColorRole.ButtonText: "text", QPalette.ColorRole.Highlight: "accent",
        QPalette.ColorRole.HighlightedText: "accent_text", QPalette.ColorRole.ToolTipBase: "surface",
        QPalette.ColorRole.ToolTipText: "text", QPalette.ColorRole.PlaceholderText: "text_muted",
        QPalette.ColorRole.Link: "accent", QPalette.ColorRole.Mid: "border",
    }
    for role, name in roles.items():
        pal.setColor(role, QColor(colors[name]))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text, QColor(colors["text_muted"]))
    pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.ButtonText, QColor(colors["text_muted"]))
    app.setPalette(pal)
    template = Template((ASSETS / "themes" / "modeldeck.qss").read_text(encoding="utf-8"))
    values = {**colors, "scheme": scheme, "icons": (ASSETS / "icons").as_posix(), "mono_font": fixed_family()}
    app.setStyleSheet(scale_em(template.safe_substitute(values), em_px()))
    changed = scheme != note.scheme
    note.scheme = scheme
    if changed:
        note.changed.emit(scheme)
    return scheme


def em_px() -> float:
    """The application font's size in (device-independent) pixels: one 'em' of the style sheet."""
    from PySide6.QtGui import QFontInfo
    from PySide6.QtWidgets import QApplication

    return float(QFontInfo(QApplication.font()).pixelSize() or 13)


def scale_em(qss: str, em: float) -> str:
    """Turn the style sheet's 'em' lengths into pixels (Qt's font-size takes only px/pt; padding follows)."""
    return _EM.sub(lambda m: f"{max(1, round(float(m.group(1)) * em))}px", qss)


def icon(name: str, role: str = "text") -> QIcon:
    """An icon from assets/icons/<name>.svg drawn in the theme's ``role`` colour (cached per colour)."""
    hex_color = PALETTES[notifier().scheme].get(role, role)
    key = (name, hex_color)
    if key not in _icon_cache:
        path = ASSETS / "icons" / f"{name}.svg"
        svg = path.read_text(encoding="utf-8").replace("currentColor", hex_color)
        renderer = QSvgRenderer(QByteArray(svg.encode()))
        result = QIcon()
        for size in (16, 20, 24, 32, 48, 64, 128):
            pix = QPixmap(size, size)
            pix.fill(Qt.GlobalColor.transparent)
            painter = QPainter(pix)
            renderer.render(painter, QRectF(0, 0, size, size))
            painter.end()
            result.addPixmap(pix)
        _icon_cache[key] = result
    return _icon_cache[key]


def app_icon() -> QIcon:
    """The ModelDeck application icon (its own colours, the same in both themes)."""
    return icon("modeldeck", "text")

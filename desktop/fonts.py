"""The monospace font for code, logs and commands: one the system really has and really fixed-pitch."""

from __future__ import annotations

from functools import cache

from PySide6.QtGui import QFont, QFontDatabase, QFontInfo

#: Tried in this order when Qt's own fixed font is not fixed-pitch; any other fixed-pitch family follows.
PREFERRED = ("DejaVu Sans Mono", "Noto Mono", "Liberation Mono", "Ubuntu Mono", "Cascadia Mono",
             "Source Code Pro", "Hack", "Fira Mono", "Menlo", "Consolas", "Courier New")


def _is_fixed(font: QFont) -> bool:
    return QFontInfo(font).fixedPitch()  # what the font that actually gets used says, not the request


@cache
def fixed_font() -> QFont:
    """Qt's fixed font (``QFontDatabase.FixedFont``) when the font behind it is fixed-pitch, else the
    first fixed-pitch family installed, at the fixed font's size.

    Fontconfig's ``monospace`` alias may lead to a font it does not itself mark as monospaced
    (Debian's Noto Sans Mono, which ImageMagick's recommends bring, is one): code shown in it
    does not line up, so it is passed over. Cached: call after the QGuiApplication exists.
    """
    system = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if _is_fixed(system):
        return system
    installed = QFontDatabase.families()
    fixed = [f for f in installed if QFontDatabase.isFixedPitch(f)]
    for family in [f for f in PREFERRED if f in installed] + fixed:
        font = QFont(system)
        font.setFamilies([family])
        font.setStyleHint(QFont.StyleHint.TypeWriter)
        if _is_fixed(font):
            return font
    return system  # nothing fixed-pitch installed: the best the system offers


def fixed_family() -> str:
    """The family of :func:`fixed_font`, for style sheets."""
    return QFontInfo(fixed_font()).family()

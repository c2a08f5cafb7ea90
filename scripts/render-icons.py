"""Render assets/icons/modeldeck.svg into the PNG sizes desktops use and a multi-size .ico.

Writes assets/icons/hicolor/<n>x<n>/apps/modeldeck.png (the freedesktop icon theme layout that
scripts/install-desktop-entry copies) and assets/icons/modeldeck.ico (build.spec's EXE icon).
The results are committed; run this again after changing the SVG:

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/render-icons.py
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

ICONS = Path(__file__).resolve().parent.parent / "assets" / "icons"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)  # the ICO format stops at 256


def render(renderer: QSvgRenderer, size: int) -> bytes:
    """The SVG drawn into a transparent ``size``×``size`` square, as PNG bytes."""
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    data = QByteArray()
    buf = QBuffer(data)
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buf, "PNG")
    return bytes(data.data())


def ico(pngs: dict[int, bytes]) -> bytes:
    """A Windows .ico holding each PNG as is (PNG entries are valid since Windows Vista)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    entries, blobs = b"", b""
    offset = 6 + 16 * len(pngs)
    for size, png in sorted(pngs.items()):
        dim = 0 if size >= 256 else size  # 0 means 256
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset + len(blobs))
        blobs += png
    return header + entries + blobs


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - QImage painting needs one
    renderer = QSvgRenderer(str(ICONS / "modeldeck.svg"))
    if not renderer.isValid():
        print(f"cannot read {ICONS / 'modeldeck.svg'}", file=sys.stderr)
        return 1
    pngs = {size: render(renderer, size) for size in SIZES}
    for size, png in pngs.items():
        target = ICONS / "hicolor" / f"{size}x{size}" / "apps" / "modeldeck.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png)
    (ICONS / "modeldeck.ico").write_bytes(ico({s: pngs[s] for s in ICO_SIZES}))
    print(f"wrote {len(pngs)} PNGs under {ICONS / 'hicolor'} and {ICONS / 'modeldeck.ico'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

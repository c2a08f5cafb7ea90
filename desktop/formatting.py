"""How the desktop writes quantities: one byte format (binary, IEC units) for every page."""

from __future__ import annotations


def format_bytes(v: float | None) -> str:
    """``12.3 GiB``; ``?`` when unknown. Binary units, named as such, everywhere in the app."""
    if v is None:
        return "?"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(v) >= size:
            return f"{v / size:.1f} {unit}"
    return f"{v:.0f} B"

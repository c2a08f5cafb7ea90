"""How the Discover and Library pages write counts, rates, times left, parameters and dates (no Qt)."""

from __future__ import annotations

from datetime import datetime, timezone

from desktop.formatting import format_bytes


def format_count(n: int | None) -> str:
    """``1.2M``, ``34.5k``, ``812``; ``—`` when the Hub did not say (downloads, likes)."""
    if n is None:
        return "—"
    for suffix, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            text = f"{n / size:.1f}".removesuffix(".0")
            return f"{text}{suffix}"
    return str(int(n))


def format_rate(bps: float | None) -> str:
    """``12.3 MiB/s``; ``—`` before the first measurement."""
    if bps is None or bps < 0:
        return "—"
    return f"{format_bytes(bps)}/s"


def format_eta(seconds: float | None) -> str:
    """Time left as a person reads it: ``8 s``, ``3 min 05 s``, ``1 h 12 min``; ``—`` when unknown."""
    if seconds is None or seconds < 0 or seconds != seconds:  # NaN too
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def format_parameters(n: int | None) -> str:
    """A parameter count the way model cards write it: ``494M``, ``7.6B``; ``—`` when the header has none."""
    if not n:
        return "—"
    for suffix, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            value = n / size
            text = f"{value:.1f}".removesuffix(".0") if value < 100 else f"{value:.0f}"
            return f"{text}{suffix}"
    return str(n)


def format_context(n: int | None) -> str:
    """A context length in tokens: ``32,768``; ``—`` when unknown."""
    return f"{n:,}" if n else "—"


def parse_time(text: str | None) -> datetime | None:
    """An ISO 8601 time from the API (``Z`` or an offset; naive means UTC), or None."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def format_age(text: str | None, now: datetime | None = None) -> str:
    """How long ago: ``just now``, ``5 min ago``, ``3 h ago``, ``12 days ago``, else the date; ``—`` for never."""
    when = parse_time(text)
    if when is None:
        return "—"
    now = now or datetime.now(timezone.utc)
    s = (now - when).total_seconds()
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    if s < 60 * 86400:
        days = int(s // 86400)
        return f"{days} day{'s' * (days != 1)} ago"
    return when.date().isoformat()

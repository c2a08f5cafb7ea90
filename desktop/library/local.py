"""Local models (``GET /api/library``) as the Library page's rows, and its refusals in words (no Qt)."""

from __future__ import annotations

from desktop.formatting import format_bytes
from desktop.library.units import format_age, format_context, format_parameters

COLUMNS = ["Name", "Kind", "Quantization", "Parameters", "Context", "Size", "Where", "Last launched", "Used by"]
KINDS = {"gguf": "GGUF", "hf_snapshot": "Hub snapshot", "ollama": "Ollama"}


def library_cells(m: dict) -> list[str]:
    """One LocalModel as the table's cells (COLUMNS)."""
    g = m.get("gguf") or {}
    name = m.get("name") or m.get("repo_id") or m.get("path") or "?"
    return [name, KINDS.get(m.get("kind"), m.get("kind") or "?"),
            g.get("quantization") or m.get("variant") or "—", format_parameters(g.get("parameters")),
            format_context(g.get("context_length")), format_bytes(m.get("size_bytes")),
            m.get("location") or m.get("path") or "—", format_age(m.get("last_launched")),
            ", ".join(m.get("used_by") or []) or "—"]


def library_summary(models: list[dict], scanned_ms: float | None) -> str:
    """``3 models · 5.2 GiB on disk · listed in 12 ms``."""
    total = sum(m.get("size_bytes") or 0 for m in models)
    n = len(models)
    text = f"{n} model{'s' * (n != 1)} · {format_bytes(total)} on disk"
    return text + (f" · listed in {scanned_ms:.0f} ms" if scanned_ms is not None else "")


def delete_question(m: dict) -> str:
    """The confirmation's words: what goes, how much space it frees, and that it cannot be undone."""
    return (f"Delete “{m.get('name') or m.get('id')}” ({format_bytes(m.get('size_bytes'))}) from "
            f"{m.get('location') or m.get('path')}? The files are removed from disk; download them again to "
            "use the model later.")


def delete_refusal(m: dict, status: int, message: str, details: dict | None) -> str:
    """A refused delete in words. A 409 names the deployments that use the model and what to do."""
    if status == 409:
        users = [str(u) for u in ((details or {}).get("deployments") or (details or {}).get("used_by")
                                  or m.get("used_by") or [])]
        why = message.rstrip(".")
        unnamed = [u for u in users if u not in message]
        if unnamed:
            why += f" (used by {', '.join(unnamed)})"
        return (f"Cannot delete “{m.get('name') or m.get('id')}”: {why}. Remove "
                f"{'that deployment' if len(users) == 1 else 'those deployments'} on the Deployments page first.")
    return f"Could not delete “{m.get('name') or m.get('id')}”: {message}"


def launch_of(m: dict) -> tuple[str, str] | None:
    """The (recipe, model) a library entry launches with, when the backend gave one."""
    launch = m.get("launch") or {}
    if launch.get("recipe") and launch.get("model"):
        return launch["recipe"], launch["model"]
    return None

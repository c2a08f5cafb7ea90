"""Download jobs as the downloads panel shows them: progress words, and the list kept current from events (no Qt)."""

from __future__ import annotations

from desktop.formatting import format_bytes
from desktop.library.units import format_eta, format_rate

LIVE = ("queued", "running")
ENDS = ("done", "failed", "cancelled")


def download_title(d: dict) -> str:
    """``org/repo · Q4_K_M`` (or the repo alone when the whole set was asked for)."""
    return d.get("repo_id", "?") + (f" · {d['variant']}" if d.get("variant") else "")


def fraction(d: dict) -> float | None:
    """Bytes done over bytes in all, 0..1; None before the size is known."""
    total = d.get("bytes_total") or 0
    if total <= 0:
        return 1.0 if d.get("state") == "done" else None
    return max(0.0, min(1.0, (d.get("bytes_done") or 0) / total))


def progress_text(d: dict) -> str:
    """The line under a job's bar: what it did and what is left, in the words of its state."""
    state = d.get("state", "queued")
    done, total = format_bytes(d.get("bytes_done") or 0), format_bytes(d.get("bytes_total"))
    if state == "queued":
        return f"Waiting to start · {total}"
    if state == "running":
        return f"{done} of {total} · {format_rate(d.get('rate_bps'))} · {format_eta(d.get('eta_s'))} left"
    if state == "done":
        return f"Done · {total} in {d.get('target') or 'the cache'}"
    if state == "cancelled":
        return "Cancelled · partial files removed"
    return f"Failed: {d.get('error') or 'no reason given'}"


def files_text(d: dict) -> str:
    """One line per file of a job: ``model.safetensors: 1.5 MiB of 2.0 MiB`` (``✓`` when whole), for a tooltip."""
    lines = []
    for f in d.get("files") or []:
        done, size = f.get("bytes_done") or 0, f.get("size")
        mark = "✓ " if size is not None and done >= size else ""
        lines.append(f"{mark}{f.get('path', '?')}: {format_bytes(done)} of {format_bytes(size)}")
    return "\n".join(lines)


class Downloads:
    """The jobs the panel lists, newest first; events update them in place by id."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict] = {}

    def set_all(self, downloads: list[dict]) -> None:
        """Replace the list with ``GET /api/downloads``'s answer."""
        self.jobs = {d["id"]: d for d in downloads if d.get("id")}

    def update(self, d: dict) -> bool:
        """Apply one Download (an event or an answer); False when it is older than what is held.

        Events of one job arrive in order, but a list read may answer after a newer event:
        a job that has ended never goes back to running, and its bytes never go back.
        """
        old = self.jobs.get(d.get("id"))
        if old is not None:
            if old.get("state") in ENDS and d.get("state") in LIVE:
                return False
            if (old.get("state") == d.get("state") == "running"
                    and (d.get("bytes_done") or 0) < (old.get("bytes_done") or 0)):
                return False
        self.jobs[d["id"]] = d
        return True

    def ordered(self) -> list[dict]:
        """Running and queued jobs first, then the rest; newest first within each."""
        return sorted(self.jobs.values(), key=lambda d: (d.get("state") not in LIVE, _neg(d.get("created") or "")))

    def live_ids(self) -> list[str]:
        return [i for i, d in self.jobs.items() if d.get("state") in LIVE]

    def for_variant(self, repo_id: str, variant: str | None) -> dict | None:
        """The newest job for a repo's variant that is live or done, if any (a model page's Download button)."""
        jobs = [d for d in self.ordered() if d.get("repo_id") == repo_id and d.get("variant") == variant]
        return jobs[0] if jobs else None


def _neg(text: str) -> str:
    """Sort key that puts the later ISO time first (ISO times sort as text)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in text)

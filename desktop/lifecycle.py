"""Models on demand in words: idle time-outs, the countdown to a TTL unload, and load/unload/eviction events.

Plain Python (no Qt): the launch dialog, the Deployments table, the Monitor and the playground's
model pickers all say these things the same way, and the tests check them without a window.
The shapes are the backend's (issue 14): a Deployment's ``on_demand``, ``idle_ttl_s``,
``effective_idle_ttl_s``, ``pinned``, ``loads_on_request``, ``in_flight``, ``unload_at``,
``last_load``/``last_unload``/``last_eviction``, and ``GET /api/lifecycle``'s LifecycleEvent.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from desktop.formatting import format_bytes

#: Choices of "Unload when idle for": the backend's default (``idle_ttl_s`` null), never (0), or minutes.
TTL_DEFAULT, TTL_NEVER, TTL_MINUTES = "default", "never", "minutes"
#: The most the backend allows (30 days), in minutes.
MAX_TTL_MINUTES = 30 * 24 * 60
#: Presets the Deployments page offers in its menu (minutes).
TTL_PRESETS_MIN = (5, 15, 60)
#: Docker's memory limit: bytes, or a number with b, k, m or g (e.g. "512m", "2g").
MEM_LIMIT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)i?b?\s*$", re.IGNORECASE)
#: Docker refuses limits under 6 MiB; anything that small is a typo.
MIN_MEM_LIMIT = 6 * 1024 * 1024

EVENT_VERBS = {"load": "loaded", "load_failed": "failed to load", "unload": "unloaded", "evict": "evicted"}
EVENT_TITLES = {"load": "Load", "load_failed": "Load failed", "unload": "Unload", "evict": "Eviction"}
#: The palette role (desktop.theme) each kind of event is drawn in.
EVENT_ROLES = {"load": "success", "load_failed": "danger", "unload": "info", "evict": "warning"}


def parse_iso(text: str | None) -> float | None:
    """Seconds since the epoch from an ISO 8601 time (``Z`` or an offset; naive means UTC); None when empty or bad."""
    if not text or not isinstance(text, str):
        return None
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def duration_text(seconds: float) -> str:
    """A span for a person: ``45 s``, ``5 min``, ``1 h 30 min``, ``2 d 3 h``. Minutes round up past the first one
    (a countdown of 4 min 10 s reads "5 min": it has not reached 4 yet)."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{math.ceil(s / 60)} min" if s % 60 else f"{s // 60} min"
    if s < 86400:
        h, m = divmod(math.ceil(s / 60), 60)
        return f"{h} h" if m == 0 else f"{h} h {m:02d} min"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d" if h == 0 else f"{d} d {h} h"


def ttl_text(seconds: float | None) -> str:
    """An idle time-out as set: ``never`` for None or 0, else its span (``5 min``, ``1 min 30 s``: exact, not rounded)."""
    if not seconds:
        return "never"
    s = round(seconds)
    if 60 < s < 3600 and s % 60:
        return f"{s // 60} min {s % 60} s"
    return duration_text(s)


def unload_countdown(dep: dict, now: float | None = None) -> str | None:
    """``unloads in 4 min`` while a TTL unload is due (``unload_at``), ``unloads now`` once it is past; else None."""
    at = parse_iso(dep.get("unload_at"))
    if at is None:
        return None
    left = at - (time.time() if now is None else now)
    return "unloads now" if left <= 0.5 else f"unloads in {duration_text(left)}"


def on_demand_note(dep: dict, now: float | None = None) -> str:
    """What the Status column adds for on-demand behaviour: "unloaded (loads on request)", a countdown, "pinned"."""
    if dep.get("loads_on_request"):
        return "unloaded (loads on request)"
    if dep.get("pinned") and dep.get("ready"):
        return "pinned"
    if dep.get("ready") and dep.get("in_flight"):
        n = dep["in_flight"]
        return f"{n} request{'s' if n != 1 else ''} in flight"
    return unload_countdown(dep, now) or ""


def policy_text(dep: dict) -> str:
    """The deployment's on-demand settings in one line, for a tooltip."""
    parts = ["loads on request" if dep.get("on_demand", True) else "loads only when started by hand"]
    if dep.get("pinned"):
        parts.append("pinned: never unloaded by ModelDeck")
    else:
        set_ttl, applies = dep.get("idle_ttl_s"), dep.get("effective_idle_ttl_s")
        if set_ttl is None:
            parts.append(f"unloads when idle for {ttl_text(applies)} (the backend's default)" if applies
                         else "never unloads when idle (the backend's default)")
        else:
            parts.append(f"unloads when idle for {ttl_text(set_ttl)}" if set_ttl else "never unloads when idle")
    return " · ".join(parts)


def memory_need_text(dep: dict) -> str | None:
    """What the deployment counts as needing when models are swapped to make room, and why; None when not said.

    ``memory`` is ``{"need_bytes", "where": "gpu"|"host", "gpus", "basis"}``.
    """
    mem = dep.get("memory")
    if not isinstance(mem, dict):
        return None
    if mem.get("where") == "gpu":
        gpus = mem.get("gpus") or []
        where = f"GPU {', '.join(gpus)}" if gpus and gpus != ["all"] else "its GPUs"
    else:
        where = "host memory"
    basis = (mem.get("basis") or "").strip()
    need = mem.get("need_bytes")
    amount = format_bytes(need) if isinstance(need, (int, float)) else "an unknown amount"
    return f"Counted as needing {amount} of {where}" + (f" ({basis})" if basis else "")


def clock(at: float | None) -> str:
    """Local wall-clock time of an event, ``14:03:07``."""
    return "?" if at is None else time.strftime("%H:%M:%S", time.localtime(at))


def event_parts(event: dict) -> tuple[str, str]:
    """(what happened, why) of one LifecycleEvent: ("loaded in 2.1 s", "a /v1/chat/completions request for 'demo'")."""
    kind = event.get("kind", "")
    head = EVENT_VERBS.get(kind, kind or "changed")
    duration = event.get("duration_s")
    if kind in ("load", "load_failed") and isinstance(duration, (int, float)):
        head += f" {'in' if kind == 'load' else 'after'} {duration:.1f} s"
    if kind == "evict" and event.get("for_deployment"):
        head += f" for {event['for_deployment']}"
    return head, (event.get("reason") or "").strip()


def event_text(event: dict, with_name: bool = True) -> str:
    """One LifecycleEvent in a sentence: "demo loaded in 2.1 s: a /v1/chat/completions request for 'demo'"."""
    head, reason = event_parts(event)
    if with_name:
        head = f"{event.get('served_name') or event.get('deployment_id') or '?'} {head}"
    else:
        head = head[:1].upper() + head[1:]
    return f"{head}: {reason}" if reason else head


def last_events_text(dep: dict) -> list[str]:
    """Tooltip lines for a deployment's last load, unload and eviction (with when and why)."""
    lines = []
    for key, title in (("last_load", "Last load"), ("last_unload", "Last unload"), ("last_eviction", "Last eviction")):
        ev = dep.get(key)
        if isinstance(ev, dict):
            lines.append(f"{title} at {clock(parse_iso(ev.get('at')))}: {event_text(ev, with_name=False)}")
    return lines


def ttl_choice(seconds: float | None) -> tuple[str, int]:
    """The (choice, minutes) a form shows for an ``idle_ttl_s`` as set: default, never, or whole minutes."""
    if seconds is None:
        return TTL_DEFAULT, 15
    if seconds == 0:
        return TTL_NEVER, 15
    return TTL_MINUTES, max(1, round(seconds / 60))


def ttl_value(choice: str, minutes: int) -> float | None:
    """``idle_ttl_s`` for a choice: None (the backend's default), 0 (never), or the minutes in seconds.

    Raises:
        ValueError: minutes outside 1 minute to 30 days.
    """
    if choice == TTL_DEFAULT:
        return None
    if choice == TTL_NEVER:
        return 0.0
    if not 1 <= minutes <= MAX_TTL_MINUTES:
        raise ValueError(f"An idle time-out is 1 to {MAX_TTL_MINUTES:,} minutes (30 days); {minutes} is not.")
    return float(minutes * 60)


def mem_limit_value(text: str) -> tuple[str | int | None, str | None]:
    """A "Memory limit" field as the launch request's ``mem_limit``: (value, None) or (None, what is wrong).

    Empty means no limit. Plain digits are bytes (an int); "512m", "2g", "1.5g", "2GiB" go as Docker's
    notation ("2g"), which the backend and Docker read.
    """
    text = (text or "").strip()
    if not text:
        return None, None
    m = MEM_LIMIT_RE.match(text)
    if m is None:
        return None, (f"'{text}' is not a memory size. Give bytes or a number with k, m or g, "
                      "e.g. 512m or 2g, or leave it empty for no limit.")
    number, unit = float(m.group(1)), m.group(2).lower()
    size = number * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
    if size < MIN_MEM_LIMIT:
        return None, f"A memory limit of {text} is too small: Docker needs at least 6 MiB (e.g. 512m)."
    if unit in ("", "b"):
        return int(size), None
    return (f"{int(number)}{unit}" if number == int(number) else int(size)), None


def model_label(model: dict) -> str:
    """A playground picker's text for a ``/v1/models`` entry: the id, marked when it is not loaded yet."""
    state = model.get("state")
    if state == "unloaded":
        return f"{model['id']} (unloaded — loads on request)"
    if state == "loading":
        return f"{model['id']} (loading…)"
    return model["id"]


@dataclass(frozen=True)
class LifecycleEvent:
    """One load, failed load, unload or eviction, with its time in seconds since the epoch."""

    seq: int
    at: float
    kind: str
    deployment_id: str
    served_name: str
    data: dict

    @property
    def text(self) -> str:
        return event_text(self.data)

    @property
    def role(self) -> str:
        return EVENT_ROLES.get(self.kind, "text_muted")


class EventLog:
    """The lifecycle events seen so far, oldest first, fed by polls of ``GET /api/lifecycle?after=<last_seq>``.

    An event already held (same ``seq``) is not added twice, so an answer that overlaps the last
    one does no harm; ``limit`` bounds memory the way the backend bounds its own list.
    """

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self.events: list[LifecycleEvent] = []
        self.last_seq = 0
        self.version = 0  # grows whenever events are added (views repaint only then)

    def add(self, answer: dict) -> list[LifecycleEvent]:
        """Take one ``{"events": [...], "last_seq": n}`` answer; returns the events that were new."""
        if not isinstance(answer, dict):
            return []
        new: list[LifecycleEvent] = []
        for raw in answer.get("events") or []:
            if not isinstance(raw, dict) or not isinstance(raw.get("seq"), int) or raw["seq"] <= self.last_seq:
                continue
            at = parse_iso(raw.get("at"))
            if at is None:
                continue
            ev = LifecycleEvent(raw["seq"], at, str(raw.get("kind") or ""), str(raw.get("deployment_id") or ""),
                                str(raw.get("served_name") or raw.get("deployment_id") or ""), raw)
            new.append(ev)
            self.last_seq = ev.seq
        last = answer.get("last_seq")
        if isinstance(last, int) and last > self.last_seq:
            self.last_seq = last
        if new:
            self.events = (self.events + new)[-self.limit:]
            self.version += 1
        return new

    def between(self, t0: float, t1: float, deployment_id: str | None = None) -> list[LifecycleEvent]:
        """Events with ``t0 <= at <= t1``, of one deployment when given."""
        return [e for e in self.events if t0 <= e.at <= t1
                and (deployment_id is None or e.deployment_id == deployment_id)]

    def nearest(self, t: float, within: float, deployment_id: str | None = None) -> list[LifecycleEvent]:
        """Events within ``within`` seconds of ``t`` (what the pointer is on), nearest first."""
        hits = self.between(t - within, t + within, deployment_id)
        return sorted(hits, key=lambda e: abs(e.at - t))

    def newest(self, n: int) -> list[LifecycleEvent]:
        return list(reversed(self.events[-n:]))

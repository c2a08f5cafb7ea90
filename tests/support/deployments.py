"""Launching through a real backend's API, and waiting for the launch, for tests."""

from __future__ import annotations

import json

import httpx

from tests.support.sse import sse_events
from tests.support.waiting import wait_until


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def demo_body(served: str, **extra) -> dict:
    """The launch body for the demo model (``demo-tiny``) served as ``served``; ``extra`` adds fields."""
    return {"recipe": "demo", "model": "demo-tiny", "served_name": served, **extra}


def launch(url: str, token: str, body: dict, *, follow: bool = True, stop_at: str | None = None,
           timeout: float = 120.0) -> tuple[str, list[dict]]:
    """POST ``body`` to /api/deployments; (deployment id, its progress events).

    With ``follow`` the progress stream is read until the launch ends, or until phase ``stop_at``
    arrives; without it the events are [] and the launch goes on alone.
    """
    r = httpx.post(f"{url}/api/deployments", headers=_auth(token), timeout=30, json=body)
    assert r.status_code in (200, 202), r.text
    dep_id = r.json()["id"]
    events: list[dict] = []
    if follow:
        with httpx.stream("GET", f"{url}/api/deployments/{dep_id}/events", headers=_auth(token),
                          timeout=timeout) as s:
            for name, data in sse_events(s):
                if name != "progress":
                    continue
                events.append(json.loads(data))
                if stop_at is not None and events[-1]["phase"] == stop_at:
                    break
    return dep_id, events


def wait_ready(url: str, token: str, dep_id: str, timeout: float = 120.0) -> dict:
    """The deployment's view once it is ready; fails the test when it fails or ``timeout`` passes."""
    def ready() -> dict | None:
        d = httpx.get(f"{url}/api/deployments/{dep_id}", headers=_auth(token), timeout=10).json()
        assert d.get("status") != "failed", d
        return d if d.get("ready") else None

    return wait_until(ready, timeout, interval=0.2, what=f"deployment {dep_id} ready")


def launch_ready(url: str, token: str, body: dict, timeout: float = 120.0) -> dict:
    """POST ``body`` to /api/deployments (a new launch, or one of the same configuration) and wait until ready."""
    dep_id, _ = launch(url, token, body, follow=False)
    return wait_ready(url, token, dep_id, timeout)


def served_names(url: str, token: str) -> list[str]:
    """The model names ``/v1/models`` lists now."""
    return [m["id"] for m in httpx.get(f"{url}/v1/models", headers=_auth(token), timeout=10).json()["data"]]


def wait_served(url: str, token: str, name: str, timeout: float = 10.0) -> None:
    """Wait until ``/v1/models`` lists ``name`` (/v1 routing follows the backend's refresh loop)."""
    wait_until(lambda: name in served_names(url, token), timeout, interval=0.2, what=f"/v1/models to list {name}")

"""Launching through a real backend's API and waiting until the deployment is ready, for tests."""

from __future__ import annotations

import time

import httpx


def wait_ready(url: str, token: str, dep_id: str, timeout: float = 120.0) -> dict:
    """The deployment's view once it is ready; fails the test when it fails or ``timeout`` passes."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    while not (d := httpx.get(f"{url}/api/deployments/{dep_id}", headers=headers, timeout=10).json()).get("ready"):
        assert d.get("status") != "failed", d
        assert time.monotonic() < deadline, f"not ready within {timeout:.0f} s: {d}"
        time.sleep(0.2)
    return d


def launch_ready(url: str, token: str, body: dict, timeout: float = 120.0) -> dict:
    """POST ``body`` to /api/deployments (a new launch, or one of the same configuration) and wait until ready."""
    r = httpx.post(f"{url}/api/deployments", headers={"Authorization": f"Bearer {token}"}, timeout=30, json=body)
    assert r.status_code in (200, 202), r.text
    return wait_ready(url, token, r.json()["id"], timeout)


def wait_served(url: str, token: str, name: str, timeout: float = 10.0) -> None:
    """Wait until ``/v1/models`` lists ``name`` (/v1 routing follows the backend's refresh loop)."""
    deadline = time.monotonic() + timeout
    while name not in [m["id"] for m in httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"},
                                                  timeout=10).json()["data"]]:
        assert time.monotonic() < deadline, f"/v1/models does not list {name} after {timeout:.0f} s"
        time.sleep(0.2)

"""The one readiness probe: does a model server answer on its host port, and does it have its model."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from backend.labels import DeploymentLabels


@dataclass(frozen=True)
class ProbeResult:
    """The answer of one probe.

    Attributes:
        ok: every readiness path answered 200 (and the model check, when asked for).
        waiting_on: the path that did not answer yet ("" when ``ok``).
        why: what the model check answered instead of yes ("" unless that check failed).
    """

    ok: bool
    waiting_on: str = ""
    why: str = ""


class ReadinessProbe:
    """Asks a server on ``127.0.0.1:<host port>`` the questions its labels name.

    Used by the launch (waiting for a new server) and by the registry (finding a running
    server ready after a restart of either), so both decide "ready" the same way. Readiness
    is HTTP from here, not Docker health checks: the runtime images do not all ship curl,
    and the probe must reach the address the proxy will use. Safe to call from any thread.
    """

    def __init__(self, timeout: float = 2.0, connect_timeout: float = 1.0):
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout), trust_env=False)

    def close(self) -> None:
        self._client.close()

    def check(self, host_port: int | None, labels: DeploymentLabels, *, model_check: bool = True) -> ProbeResult:
        """Whether the server answers its readiness paths and, with ``model_check``, has its model.

        Never raises: a server that does not answer is simply not ready.
        """
        paths = labels.readiness_paths
        if not host_port:
            return ProbeResult(False, paths[0])
        for path in paths:
            try:
                if self._client.get(f"http://127.0.0.1:{host_port}{path}").status_code != 200:
                    return ProbeResult(False, path)
            except httpx.HTTPError:
                return ProbeResult(False, path)
        if model_check and labels.model_check is not None:
            has_model, why = self.has_model(host_port, labels.model_check)
            if not has_model:
                return ProbeResult(False, labels.model_check["path"], why)
        return ProbeResult(True)

    def has_model(self, host_port: int, check: dict) -> tuple[bool, str]:
        """Ask the server whether it has the model (the recipe's ``readiness.model_check``); (yes, why not)."""
        try:
            r = self._client.request(check["method"], f"http://127.0.0.1:{host_port}{check['path']}",
                                     json=check.get("body") if check["method"] != "GET" else None)
        except httpx.HTTPError as exc:
            return False, f"{check['method']} {check['path']} did not answer ({type(exc).__name__})"
        if r.status_code == 200:
            return True, ""
        return False, f"{check['method']} {check['path']} answered {r.status_code}: {r.text[:200]}"

"""Cold-start overhead: what loading a model on request through ModelDeck adds to the container's own start.

For one deployment of each runtime (the demo; llama.cpp with the tiny GGUF of
scripts/make-tiny-gguf), launched with ``on_demand`` on through a real ``modeldeck-backend``
process on a free loopback port with its own home folder and the real Docker engine:

- **through ModelDeck**: the deployment is unloaded (``POST /api/deployments/{id}/stop``, then
  waited for until it ``loads_on_request``); the time from writing a streamed
  ``POST /v1/chat/completions`` naming it to the first ``data:`` line of the answer (SSE comment
  lines the backend sends while it loads are not the answer);
- **directly**: the same container, stopped the same way, started with ``docker start`` here and
  polled every few milliseconds with the backend's own readiness probe (its health path, models
  path and model check, from its labels) on the host port Docker bound; the time from the start
  call to the first "ready".

The figure is the median of (through ModelDeck − directly) over ``repetitions`` pairs, the two
sides alternating in order. The direct side's own start → first byte (the same streamed request
sent to the container the moment it is ready) is reported beside it: the model's first token is
in the ModelDeck side and not in the contract's baseline.

``python -m bench.cold_start [--quick]`` measures this row alone (``python -m bench`` runs every row).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench.targets import REPO, free_port

TOKEN = "bench-cold-start-token-0123456789"
GOAL_MS = 100.0
PROMPT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "stream": True}
RUNTIMES = ("demo", "llama-cpp")


class ColdStartError(RuntimeError):
    """The measurement could not be made (a launch failed, a request was refused); says what and why."""


class Backend:
    """A real ``modeldeck-backend`` process (``python -m backend.server``) in a temporary home."""

    def __init__(self, model_dirs: list[Path]):
        self.tmp = tempfile.TemporaryDirectory(prefix="modeldeck-bench-cold-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(self.tmp.name) / "backend.log"
        env = {**os.environ, "MODELDECK_HOME": str(Path(self.tmp.name) / "home"), "MODELDECK_TOKEN": TOKEN,
               "PYTHONUNBUFFERED": "1", "MODELDECK_MODEL_DIRS": os.pathsep.join(str(d) for d in model_dirs)}
        env.pop("MODELDECK_IDLE_TTL_S", None)  # nothing unloads by itself while it is measured
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "backend.server", "--port", str(self.port),
                                          "--log-level", "warning"], cwd=REPO, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=httpx.Timeout(60, read=600), trust_env=False)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise ColdStartError(f"the backend exited with {self.proc.returncode}: {self._tail()}")
            try:
                if self.http.get("/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ColdStartError(f"the backend did not answer within 60 s: {self._tail()}")
            time.sleep(0.05)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.tmp.cleanup()

    def deployment(self, dep_id: str) -> dict:
        r = self.http.get(f"/api/deployments/{dep_id}")
        if r.status_code != 200:
            raise ColdStartError(f"GET /api/deployments/{dep_id}: {r.status_code} {r.text[:300]}")
        return r.json()

    def wait_for(self, dep_id: str, what: str, check, timeout: float = 240.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            d = self.deployment(dep_id)
            if d.get("status") == "failed":
                raise ColdStartError(f"{dep_id} failed while waiting for {what}: {d.get('message')}")
            if check(d):
                return d
            if time.monotonic() > deadline:
                raise ColdStartError(f"{dep_id}: no {what} within {timeout:.0f} s (last: {d.get('status')})")
            time.sleep(0.05)

    def launch(self, body: dict) -> dict:
        r = self.http.post("/api/deployments", json=body)
        if r.status_code not in (200, 202):
            raise ColdStartError(f"launch of {body['recipe']}: {r.status_code} {r.text[:400]}")
        return self.wait_for(r.json()["id"], "ready", lambda d: d.get("ready"))

    def unload(self, dep_id: str) -> None:
        r = self.http.post(f"/api/deployments/{dep_id}/stop")
        if r.status_code != 200:
            raise ColdStartError(f"stop of {dep_id}: {r.status_code} {r.text[:300]}")
        self.wait_for(dep_id, "unloaded (loads on request)",
                      lambda d: d.get("loads_on_request") and d.get("state") not in ("running", "restarting"), 60)

    def remove(self, dep_id: str) -> None:
        try:
            self.http.delete(f"/api/deployments/{dep_id}", timeout=60)
        except httpx.HTTPError:
            pass


def first_data_ms(http: httpx.Client, url: str, body: dict, headers: dict | None = None) -> float:
    """Milliseconds from sending a streamed chat request to the first ``data:`` line of its answer; reads it all."""
    t0 = time.perf_counter()
    first = None
    with http.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise ColdStartError(f"POST {url}: {r.status_code} {r.read()[:300]!r}")
        for line in r.iter_lines():
            if first is None and line.startswith("data:"):
                first = time.perf_counter()
                if "error" in line[:40]:
                    raise ColdStartError(f"POST {url} answered an error event: {line[:300]}")
    if first is None:
        raise ColdStartError(f"POST {url}: the stream ended without an answer")
    return (first - t0) * 1000


def direct_start_ms(container, labels, probe, body: dict) -> tuple[float, float]:
    """(start → ready, start → first byte) of the stopped ``container``, in ms, started here with ``docker start``."""
    t0 = time.perf_counter()
    container.start()
    port = None
    deadline = time.monotonic() + 240
    while True:
        if port is None:
            container.reload()
            bound = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{labels.internal_port}/tcp") or []
            port = next((int(b["HostPort"]) for b in bound if b.get("HostPort")), None)
        if port is not None and probe.check(port, labels).ok:
            ready = time.perf_counter()
            break
        if time.monotonic() > deadline:
            raise ColdStartError(f"{container.name} was not ready within 240 s of docker start")
        time.sleep(0.005)
    with httpx.Client(timeout=httpx.Timeout(60, read=600), trust_env=False) as direct:
        first = first_data_ms(direct, f"http://127.0.0.1:{port}{labels.openai_base}/chat/completions",
                              {**body, "model": labels.served_name})
    return (ready - t0) * 1000, (ready - t0) * 1000 + first


def _measure_one(backend: Backend, engine, recipe: str, model: str, repetitions: int, log) -> dict:
    from backend.labels import DeploymentLabels
    from backend.readiness import ReadinessProbe

    served = f"bench-cold-{recipe}-{uuid.uuid4().hex[:6]}"
    dep = backend.launch({"recipe": recipe, "model": model, "served_name": served, "on_demand": True,
                          "idle_ttl_s": 0, "pinned": False})
    probe = ReadinessProbe(timeout=2.0, connect_timeout=0.5)
    try:
        body = {**PROMPT, "model": served}
        first_data_ms(backend.http, "/v1/chat/completions", body)  # warm: connections, code paths
        container = engine.containers.get(dep["container_id"])
        labels = DeploymentLabels.decode(container.labels)
        cold, ready, first_byte = [], [], []
        for rep in range(repetitions):
            for side in (("modeldeck", "direct") if rep % 2 == 0 else ("direct", "modeldeck")):
                backend.unload(dep["id"])
                if side == "modeldeck":
                    cold.append(first_data_ms(backend.http, "/v1/chat/completions", body))
                else:
                    r, f = direct_start_ms(container, labels, probe, body)
                    ready.append(r)
                    first_byte.append(f)
            log(f"  cold start {recipe}, repetition {rep + 1}: through ModelDeck {cold[-1]:.0f} ms, "
                f"container start → ready {ready[-1]:.0f} ms (→ first byte {first_byte[-1]:.0f} ms)")
    finally:
        probe.close()
        backend.remove(dep["id"])
    overheads = [c - r for c, r in zip(cold, ready)]
    # Beside the contract's figure: the same difference against the container's own first byte, which
    # holds the model's first token after its start as the ModelDeck side does.
    vs_first_byte = [c - f for c, f in zip(cold, first_byte)]
    return {"overhead_ms": statistics.median(overheads), "overheads_ms": overheads, "cold_ms": cold,
            "direct_ready_ms": ready, "direct_first_byte_ms": first_byte,
            "overhead_vs_first_byte_ms": statistics.median(vs_first_byte), "repetitions": repetitions}


def _tiny_gguf(folder: Path) -> Path:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "make-tiny-gguf"), str(folder / "tiny")],
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise ColdStartError(f"scripts/make-tiny-gguf failed: {run.stderr[-500:]}")
    return Path(run.stdout.strip())


def measure(repetitions: int = 10, runtimes: tuple[str, ...] = RUNTIMES, log=print) -> dict:
    """The row's figures: per runtime, the median overhead and every pair; a runtime that cannot be measured
    here (llama.cpp's image not built) says why instead."""
    import docker

    from backend.local_images import load_local_build
    from backend.settings import Settings

    engine = docker.from_env()
    out: dict = {"runtimes": {}, "repetitions": repetitions, "goal_ms": GOAL_MS}
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-gguf-") as models:
        plans: list[tuple[str, str]] = []
        for runtime in runtimes:
            if runtime == "demo":
                plans.append(("demo", "demo-tiny"))
                continue
            tag = load_local_build(Settings().catalog_dir, "llama-cpp").tag
            try:
                engine.images.get(tag)
            except docker.errors.ImageNotFound:
                out["runtimes"][runtime] = {"why": f"not measured: llama.cpp's image {tag} is not built here "
                                                   "(.venv/bin/python -m backend.local_images llama-cpp)"}
                continue
            plans.append((runtime, str(_tiny_gguf(Path(models)))))
        backend = Backend([Path(models)])
        try:
            for recipe, model in plans:
                log(f"measuring the cold-start overhead of {recipe} ({repetitions} pairs)")
                try:
                    out["runtimes"][recipe] = _measure_one(backend, engine, recipe, model, repetitions, log)
                except ColdStartError as exc:
                    out["runtimes"][recipe] = {"error": str(exc)}
                    log(f"  cold start {recipe}: FAILED {exc}")
        finally:
            backend.close()
            engine.close()
    medians = [r["overhead_ms"] for r in out["runtimes"].values() if "overhead_ms" in r]
    out["overhead_ms"] = max(medians) if medians else None  # the row's value: the worst runtime's median
    return out


def row_cells(r: dict) -> tuple[str, str, float | None, bool | None]:
    """(ModelDeck cell, details, value, met) of the report's row, from ``measure``'s result."""
    runtimes = r.get("runtimes") or {}
    cells, details = [], []
    for name, x in runtimes.items():
        if "overhead_ms" in x:
            vs_first = x.get("overhead_vs_first_byte_ms")
            if vs_first is None:  # results written before that figure was added
                vs_first = statistics.median(c - f for c, f in zip(x["cold_ms"], x["direct_first_byte_ms"]))
            cells.append(f"{name} {x['overhead_ms']:.0f} ms")
            details.append(f"{name}: through ModelDeck median {statistics.median(x['cold_ms']):.0f} ms, container "
                           f"start → ready {statistics.median(x['direct_ready_ms']):.0f} ms (→ first byte "
                           f"{statistics.median(x['direct_first_byte_ms']):.0f} ms; overhead against that "
                           f"{vs_first:.0f} ms), {x['repetitions']} pairs")
        else:
            cells.append(f"{name} —")
            details.append(f"{name}: {x.get('why') or x.get('error')}")
    value = r.get("overhead_ms")
    measured = [x for x in runtimes.values() if "overhead_ms" in x]
    failed = any("error" in x for x in runtimes.values())
    ok = None if not measured else (not failed and all(x["overhead_ms"] <= GOAL_MS for x in measured))
    return (" · ".join(cells) or r.get("error", "—")), "<br>".join(details) or r.get("error", ""), value, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold_start", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs, the demo only")
    parser.add_argument("--repetitions", type=int, help="pairs per runtime (default 10; quick 2)")
    args = parser.parse_args(argv)
    reps = args.repetitions or (2 if args.quick else 10)
    result = measure(reps, ("demo",) if args.quick else RUNTIMES,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    cell, details, value, ok = row_cells(result)
    print(json.dumps(result, indent=1))
    print(f"cold-start overhead (goal ≤ {GOAL_MS:g} ms): {cell} — {'met' if ok else 'missed' if ok is False else '—'}")
    print(details.replace("<br>", "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

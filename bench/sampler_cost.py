"""The stats sampler's cost: the real StatsSampler at 1 Hz over 10 running labelled containers, in its own process.

``python -m bench.sampler_cost --probe ID,ID,...`` is the probe: it builds the real
sampler with a fixed ContainerRef source and runs it until its stdin closes. The
benchmark measures the probe's CPU time and dockerd's over the same window, with psutil.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

from bench.targets import REPO

LABEL = "modeldeck.test-run"
IMAGES = ("modeldeck/demo-base:bookworm", "python:3.12-slim", "python:3.11-slim", "debian:bookworm-slim")


def _pick_image(client) -> str:
    for name in IMAGES:
        try:
            client.images.get(name)
            return name
        except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound and friends
            continue
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith("modeldeck/demo"):
                return tag
    raise RuntimeError(f"no local image to run 'sleep' in (looked for {', '.join(IMAGES)})")


class SleepingContainers:
    """``count`` tiny containers running ``sleep 600``, labelled for this run, removed on exit pass or fail."""

    def __init__(self, count: int = 10, image: str | None = None):
        self.count = count
        self.run_label = f"bench-{uuid.uuid4().hex[:12]}"
        self.client = None
        self.ids: list[str] = []
        self.image = image

    def __enter__(self) -> "SleepingContainers":
        import docker

        self.client = docker.from_env()
        try:
            self.image = self.image or _pick_image(self.client)
            for i in range(self.count):
                c = self.client.containers.run(self.image, ["sleep", "600"], detach=True,
                                               labels={LABEL: self.run_label}, network_mode="none",
                                               name=f"{self.run_label}-{i}", auto_remove=False)
                self.ids.append(c.id)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.client is None:
            return
        for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}={self.run_label}"}):
            try:
                c.remove(force=True)
            except Exception:  # noqa: BLE001 - remove the others anyway
                pass
        self.client.close()
        self.client = None


def dockerd_process() -> psutil.Process | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == "dockerd":
            return proc
    return None


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def measure(seconds: float, baseline_s: float, count: int = 10, image: str | None = None) -> dict:
    """Run the sampler probe over ``count`` containers; its CPU and dockerd's extra CPU, in % of one core."""
    with SleepingContainers(count, image) as containers:
        dockerd = dockerd_process()
        time.sleep(1.0)  # let the engine settle after the starts
        dockerd_base = None
        if dockerd is not None:
            c0, t0 = _cpu_s(dockerd), time.monotonic()
            time.sleep(baseline_s)
            dockerd_base = (_cpu_s(dockerd) - c0) / (time.monotonic() - t0) * 100
        with tempfile.TemporaryDirectory(prefix="modeldeck-bench-sampler-") as home:
            probe = subprocess.Popen([sys.executable, "-m", "bench.sampler_cost", "--probe", ",".join(containers.ids),
                                      "--home", home], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            try:
                first = probe.stdout.readline().strip()  # after the first complete tick
                if not first.startswith("ready"):
                    raise RuntimeError(f"the sampler probe did not start: {first!r}")
                time.sleep(1.0)
                me = psutil.Process(probe.pid)
                p0, d0, t0 = _cpu_s(me), _cpu_s(dockerd) if dockerd else 0.0, time.monotonic()
                time.sleep(seconds)
                p1, d1, t1 = _cpu_s(me), _cpu_s(dockerd) if dockerd else 0.0, time.monotonic()
            finally:
                probe.stdin.close()
                try:
                    probe.wait(10)
                except subprocess.TimeoutExpired:
                    probe.kill()
                    probe.wait()
            tail = (probe.stdout.read() or "").strip()
            ticks = int(tail.split()[-1]) if tail.startswith("ticks") else None
        window = t1 - t0
        dockerd_during = (d1 - d0) / window * 100 if dockerd else None
        return {
            "containers": len(containers.ids), "image": containers.image, "window_s": window,
            "sampler_cpu_pct": (p1 - p0) / window * 100,
            "ticks": ticks, "per_container_cgroup_read": first.split()[-1],
            "dockerd_cpu_pct_baseline": dockerd_base, "dockerd_cpu_pct_during": dockerd_during,
            "dockerd_cpu_pct_delta": (dockerd_during - dockerd_base) if dockerd is not None else None,
        }


def probe(ids: list[str], home: str) -> None:
    from pathlib import Path

    from backend.metrics import RequestLog
    from backend.stats.models import ContainerRef
    from backend.stats.sampler import StatsSampler

    refs = [ContainerRef(container_id=cid, deployment_id=f"bench-{i}", wants_gpu=False, ready=True)
            for i, cid in enumerate(ids)]
    sampler = StatsSampler(container_source=lambda: refs, request_log=RequestLog(), interval=1.0,
                           data_path=Path(home))
    sampler.start()
    while sampler.latest() is None:
        time.sleep(0.05)
    found = sum(1 for d in sampler.latest().deployments.values() if d.mem_used_bytes is not None)
    print(f"ready {found}/{len(refs)}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    seq = sampler.latest().seq
    sampler.stop()
    print(f"ticks {seq}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler_cost")
    parser.add_argument("--probe", required=True, help="comma-separated container ids")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    probe([i for i in args.probe.split(",") if i], args.home)


if __name__ == "__main__":
    main()

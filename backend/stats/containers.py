"""Per-container CPU and memory read straight from cgroup files, and host PIDs mapped to containers."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# cgroup v1 reports "no limit" as the largest page-aligned signed 64-bit value.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class ContainerUsage:
    """One container's cgroup figures; None where the cgroup (or the file) was not found."""

    cpu_pct: float | None
    mem_used_bytes: int | None
    mem_limit_bytes: int | None


_NO_USAGE = ContainerUsage(None, None, None)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) such as memory.stat or cpu.stat."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


class CgroupReader:
    """Reads a container's cgroup under either cgroup v1 or v2, decided once from the mounts.

    Docker's cgroup paths depend on the driver: ``docker/<id>`` with cgroupfs,
    ``system.slice/docker-<id>.scope`` with systemd; both are tried, and where a
    container was found is remembered.
    """

    def __init__(self, root: Path = CGROUP_ROOT):
        """Args:
            root: where the cgroup filesystems are mounted.
        """
        self.root = Path(root)
        self.version = 2 if (self.root / "cgroup.controllers").exists() else 1
        if self.version == 1:
            # "cpu,cpuacct" on most distributions, separate "cpuacct" on some.
            self._cpu_root = next((self.root / d for d in ("cpu,cpuacct", "cpuacct,cpu", "cpuacct")
                                   if (self.root / d).is_dir()), self.root / "cpuacct")
            self._mem_root = self.root / "memory"
        self._dirs: dict[str, tuple[Path, Path] | None] = {}

    @staticmethod
    def _relative_dirs(container_id: str) -> tuple[str, ...]:
        return (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope")

    def _find(self, container_id: str) -> tuple[Path, Path] | None:
        if container_id in self._dirs:
            found = self._dirs[container_id]
            if found is None or found[0].is_dir():
                return found
        found = None
        for rel in self._relative_dirs(container_id):
            if self.version == 2:
                d = self.root / rel
                if d.is_dir():
                    found = (d, d)
                    break
            else:
                cpu, mem = self._cpu_root / rel, self._mem_root / rel
                if cpu.is_dir() or mem.is_dir():
                    found = (cpu, mem)
                    break
        if found is not None:
            self._dirs[container_id] = found
        return found

    def forget(self, keep: set[str]) -> None:
        """Drop what is remembered about containers not in ``keep``."""
        for cid in list(self._dirs):
            if cid not in keep:
                del self._dirs[cid]

    def cpu_usage_ns(self, container_id: str) -> int | None:
        """Total CPU time the container has used, in nanoseconds; None when not found."""
        dirs = self._find(container_id)
        if dirs is None:
            return None
        if self.version == 1:
            return _read_int(dirs[0] / "cpuacct.usage")
        usec = _read_keyed(dirs[0] / "cpu.stat").get("usage_usec")
        return None if usec is None else usec * 1000

    def memory(self, container_id: str) -> tuple[int | None, int | None]:
        """The container's memory use without reclaimable page cache, and its limit.

        Returns:
            ``(used_bytes, limit_bytes)``; the limit is None when there is none, and both
            are None when the cgroup is not found.
        """
        dirs = self._find(container_id)
        if dirs is None:
            return None, None
        mem = dirs[1]
        if self.version == 1:
            usage = _read_int(mem / "memory.usage_in_bytes")
            limit = _read_int(mem / "memory.limit_in_bytes")
            cache_key = "total_inactive_file"
        else:
            usage = _read_int(mem / "memory.current")
            try:
                raw = (mem / "memory.max").read_text().strip()
                limit = None if raw == "max" else int(raw)
            except (OSError, ValueError):
                limit = None
            cache_key = "inactive_file"
        if usage is not None:
            # As `docker stats` does: inactive file cache can be dropped at any moment,
            # so it is not memory the container needs.
            stat = _read_keyed(mem / "memory.stat")
            inactive = stat.get(cache_key, stat.get("inactive_file", 0))
            usage = usage - inactive if inactive < usage else usage
        if limit is not None and limit >= _V1_UNLIMITED:
            limit = None
        return usage, limit


class ContainerSource:
    """CPU percent (from deltas between calls) and memory of containers, by container id."""

    def __init__(self, reader: CgroupReader | None = None, clock=time.monotonic):
        """Args:
            reader: the cgroup reader; one over ``/sys/fs/cgroup`` when None.
            clock: monotonic seconds, for tests.
        """
        self.reader = reader or CgroupReader()
        self._clock = clock
        self._prev_cpu: dict[str, tuple[float, int]] = {}

    def sample(self, container_ids: list[str]) -> dict[str, ContainerUsage]:
        """Measure the given containers now.

        Args:
            container_ids: Docker ids of the containers to measure.
        Returns:
            Usage by container id. CPU percent is None on a container's first sample
            and whenever its cgroup is not found; nothing here raises for a missing one.
        """
        now = self._clock()
        out: dict[str, ContainerUsage] = {}
        for cid in container_ids:
            try:
                out[cid] = self._one(cid, now)
            except Exception as exc:  # one odd container must not stop the others
                log.debug("cannot read cgroup of %s: %s", cid[:12], exc)
                out[cid] = _NO_USAGE
        keep = set(container_ids)
        for cid in list(self._prev_cpu):
            if cid not in keep:
                del self._prev_cpu[cid]
        self.reader.forget(keep)
        return out

    def _one(self, cid: str, now: float) -> ContainerUsage:
        used_ns = self.reader.cpu_usage_ns(cid)
        cpu_pct = None
        if used_ns is not None:
            prev = self._prev_cpu.get(cid)
            self._prev_cpu[cid] = (now, used_ns)
            if prev is not None and now > prev[0] and used_ns >= prev[1]:
                # Percent of one core, as `docker stats` shows: 2 busy cores read 200.
                cpu_pct = round((used_ns - prev[1]) / ((now - prev[0]) * 1e9) * 100.0, 1)
        else:
            self._prev_cpu.pop(cid, None)
        mem_used, mem_limit = self.reader.memory(cid)
        return ContainerUsage(cpu_pct, mem_used, mem_limit)


def container_id_of_pid(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The Docker container a host process runs in, from ``/proc/<pid>/cgroup``.

    Args:
        pid: a process id in the host's PID namespace (as NVML reports them).
        proc: where procfs is mounted.
    Returns:
        The 64-hex container id, or None when the process is gone or not in a container.
    """
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return None
    # The last id is the innermost container when containers are nested.
    ids = _CONTAINER_ID.findall(text)
    return ids[-1] if ids else None

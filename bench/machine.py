"""What the benchmark ran on: CPU, cores, memory, kernel, Python and the versions that matter."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess

import psutil


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(args: list[str]) -> str | None:
    if shutil.which(args[0]) is None:
        return None
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + out.stderr).strip()
    m = re.search(r"\d+\.\d+(\.\d+)?", text)
    return m.group(0) if m else text.splitlines()[0] if text else None


def describe(extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """A flat, printable description of this machine and software."""
    mem = psutil.virtual_memory().total / 2**30
    info = {
        "CPU": _cpu_model(),
        "cores": f"{psutil.cpu_count(logical=False) or '?'} physical / {os.cpu_count()} logical",
        "memory": f"{mem:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "OS": _os_release(),
        "Python": platform.python_version(),
    }
    for dist in ("fastapi", "starlette", "uvicorn", "httpx", "uvloop", "httptools"):
        info[dist] = _version(dist) or "not installed"
    info["wrk"] = _tool_version(["wrk", "-v"]) or "not installed"
    info["nginx"] = _tool_version(["nginx", "-v"]) or "not installed"
    info["Docker engine"] = _tool_version(["docker", "version", "--format", "{{.Server.Version}}"]) or "not reachable"
    for k, v in (extra or {}).items():
        info[k] = v or "not installed"
    return info


def _os_release() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()

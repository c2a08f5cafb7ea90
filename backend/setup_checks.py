"""The first-run check: is this machine ready to launch models, and if not, the exact fix for each part."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backend.engine import GPU_RUNTIME_HINT, EngineStatus
from backend.secrets_store import HF_TOKEN, read_secret, secret_path
from backend.settings import Settings
from backend.stats.models import GpuStatus

Level = Literal["pass", "warn", "fail"]
LOW_SPACE_BYTES = 20 * 1024**3  # a 7B model in 16-bit weights is about 15 GB
HF_TOKEN_FIX = ("Create a read token at https://huggingface.co/settings/tokens and enter it in "
                "Help → First-run check (or PUT /api/setup/hf-token).")


@dataclass(frozen=True)
class Check:
    """One line of the first-run check; ``fix`` is what to do when ``level`` is not "pass"."""

    id: str
    title: str
    level: Level
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.level == "pass"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def check_engine(status: EngineStatus) -> Check:
    """Docker reachable; when not, the engine's own reason and fix (not installed / not running / permission)."""
    if status.reachable:
        what = f"{(status.kind or 'docker').capitalize()} {status.version or ''}".strip()
        return Check("engine", "Docker engine", "pass", f"{what} answers at {status.endpoint}.")
    return Check("engine", "Docker engine", "fail",
                 status.reason or f"The Docker engine at {status.endpoint} does not answer.",
                 status.hint or "Start Docker ('sudo systemctl start docker') or set MODELDECK_DOCKER_HOST.")


def check_gpu(status: EngineStatus, gpu: GpuStatus | None) -> Check:
    """An NVIDIA driver on the host (NVML) and a GPU runtime in Docker (nvidia runtime or CDI devices)."""
    title = "GPU for model containers"
    driver_ok = bool(gpu and gpu.available)
    if gpu is None:
        driver = "NVIDIA driver: not sampled yet."
    elif gpu.available:
        driver = f"NVIDIA driver {gpu.driver_version or ''} found.".replace("  ", " ")
    else:
        driver = f"{(gpu.reason or 'No NVIDIA driver found: NVML does not answer').rstrip('.')}."
    if not status.reachable:
        runtime = "Docker GPU runtime: unknown (the engine does not answer)."
    elif status.gpu_runtime:
        via = "nvidia runtime" if "nvidia" in status.runtimes else "CDI devices"
        runtime = f"Docker GPU runtime: present ({via})."
    else:
        runtime = "Docker GPU runtime: missing (no 'nvidia' runtime, no nvidia.com/gpu CDI devices)."
    if driver_ok and status.reachable and status.gpu_runtime:
        return Check("gpu", title, "pass", f"{driver} {runtime}")
    if driver_ok and status.reachable:
        fix = ("Install the NVIDIA Container Toolkit, run 'sudo nvidia-ctk runtime configure --runtime=docker' "
               "and restart Docker ('sudo systemctl restart docker').")
    else:
        fix = GPU_RUNTIME_HINT
    # A warning, not a failure: CPU runtimes (the demo, llama.cpp, Ollama) still work.
    return Check("gpu", title, "warn", f"{driver} {runtime} Models run on the CPU only.", fix)


def check_hf_token(home: Path) -> Check:
    """Whether a Hugging Face token is available to launches (never its value)."""
    title = "Hugging Face token"
    if read_secret(home, HF_TOKEN):
        return Check("hf_token", title, "pass", f"Stored in ModelDeck ({secret_path(home, HF_TOKEN)}); "
                     "launches of recipes that use HF_TOKEN get it.")
    if os.environ.get(HF_TOKEN):
        return Check("hf_token", title, "pass", "Set in the backend's environment (HF_TOKEN).")
    return Check("hf_token", title, "warn",
                 "No token: public models download fine; gated models (for example Llama or Gemma) fail.",
                 HF_TOKEN_FIX)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_cache(kind: str, settings: Settings, status: EngineStatus) -> Check:
    """Where the ``kind`` model cache lives, and the free space there."""
    title = f"Model cache ({kind})"
    env = f"MODELDECK_CACHE_DIR_{kind.upper()}"
    folder = settings.cache_dirs.get(kind)
    if folder is not None:
        folder = folder.expanduser()
        where, measured = f"Folder {folder}", _nearest_existing(folder)
        fix_more = f"Free space there, or point {env} at a bigger disk."
    else:
        where = f"Docker volume modeldeck-cache-{kind}"
        local = status.reachable and status.endpoint.startswith("unix://") and status.data_root
        measured = Path(status.data_root) if local and Path(status.data_root).exists() else None
        if measured is None:
            return Check(f"cache:{kind}", title, "pass",
                         f"{where} (on the engine's host); free space unknown.",
                         None)
        where += f" in Docker's data root {measured}"
        fix_more = f"Free space there ('docker system prune'), or set {env} to a folder on a bigger disk."
    try:
        usage = shutil.disk_usage(measured)
    except OSError as exc:
        return Check(f"cache:{kind}", title, "warn", f"{where}; free space unknown ({exc.strerror or exc}).",
                     f"Make sure the folder exists and is yours, or set {env}.")
    detail = f"{where}: {_size(usage.free)} free of {_size(usage.total)}."
    if usage.free < LOW_SPACE_BYTES:
        return Check(f"cache:{kind}", title, "warn", detail + " Large models may not fit.", fix_more)
    return Check(f"cache:{kind}", title, "pass", detail)


def check_private_files(settings: Settings) -> Check:
    """The API token file and stored secrets are readable by their owner only (mode 0600)."""
    title = "Token and secret files are private"
    files = [settings.token_path, secret_path(settings.home, HF_TOKEN)]
    present = [p for p in files if p.exists()]
    if os.name == "nt":
        return Check("private_files", title, "pass", "Windows: the per-user folder is private.")
    if not present:
        return Check("private_files", title, "pass",
                     "No token file: this backend uses a fixed token (MODELDECK_TOKEN).")
    loose = [p for p in present if p.stat().st_mode & 0o077]
    if loose:
        return Check("private_files", title, "fail",
                     "Readable by others: " + ", ".join(f"{p} (mode {p.stat().st_mode & 0o777:o})" for p in loose),
                     "chmod 600 " + " ".join(str(p) for p in loose))
    return Check("private_files", title, "pass", "Mode 0600: " + ", ".join(str(p) for p in present) + ".")


def run_checks(settings: Settings, status: EngineStatus, gpu: GpuStatus | None, cache_kinds) -> list[Check]:
    """Every check, in the order a person fixes them."""
    checks = [check_engine(status), check_gpu(status, gpu), check_hf_token(settings.home)]
    checks += [check_cache(kind, settings, status) for kind in sorted(set(cache_kinds))]
    checks.append(check_private_files(settings))
    return checks

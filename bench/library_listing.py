"""Library listing: ``GET /api/library`` with a model folder holding a multi-GiB GGUF, made sparse for the purpose.

The file is a real GGUF: its header (architecture, context length, file type, and tensor
infos whose data add up to the file's size) is written with the ``gguf`` package, and the
data region after it is a hole (``truncate``), so the file is N GiB on ``ls`` and a few KiB on
disk. A listing that read tensor data would read N GiB of zeros; one that reads the header
only answers in milliseconds. The figure is the median wall time of ``GET /api/library``,
seen by a client, over ``runs`` requests after one warm-up, from the real ``modeldeck-backend``
(``python -m backend.server``) started with that folder as its model folder and every cache a
(empty) host folder, so no helper container is started for a volume and the time is the
listing's own.

    python -m bench.library_listing [--gib 8] [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.targets import TOKEN, _spawn, _wait_until_up, free_port

GIB = 1 << 30
ARCH = "llama"
CONTEXT = 8192
FILE_TYPE_Q8_0 = 7  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0
TENSORS = 64  # the declared data is split across this many tensor infos, as a real model's is


def write_sparse_gguf(path: Path, size_bytes: int) -> int:
    """A GGUF of ``size_bytes``: a real header and tensor infos (Q8_0), the data region sparse.

    Returns the declared parameter count (elements of all tensors).
    """
    import gguf

    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name("bench-sparse")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(4096)
    writer.add_block_count(TENSORS)
    writer.add_head_count(32)
    writer.add_file_type(FILE_TYPE_Q8_0)
    # Q8_0: blocks of 32 weights in 34 bytes; a row of 4096 weights is 4352 bytes (the shape is given in bytes).
    row_bytes = 4096 // 32 * 34
    rows = max(1, (size_bytes - 64 * 1024) // TENSORS // row_bytes)
    params = 0
    for i in range(TENSORS):
        writer.add_tensor_info(f"blk.{i}.ffn_down.weight", (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes,
                               raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        params += rows * 4096
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, size_bytes)  # the data region: a hole, read as zeros
    return params


def measure(gib: float = 8.0, runs: int = 7, log=print) -> dict:
    """The row's figures: median and each run's seconds, the backend's own ``scanned_ms``, and problems found."""
    with tempfile.TemporaryDirectory(prefix="modeldeck-bench-library-") as tmp:
        root = Path(tmp)
        models, home = root / "models", root / "home"
        models.mkdir()
        gguf_path = models / f"bench-sparse-{gib:g}GiB-Q8_0.gguf"
        size = int(gib * GIB)
        params = write_sparse_gguf(gguf_path, size)
        on_disk = os.stat(gguf_path).st_blocks * 512
        log(f"  library_listing: {gguf_path.name} is {size / GIB:.1f} GiB, {on_disk / 1024:.0f} KiB on disk")
        env = {**os.environ, "MODELDECK_HOME": str(home), "MODELDECK_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1",
               "MODELDECK_MODEL_DIRS": str(models)}
        for kind in ("huggingface", "ollama"):
            (root / f"cache-{kind}").mkdir()
            env[f"MODELDECK_CACHE_DIR_{kind.upper()}"] = str(root / f"cache-{kind}")
        port = free_port()
        proc = _spawn([sys.executable, "-m", "backend.server", "--port", str(port), "--log-level", "warning"],
                      root / "backend.log", env)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            _wait_until_up(f"{base}/api/health", proc, 60, headers, log=root / "backend.log")
            times: list[float] = []
            scanned: list[float] = []
            problems: list[str] = []
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
                for i in range(runs + 1):
                    t0 = time.perf_counter()
                    r = client.get("/api/library")
                    elapsed = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise RuntimeError(f"GET /api/library: {r.status_code} {r.text[:300]}")
                    answer = r.json()
                    if i == 0:
                        problems = _problems(answer, gguf_path, size, params)
                        continue  # the warm-up
                    times.append(elapsed)
                    if answer.get("scanned_ms") is not None:
                        scanned.append(float(answer["scanned_ms"]))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except Exception:  # noqa: BLE001 - a backend that will not stop is killed
                proc.kill()
        return {"gib": gib, "runs": runs, "median_s": statistics.median(times), "times_s": times,
                "scanned_ms_median": statistics.median(scanned) if scanned else None,
                "file_bytes": size, "on_disk_bytes": on_disk, "problems": problems}


def _problems(answer: dict, path: Path, size: int, params: int) -> list[str]:
    """What the listing got wrong about the file (not listed, wrong size, header not read)."""
    entry = next((m for m in answer.get("models") or [] if m.get("path", "").endswith(path.name)
                  or m.get("name") == path.name), None)
    if entry is None:
        return [f"{path.name} is not listed ({len(answer.get('models') or [])} models listed)"]
    problems = []
    if entry.get("size_bytes") != size:
        problems.append(f"size {entry.get('size_bytes')} != {size}")
    meta = entry.get("gguf") or {}
    if meta.get("architecture") != ARCH:
        problems.append(f"architecture {meta.get('architecture')!r}, not {ARCH!r}")
    if meta.get("context_length") != CONTEXT:
        problems.append(f"context length {meta.get('context_length')}, not {CONTEXT}")
    if meta.get("parameters") not in (None, params):
        problems.append(f"parameters {meta.get('parameters')}, not {params}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.library_listing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=8.0, help="size of the sparse GGUF (default 8)")
    parser.add_argument("--runs", type=int, default=7, help="timed requests after one warm-up (default 7)")
    args = parser.parse_args(argv)
    result = measure(args.gib, args.runs, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

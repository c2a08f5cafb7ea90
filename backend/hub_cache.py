"""Writing into the Hugging Face hub cache layout: in a host folder, or as a tar stream into the cache volume.

The layout is the one ``huggingface_hub`` writes and llama.cpp (``common/hf-cache.cpp``), vLLM,
SGLang and TGI read::

    hub/models--ORG--NAME/blobs/<etag>                         the bytes (etag: sha256 for LFS files)
    hub/models--ORG--NAME/snapshots/<commit>/<path>  ->  ../../blobs/<etag>   (relative link)
    hub/models--ORG--NAME/refs/<revision>                      the commit ("main" -> 40 hex digits)

A volume is written through the engine (``Engine.put_into_volume``: a created, never started
helper container and the archive API), never through the engine's data folder, so Docker
Desktop (whose volumes live in its VM) works the same.
"""

from __future__ import annotations

import json
import os
import posixpath
import secrets as _random
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backend.engine import Engine
from backend.errors import ModelDeckError
from backend.settings import Settings

CACHE_KIND = "huggingface"
VOLUME = f"modeldeck-cache-{CACHE_KIND}"
VOLUME_TARGET = "/cache"
HUB_FOLDER = "hub"
HELPER_HOME_LABEL = "modeldeck.helper.home"
CHUNK = 1 << 20


@dataclass(frozen=True)
class CacheFile:
    """One file of a snapshot to place: its blob name and, unless the blob is in the cache already, its bytes."""

    path: str  # in the repository
    etag: str  # the blob's name
    staged: Path | None  # None: the blob is in the cache already; only the snapshot link is made


def repo_folder(repo_id: str) -> str:
    return "models--" + repo_id.replace("/", "--")


def helper_labels(settings: Settings) -> dict[str, str]:
    """Labels of this backend's helper containers: its home's id, so a restart removes only its own leftovers."""
    from backend.launch_plan import home_id

    return {**settings.extra_labels, HELPER_HOME_LABEL: home_id(settings)}


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that no reader sees half of it."""
    tmp = path.with_name(f".{path.name}.{_random.token_hex(4)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def place_in_folder(cache: Path, repo_id: str, revision: str, commit: str, files: list[CacheFile]) -> None:
    """Move staged files into a host cache folder's hub layout (a rename on the same disk), link them, set the ref."""
    repo = cache / HUB_FOLDER / repo_folder(repo_id)
    for f in files:
        blob = repo / "blobs" / f.etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if f.staged is not None:
            if f.staged.stat().st_dev == blob.parent.stat().st_dev:
                os.replace(f.staged, blob)
            else:
                tmp = blob.with_name(blob.name + ".incomplete")
                shutil.copyfile(f.staged, tmp)
                os.replace(tmp, blob)
        pointer = repo / "snapshots" / commit / f.path
        pointer.parent.mkdir(parents=True, exist_ok=True)
        if pointer.is_symlink() or pointer.exists():
            pointer.unlink()
        os.symlink(os.path.relpath(blob, pointer.parent), pointer)
    if revision != commit:
        ref = repo / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(ref, commit)


def hub_archive(repo_id: str, revision: str, commit: str, files: list[CacheFile]) -> Iterator[bytes]:
    """The files as a tar stream in the hub layout (blobs, snapshot links, ref), read from staging as it goes."""
    base = f"{HUB_FOLDER}/{repo_folder(repo_id)}"
    now = time.time()

    def entry(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = "", mode: int = 0o644) -> bytes:
        info = tarfile.TarInfo(name)
        info.type, info.size, info.linkname, info.mode, info.mtime = kind, size, link, mode, now
        return info.tobuf(format=tarfile.PAX_FORMAT)

    def padding(size: int) -> bytes:
        return b"\0" * (-size % tarfile.BLOCKSIZE)

    snapshot = f"{base}/snapshots/{commit}"
    dirs = {HUB_FOLDER, base, f"{base}/blobs", f"{base}/snapshots", snapshot, f"{base}/refs"}
    for f in files:
        parent = posixpath.dirname(f"{snapshot}/{f.path}")
        while parent.startswith(snapshot + "/"):
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    for d in sorted(dirs):
        yield entry(d + "/", tarfile.DIRTYPE, mode=0o755)
    for f in files:
        if f.staged is not None:
            size = f.staged.stat().st_size
            yield entry(f"{base}/blobs/{f.etag}", size=size)
            with open(f.staged, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
            yield padding(size)
        pointer = f"{snapshot}/{f.path}"
        yield entry(pointer, tarfile.SYMTYPE, link=posixpath.relpath(f"{base}/blobs/{f.etag}", posixpath.dirname(pointer)))
    if revision != commit:
        ref = commit.encode()
        yield entry(f"{base}/refs/{revision}", size=len(ref))
        yield ref + padding(len(ref))
    yield b"\0" * (tarfile.BLOCKSIZE * 2)


def place_in_volume(engine: Engine, image: str, settings: Settings, repo_id: str, revision: str, commit: str,
                    files: list[CacheFile]) -> None:
    """Stream the files into the cache volume's hub layout through a helper container of ``image``."""
    engine.put_into_volume(image, VOLUME, hub_archive(repo_id, revision, commit, files),
                           labels=helper_labels(settings), target=VOLUME_TARGET)


_VOLUME_STATE = """\
import json, os, sys
s = os.statvfs('/cache')
d = os.path.join('/cache', 'hub', sys.argv[1], 'blobs')
b = {n: os.path.getsize(os.path.join(d, n)) for n in (os.listdir(d) if os.path.isdir(d) else [])}
print(json.dumps({'free': s.f_bavail * s.f_frsize, 'blobs': b}))
"""


def volume_state(engine: Engine, image: str, settings: Settings, repo_id: str) -> tuple[int, dict[str, int]]:
    """Free bytes in the cache volume, and the blobs (name -> size) ``repo_id`` has there.

    Raises:
        ModelDeckError: the helper container failed (its error output is in the message).
    """
    code, out, err = engine.run_in_volume(image, VOLUME, ["python3", "-c", _VOLUME_STATE, repo_folder(repo_id)],
                                          labels=helper_labels(settings), target=VOLUME_TARGET, timeout=60)
    if code != 0:
        raise ModelDeckError(f"Could not read the cache volume {VOLUME}: {err.strip()[-300:]}",
                             hint="Check that Docker runs; `docker volume inspect " + VOLUME + "` shows the volume.")
    data = json.loads(out.strip().splitlines()[-1])
    return int(data["free"]), {k: int(v) for k, v in data["blobs"].items()}

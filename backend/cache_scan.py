"""Reading and pruning model caches on disk: GGUF headers, Hugging Face hub folders, Ollama manifests.

Standard library only, and self-contained on purpose: the library runs these functions in the
backend for host folders, and sends this module's own source to a short-lived helper container
(``python3 -c``) to run them on a Docker volume, so a cache in a volume (Docker Desktop keeps
them in its VM) is read without ever touching the engine's data folder.

Only headers are read: a GGUF's metadata and tensor table, never its tensor data, so a
folder of multi-gigabyte files lists in a few milliseconds per file.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys

# GGUF metadata value types (ggml/include/gguf.h, enum gguf_type): fixed widths by type id.
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_MAX_ITEMS = 10_000_000  # more keys, tensors or array items than any real model has
_MAX_STRING = 100 * 1024 * 1024
_U64 = struct.Struct("<Q")
HF_HUB = "hub"
OLLAMA_MANIFESTS = os.path.join("models", "manifests")
OLLAMA_BLOBS = os.path.join("models", "blobs")


class _Buffer:
    """The start of a file, read in growing blocks: a header is parsed from memory, not by a read per field."""

    BLOCK = 1 << 20

    def __init__(self, fh):
        self._fh = fh
        self._data = b""
        self.pos = 0

    def _need(self, n: int) -> None:
        end = self.pos + n
        if end > len(self._data):
            fh = self._fh
            fh.seek(len(self._data))
            more = fh.read(max(end - len(self._data), self.BLOCK, len(self._data)))
            self._data += more
            if end > len(self._data):
                raise ValueError("truncated")

    def read(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        self._need(size)
        value = struct.unpack_from("<" + fmt, self._data, self.pos)[0]
        self.pos += size
        return value

    def skip(self, n: int) -> None:
        self.pos += n  # checked by the next read

    def _length(self) -> int:
        n = self.read("Q")
        if n > _MAX_STRING:
            raise ValueError("string too long")
        return n

    def string(self) -> str:
        n = self._length()
        self._need(n)
        raw = self._data[self.pos:self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_string(self) -> None:
        n = self._length()
        self.pos += n

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings (a tokenizer's vocabulary): the hot loop of a header, kept tight."""
        unpack, data, pos = _U64.unpack_from, self._data, self.pos
        for _ in range(count):
            if pos + 8 > len(data):
                self.pos = pos
                self._need(8)
                data = self._data
            n = unpack(data, pos)[0]
            if n > _MAX_STRING:
                raise ValueError("string too long")
            pos += 8 + n
        self.pos = pos


def gguf_header(path: str) -> dict | None:
    """A GGUF file's facts from its header: architecture, name, parameters, context length, file type.

    The tensor table gives the exact parameter count (the product of each tensor's dimensions);
    arrays (the tokenizer's tokens and scores) are skipped, not decoded.

    Returns:
        ``{"architecture", "name", "parameters", "context_length", "block_count", "file_type"}``
        (each may be None), or None when the file is not a readable GGUF v2/v3.
    """
    try:
        with open(path, "rb") as fh:
            buf = _Buffer(fh)
            read, string, skip_string = buf.read, buf.string, buf.skip_string

            def value(kind: int):
                if kind in _SCALAR:
                    return read(_SCALAR[kind])
                if kind == _STRING:
                    return string()
                if kind == _ARRAY:
                    item, count = read("I"), read("Q")
                    if count > _MAX_ITEMS:
                        raise ValueError("array too long")
                    if item in _SCALAR:
                        buf.skip(count * struct.calcsize("<" + _SCALAR[item]))
                    elif item == _STRING:
                        buf.skip_strings(count)
                    else:
                        for _ in range(count):
                            value(item)
                    return None
                raise ValueError(f"unknown GGUF type {kind}")

            if fh.read(4) != b"GGUF":
                return None
            buf.pos = 4
            if read("I") not in (2, 3):
                return None
            n_tensors, n_kv = read("Q"), read("Q")
            if n_tensors > _MAX_ITEMS or n_kv > _MAX_ITEMS:
                return None
            meta: dict = {}
            for _ in range(n_kv):
                key = string()
                meta[key] = value(read("I"))
            params = 0
            for _ in range(n_tensors):
                skip_string()
                dims = read("I")
                if dims > 8:
                    return None
                count = 1
                for _ in range(dims):
                    count *= read("Q")
                params += count
                buf.skip(12)  # type u32, offset u64
    except (OSError, ValueError, struct.error, RecursionError):
        return None
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def number(key: str):
        v = meta.get(key)
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else None

    name = meta.get("general.name")
    return {"architecture": arch, "name": name if isinstance(name, str) else None, "parameters": params,
            "context_length": number(f"{arch}.context_length") if arch else None,
            "block_count": number(f"{arch}.block_count") if arch else None,
            "file_type": number("general.file_type")}


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _stat(path: str) -> tuple[int, float]:
    st = os.stat(path)
    return st.st_size, st.st_mtime


def scan_ggufs(root: str, prune: tuple[str, ...] = ()) -> list[dict]:
    """Every ``*.gguf`` regular file under ``root`` (symlinks not followed), with its header facts.

    Args:
        prune: folder names (relative to ``root``) not to enter (the hub cache, listed on its own).
    """
    out = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        dirs[:] = sorted(d for d in dirs if os.path.normpath(os.path.join(rel_folder, d)) not in prune)
        for name in sorted(files):
            path = os.path.join(folder, name)
            if not name.lower().endswith(".gguf") or os.path.islink(path):
                continue
            try:
                size, mtime = _stat(path)
            except OSError:
                continue
            out.append({"path": os.path.relpath(path, root), "size": size, "mtime": mtime,
                        "gguf": gguf_header(path)})
    return out


def scan_hub(root: str) -> list[dict]:
    """The model repositories of a Hugging Face hub cache folder (``<root>/models--ORG--NAME``).

    Returns:
        One dict per repository: ``folder``, ``repo_id``, ``refs`` (name -> commit) and
        ``snapshots`` (commit -> files: ``path``, ``blob`` (the blob's name, None for a plain
        file), ``size``, ``mtime``, ``gguf`` header facts for ``.gguf`` files).
    """
    repos = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return repos
    for folder in names:
        if not folder.startswith("models--"):
            continue
        repo_path = os.path.join(root, folder)
        refs: dict = {}
        refs_path = os.path.join(repo_path, "refs")
        for ref_folder, _dirs, ref_files in os.walk(refs_path):
            for ref in ref_files:
                try:
                    with open(os.path.join(ref_folder, ref), encoding="utf-8") as fh:
                        refs[os.path.relpath(os.path.join(ref_folder, ref), refs_path)] = fh.read().strip()
                except (OSError, UnicodeDecodeError):
                    continue
        snapshots: dict = {}
        snaps_path = os.path.join(repo_path, "snapshots")
        try:
            commits = sorted(os.listdir(snaps_path))
        except OSError:
            commits = []
        for commit in commits:
            files = []
            base = os.path.join(snaps_path, commit)
            for folder_path, _dirs, names_in in os.walk(base):
                for name in sorted(names_in):
                    path = os.path.join(folder_path, name)
                    blob = os.path.basename(os.readlink(path)) if os.path.islink(path) else None
                    try:
                        size, mtime = _stat(path)  # follows the link to the blob
                    except OSError:
                        continue  # a dangling link: its blob is gone
                    files.append({"path": os.path.relpath(path, base).replace(os.sep, "/"), "blob": blob,
                                  "size": size, "mtime": mtime,
                                  "gguf": gguf_header(path) if name.lower().endswith(".gguf") else None})
            snapshots[commit] = files
        repos.append({"folder": folder, "repo_id": folder[len("models--"):].replace("--", "/"),
                      "refs": refs, "snapshots": snapshots})
    return repos


def scan_ollama(root: str) -> list[dict]:
    """The models of an Ollama folder (``<root>/models/manifests/<host>/<namespace>/<name>/<tag>``).

    Returns:
        One dict per manifest: ``manifest`` (its path under ``root``), ``host``, ``namespace``,
        ``model``, ``tag``, ``size`` (all layers), ``mtime``, and ``gguf`` (the model layer's header).
    """
    out = []
    base = os.path.join(root, OLLAMA_MANIFESTS)
    for folder, _dirs, files in os.walk(base):
        for tag in sorted(files):
            path = os.path.join(folder, tag)
            parts = os.path.relpath(path, base).split(os.sep)
            if len(parts) != 4:
                continue
            try:
                with open(path, encoding="utf-8") as fh:
                    manifest = json.load(fh)
                layers = manifest["layers"]
                size = sum(int(layer["size"]) for layer in layers)
                model = [str(layer["digest"]) for layer in layers
                         if str(layer.get("mediaType", "")).endswith(".model")]
                mtime = os.stat(path).st_mtime
            except (OSError, ValueError, KeyError, TypeError):
                continue
            blob = os.path.join(root, OLLAMA_BLOBS, model[0].replace(":", "-")) if model else None
            out.append({"manifest": os.path.relpath(path, root), "host": parts[0], "namespace": parts[1],
                        "model": parts[2], "tag": parts[3], "size": size, "mtime": mtime,
                        "gguf": gguf_header(blob) if blob else None})
    return out


def scan_cache(root: str, kind: str) -> dict:
    """What a cache folder of ``kind`` ("huggingface", "ollama", anything else) holds."""
    if kind == "huggingface":
        hub = os.path.join(root, HF_HUB)
        # ``<root>/hub/models--*`` (HF_HOME's layout: huggingface_hub, llama.cpp, vLLM, SGLang) and
        # ``<root>/models--*`` (TGI mounts the cache as its hub folder itself, /data).
        repo_folders = tuple(n for n in _listdir(root) if n.startswith("models--"))
        return {"hubs": [{"prefix": HF_HUB, "repos": scan_hub(hub)}, {"prefix": "", "repos": scan_hub(root)}],
                "ggufs": scan_ggufs(root, prune=(HF_HUB, *repo_folders))}
    if kind == "ollama":
        return {"ollama": scan_ollama(root)}
    return {"ggufs": scan_ggufs(root)}


def _inside(root: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(root, rel))
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/") or \
            os.path.commonpath([os.path.realpath(root), os.path.realpath(os.path.dirname(path))]) != \
            os.path.realpath(root):
        raise ValueError(f"{rel!r} is not inside {root}")
    return path


def delete_hub_files(root: str, repo_folder: str, commit: str, paths: list[str] | None) -> int:
    """Remove files of one snapshot of a hub cache repository, and the blobs nothing points to any more.

    Args:
        root: the hub cache folder (holding ``models--*``).
        repo_folder: ``models--ORG--NAME``.
        commit: the snapshot.
        paths: the snapshot's files to remove; None: the whole snapshot. When no snapshot is
            left, the repository's folder goes (refs and all).

    Returns:
        The bytes freed (blobs and plain files removed).
    """
    repo = _inside(root, repo_folder)
    snap = _inside(repo, os.path.join("snapshots", commit))
    freed = 0
    if paths is None:
        paths = [os.path.relpath(os.path.join(f, n), snap) for f, _d, ns in os.walk(snap) for n in ns]
    for rel in paths:
        path = _inside(snap, rel)
        if os.path.islink(path) or os.path.isfile(path):
            if not os.path.islink(path):
                freed += os.path.getsize(path)
            os.unlink(path)
    for folder, _dirs, _files in sorted(os.walk(snap), key=lambda t: -len(t[0])):
        if folder != snap and not os.listdir(folder):
            os.rmdir(folder)
    if os.path.isdir(snap) and not os.listdir(snap):
        os.rmdir(snap)
    linked = set()
    snaps = os.path.join(repo, "snapshots")
    for folder, _dirs, names in os.walk(snaps):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                linked.add(os.path.basename(os.readlink(path)))
    blobs = os.path.join(repo, "blobs")
    for blob in (os.listdir(blobs) if os.path.isdir(blobs) else []):
        if blob not in linked:
            freed += os.path.getsize(os.path.join(blobs, blob))
            os.unlink(os.path.join(blobs, blob))
    if not os.path.isdir(snaps) or not os.listdir(snaps):
        shutil.rmtree(repo, ignore_errors=True)
    return freed


def delete_ollama_model(root: str, manifest: str) -> int:
    """Remove an Ollama manifest and the blobs no other manifest lists; return the bytes freed."""
    path = _inside(root, manifest)
    if os.path.exists(path):
        os.unlink(path)
    wanted = set()
    for folder, _dirs, files in os.walk(os.path.join(root, OLLAMA_MANIFESTS)):
        for name in files:
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as fh:
                    m = json.load(fh)
                wanted.update(str(layer["digest"]).replace(":", "-") for layer in [*m["layers"], m.get("config") or {}]
                              if "digest" in layer)
            except (OSError, ValueError, KeyError, TypeError):
                continue
    freed = 0
    blobs = os.path.join(root, OLLAMA_BLOBS)
    for blob in (os.listdir(blobs) if os.path.isdir(blobs) else []):
        if blob.startswith("sha256-") and blob not in wanted:
            freed += os.path.getsize(os.path.join(blobs, blob))
            os.unlink(os.path.join(blobs, blob))
    return freed


def delete_file(root: str, rel: str) -> int:
    """Remove one plain file under ``root``; return its size."""
    path = _inside(root, rel)
    try:
        size = os.path.getsize(path)
        os.unlink(path)
    except FileNotFoundError:
        return 0  # removed meanwhile: the wanted outcome
    return size


def main(argv: list[str]) -> int:
    """``scan ROOT KIND`` or ``call ROOT FUNCTION JSON-ARGS``: JSON on stdout (how a helper container runs this)."""
    if argv[0] == "scan":
        print(json.dumps(scan_cache(argv[1], argv[2])))
        return 0
    if argv[0] == "call":
        fn = {"delete_hub_files": delete_hub_files, "delete_ollama_model": delete_ollama_model,
              "delete_file": delete_file}[argv[2]]
        print(json.dumps({"freed": fn(argv[1], *json.loads(argv[3]))}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A stand-in for the Hugging Face Hub, FOR TESTS ONLY: a local HTTP server that speaks the Hub's API.

The machines the suite runs on cannot reach huggingface.co, so the Hub features (search, model
pages, downloads) are proven by pointing the REAL ``huggingface_hub`` client (2.4) at this server
through ``HF_ENDPOINT`` (or ``HfApi(endpoint=...)`` / ``hf_hub_download(endpoint=...)``). It is not
a Hub implementation and nothing outside ``tests/`` may use it.

What it speaks, as ``huggingface_hub`` 2.4 uses it (paths, headers and fields read from that
package's own source: ``hf_api.py``, ``file_download.py``, ``utils/_http.py``, ``utils/_pagination.py``):

- ``GET /api/models`` (``HfApi.list_models``): ``search`` (substring of the repo id, any case),
  ``filter`` (repeatable; each must be one of the repo's tags, e.g. ``gguf``, ``safetensors``,
  ``text-generation``), ``author``, ``pipeline_tag``, ``gated``, ``sort`` (``downloads``, ``likes``,
  ``lastModified``, ``createdAt``, ``trendingScore``; descending, as the Hub does), ``limit``,
  ``full``, ``expand`` (repeatable: only the listed properties plus ``id``). Pages of
  ``page_size`` results linked with a ``Link: <...>; rel="next"`` header, as the Hub paginates.
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (``HfApi.model_info``):
  ``blobs=true`` (``files_metadata=True``) adds each sibling's ``size``, ``blobId`` and ``lfs``.
  Model info of a gated repo is public, as on the Hub; its files are not.
- ``GET /api/models/{repo}/tree/{rev}`` (``list_repo_tree``, used by ``snapshot_download``).
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``hf_hub_download``, ``get_hf_file_metadata``):
  ``X-Repo-Commit``, ``ETag`` (git blob sha1, or the sha256 for LFS files) and, for LFS files,
  ``X-Linked-Etag`` / ``X-Linked-Size``; ``Content-Length``, ``Accept-Ranges: bytes``; ``Range``
  requests (``bytes=a-``, ``bytes=a-b``, ``bytes=-n``) answered 206 with ``Content-Range``, an
  unsatisfiable one 416. Files are served directly (200); with ``lfs_redirect=True`` an LFS file is
  a ``302`` to a CDN on another origin, as on huggingface.co (see ``HubStandin``).
- Errors as the Hub sends them, with ``X-Error-Code`` / ``X-Error-Message`` (which is how the client
  picks its exception class): an unknown repo is 401 ``RepoNotFound`` without a token and 404 with
  one; an unknown revision 404 ``RevisionNotFound``; an unknown file 404 ``EntryNotFound``; a gated
  repo's file 401 ``GatedRepo`` without a token and 403 ``GatedRepo`` with a token that has no
  access (anything but ``token``); with ``Authorization: Bearer <token>`` it is served.

Recorded repositories (``default_repos``): the shapes of real Hub repositories with real, small
files. The GGUF is the suite's tiny llama (scripts/make-tiny-gguf; llama.cpp loads it), served
under several quantization names; the safetensors shards are real safetensors files (header and
data) of a tiny model; the "big" repository's files are sparse (a real GGUF header followed by
zeros, never held in memory: sizes for fit checks, not for downloading) and its ETags are not
content hashes.

Knobs for tests: ``cut_after_bytes`` (the next GET of a file body sends that many bytes and then
drops the connection, once, so a client must resume with a Range request), ``fail_next`` (answer
the next N requests with that status), ``requests`` (a log of every request: method, path, query,
Range and Authorization headers) and ``count()``.

Note for download code: ``hf_hub_download`` 2.4 resumes a cut transfer only within one call (it
retries with ``Range`` itself); each call downloads into a fresh ``*.incomplete`` file, so resuming
after a process restart needs its own Range requests (httpx) against ``/resolve/``.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import numpy as np

DEFAULT_TOKEN = "hf_standin_read_token"
_LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".onnx", ".h5", ".msgpack")
_CHUNK = 64 * 1024


# --------------------------------------------------------------------------- files and repos


@dataclass
class HubFile:
    """One file of a repository: its bytes, or (``sparse_size``) ``data`` followed by zeros up to that size."""

    path: str
    data: bytes = b""
    sparse_size: int | None = None  # a big file: only ``data`` is real, the rest is zeros

    @property
    def size(self) -> int:
        return self.sparse_size if self.sparse_size is not None else len(self.data)

    @property
    def lfs(self) -> bool:
        return self.path.endswith(_LFS_SUFFIXES) or self.size > 10 * 1024 * 1024

    @property
    def git_oid(self) -> str:
        """The git blob sha1 of what git stores: the file, or its LFS pointer."""
        stored = self.pointer if self.lfs else self.data
        return hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()

    @property
    def sha256(self) -> str:
        """The content's sha256 (for a sparse file: a hash of its head and size, not of the content)."""
        if self.sparse_size is not None:
            return hashlib.sha256(self.data + b"sparse:%d" % self.sparse_size).hexdigest()
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {self.size}\n").encode()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive), in chunks."""
        pos = start
        while pos < end:
            stop = min(end, pos + _CHUNK)
            if pos < len(self.data):
                piece = self.data[pos:min(stop, len(self.data))]
            else:
                piece = bytes(stop - pos)
            yield piece
            pos += len(piece)


@dataclass
class HubRepo:
    """A model repository as the Hub describes it."""

    repo_id: str
    files: list[HubFile]
    downloads: int = 0
    likes: int = 0
    license: str | None = "apache-2.0"
    pipeline_tag: str | None = "text-generation"
    library_name: str | None = None
    tags: list[str] = field(default_factory=list)
    gated: bool | str = False  # False, "auto" or "manual", as the Hub's field
    last_modified: str = "2024-09-25T14:32:03.000Z"
    created_at: str = "2024-09-17T12:00:00.000Z"
    card_data: dict | None = None

    @property
    def sha(self) -> str:
        """The commit: a stable sha1 over the files' paths and oids."""
        h = hashlib.sha1(self.repo_id.encode())
        for f in sorted(self.files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.git_oid}\n".encode())
        return h.hexdigest()

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)

    def all_tags(self) -> list[str]:
        tags = list(self.tags)
        if any(f.path.endswith(".gguf") for f in self.files) and "gguf" not in tags:
            tags.append("gguf")
        if any(f.path.endswith(".safetensors") for f in self.files) and "safetensors" not in tags:
            tags.append("safetensors")
        if self.pipeline_tag and self.pipeline_tag not in tags:
            tags.append(self.pipeline_tag)
        if self.license and f"license:{self.license}" not in tags:
            tags.append(f"license:{self.license}")
        return tags

    def info(self, *, blobs: bool = False, expand: list[str] | None = None, full: bool = True) -> dict:
        """The JSON the Hub answers for this repo (``/api/models/{repo}``, or one item of a list)."""
        out: dict = {
            "_id": hashlib.md5(self.repo_id.encode()).hexdigest()[:24], "id": self.repo_id, "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0], "sha": self.sha, "lastModified": self.last_modified,
            "createdAt": self.created_at, "private": False, "gated": self.gated, "disabled": False,
            "downloads": self.downloads, "likes": self.likes, "tags": self.all_tags(),
            "pipeline_tag": self.pipeline_tag, "library_name": self.library_name,
            "cardData": self.card_data if self.card_data is not None else (
                {"license": self.license} if self.license else {}),
            "trendingScore": 0,
            "siblings": [self._sibling(f, blobs) for f in self.files],
        }
        if any(f.path.endswith(".safetensors") for f in self.files):
            params = sum(safetensors_header_params(f.data) or 0 for f in self.files if f.path.endswith(".safetensors"))
            out["safetensors"] = {"parameters": {"BF16": params}, "total": params}
        if expand is not None:
            keep = {"_id", "id", *expand}
            return {k: v for k, v in out.items() if k in keep}
        if not full:  # the Hub's short list item
            keep = {"_id", "id", "modelId", "likes", "trendingScore", "private", "downloads", "tags",
                    "pipeline_tag", "library_name", "createdAt"}
            return {k: v for k, v in out.items() if k in keep}
        if blobs:
            out["usedStorage"] = sum(f.size for f in self.files)
        return out

    @staticmethod
    def _sibling(f: HubFile, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": f.path}
        s: dict = {"rfilename": f.path, "blobId": f.git_oid, "size": f.size}
        if f.lfs:
            s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
        return s

    def tree_entry(self, f: HubFile) -> dict:
        entry: dict = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
        return entry


# --------------------------------------------------------------------------- real small files


def safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> bytes:
    """A real safetensors file: u64 little-endian header length, the JSON header (padded with spaces
    to 8 bytes, as the reference writer does), then the tensors' bytes in order."""
    dtypes = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int64"): "I64",
              np.dtype("int32"): "I32", np.dtype("uint16"): "BF16"}  # uint16 arrays stand for bfloat16 bits
    header: dict = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dtypes[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def safetensors_header_params(data: bytes) -> int | None:
    """Parameter count from a safetensors file's header (None when ``data`` is not one)."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        total = 0
        for name, info in header.items():
            if name != "__metadata__":
                count = 1
                for d in info["shape"]:
                    count *= int(d)
                total += count
        return total
    except (struct.error, ValueError, KeyError, TypeError):
        return None


def tiny_llama_config(dtype: str = "bfloat16") -> dict:
    """config.json of the tiny safetensors llama below (its sizes match the tensors)."""
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
            "num_hidden_layers": 2, "vocab_size": 256, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": dtype,
            "transformers_version": "4.45.0"}


def tiny_llama_tensors(layers: range = range(2), embeddings: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """The weights of a 2-layer, 64-wide llama as bfloat16 bit patterns (uint16), fixed seed."""
    rng = np.random.default_rng(seed)

    def bf16(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32).__rshift__(16).astype(np.uint16)

    out: dict[str, np.ndarray] = {}
    if embeddings:
        out["model.embed_tokens.weight"] = bf16(256, 64)
    for i in layers:
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (64, 64)), ("self_attn.k_proj", (64, 64)),
                            ("self_attn.v_proj", (64, 64)), ("self_attn.o_proj", (64, 64)),
                            ("mlp.gate_proj", (128, 64)), ("mlp.up_proj", (128, 64)), ("mlp.down_proj", (64, 128))):
            out[p + name + ".weight"] = bf16(*shape)
        out[p + "input_layernorm.weight"] = bf16(64)
        out[p + "post_attention_layernorm.weight"] = bf16(64)
    if embeddings:
        out["model.norm.weight"] = bf16(64)
        out["lm_head.weight"] = bf16(256, 64)
    return out


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _readme(title: str, license: str | None) -> bytes:
    front = f"---\nlicense: {license}\n---\n" if license else ""
    return f"{front}# {title}\n\nRecorded for ModelDeck's tests (tests/support/hub_standin.py).\n".encode()


def _gguf_head(gguf: bytes) -> bytes:
    """The first MiB of a real GGUF (its header and metadata), for sparse big files."""
    return gguf[: 1 << 20]


GGUF_REPO = "bartowski/Qwen2.5-0.5B-Instruct-GGUF"
SPLIT_GGUF_REPO = "unsloth/Qwen2.5-0.5B-Instruct-GGUF"
BIG_GGUF_REPO = "bartowski/Meta-Llama-3.1-70B-Instruct-GGUF"
SAFETENSORS_REPO = "Qwen/Qwen2.5-0.5B-Instruct"
SHARDED_REPO = "HuggingFaceTB/SmolLM2-360M-Instruct"
GATED_REPO = "meta-llama/Llama-3.2-1B-Instruct"
ONNX_REPO = "Xenova/all-MiniLM-L6-v2"


def default_repos(gguf: bytes) -> list[HubRepo]:
    """The recorded repositories, around ``gguf`` (the bytes of the suite's tiny GGUF).

    - ``GGUF_REPO``: Q4_K_M, Q8_0 and f16 names for the same tiny GGUF (one blob, as the Hub would
      deduplicate it), a README; 25k downloads.
    - ``SPLIT_GGUF_REPO``: Q4_K_M as one file, and Q8_0 split in two parts
      (``-00001-of-00002.gguf``; the two halves of the tiny file, not loadable on their own).
    - ``BIG_GGUF_REPO``: Q4_K_M at 42.5 GB in two sparse parts and Q2_K at 26.4 GB (too big for
      most GPUs), a real GGUF header each.
    - ``SAFETENSORS_REPO``: config.json (bfloat16), generation_config.json, tokenizer_config.json
      and one real safetensors shard ``model.safetensors``.
    - ``SHARDED_REPO``: two real safetensors shards and ``model.safetensors.index.json``.
    - ``GATED_REPO``: gated ``manual``, config.json and a real ``model.safetensors``; its files
      need ``DEFAULT_TOKEN``.
    - ``ONNX_REPO``: only ONNX weights (not servable by any recipe).
    """
    tensors = tiny_llama_tensors()
    shard = safetensors_bytes(tensors, {"format": "pt"})
    first = safetensors_bytes(tiny_llama_tensors(range(1), embeddings=True), {"format": "pt"})
    second_tensors = tiny_llama_tensors(range(1, 2), embeddings=False, seed=1)
    second = safetensors_bytes(second_tensors, {"format": "pt"})
    index = {"metadata": {"total_size": len(first) + len(second)},
             "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in tiny_llama_tensors(range(1))},
                            **{k: "model-00002-of-00002.safetensors" for k in second_tensors}}}
    half = len(gguf) // 2
    head = _gguf_head(gguf)
    gb = 1000 ** 3
    return [
        HubRepo(GGUF_REPO, [
            HubFile("README.md", _readme("Qwen2.5-0.5B-Instruct GGUF quantizations", "apache-2.0")),
            HubFile("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", gguf),
            HubFile("Qwen2.5-0.5B-Instruct-Q8_0.gguf", gguf),
            HubFile("Qwen2.5-0.5B-Instruct-f16.gguf", gguf),
        ], downloads=25_310, likes=48, tags=["gguf", "text-generation", "conversational", "en"],
            last_modified="2024-09-19T07:10:11.000Z"),
        HubRepo(SPLIT_GGUF_REPO, [
            HubFile("README.md", _readme("Qwen2.5-0.5B-Instruct GGUF", "apache-2.0")),
            HubFile("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", gguf),
            HubFile("Q8_0/Qwen2.5-0.5B-Instruct-Q8_0-00001-of-00002.gguf", gguf[:half]),
            HubFile("Q8_0/Qwen2.5-0.5B-Instruct-Q8_0-00002-of-00002.gguf", gguf[half:]),
        ], downloads=9_120, likes=31, tags=["gguf", "text-generation", "unsloth"],
            last_modified="2025-01-10T10:00:00.000Z"),
        HubRepo(BIG_GGUF_REPO, [
            HubFile("README.md", _readme("Meta-Llama-3.1-70B-Instruct GGUF", "llama3.1")),
            HubFile("Meta-Llama-3.1-70B-Instruct-Q4_K_M/Meta-Llama-3.1-70B-Instruct-Q4_K_M-00001-of-00002.gguf",
                    head, sparse_size=int(39.9 * gb)),
            HubFile("Meta-Llama-3.1-70B-Instruct-Q4_K_M/Meta-Llama-3.1-70B-Instruct-Q4_K_M-00002-of-00002.gguf",
                    head, sparse_size=int(2.6 * gb)),
            HubFile("Meta-Llama-3.1-70B-Instruct-Q2_K.gguf", head, sparse_size=int(26.4 * gb)),
        ], downloads=41_000, likes=160, license="llama3.1", tags=["gguf", "text-generation", "llama"],
            last_modified="2024-07-26T18:00:00.000Z"),
        HubRepo(SAFETENSORS_REPO, [
            HubFile("README.md", _readme("Qwen2.5-0.5B-Instruct", "apache-2.0")),
            HubFile("config.json", _json(tiny_llama_config("bfloat16"))),
            HubFile("generation_config.json", _json({"bos_token_id": 1, "eos_token_id": 2, "do_sample": True})),
            HubFile("tokenizer_config.json", _json({"model_max_length": 2048, "eos_token": "</s>"})),
            HubFile("model.safetensors", shard),
        ], downloads=812_000, likes=275, library_name="transformers",
            tags=["transformers", "safetensors", "qwen2", "text-generation", "conversational"],
            last_modified="2024-09-25T12:33:09.000Z"),
        HubRepo(SHARDED_REPO, [
            HubFile("README.md", _readme("SmolLM2-360M-Instruct", "apache-2.0")),
            HubFile("config.json", _json(tiny_llama_config("float16"))),
            HubFile("model-00001-of-00002.safetensors", first),
            HubFile("model-00002-of-00002.safetensors", second),
            HubFile("model.safetensors.index.json", _json(index)),
        ], downloads=120_000, likes=90, library_name="transformers",
            tags=["transformers", "safetensors", "llama", "text-generation"],
            last_modified="2024-11-06T09:00:00.000Z"),
        HubRepo(GATED_REPO, [
            HubFile("README.md", _readme("Llama 3.2 1B Instruct", "llama3.2")),
            HubFile("config.json", _json(tiny_llama_config("bfloat16"))),
            HubFile("model.safetensors", shard),
        ], downloads=2_500_000, likes=900, license="llama3.2", gated="manual", library_name="transformers",
            tags=["transformers", "safetensors", "llama", "text-generation", "facebook", "meta"],
            last_modified="2024-10-24T15:07:51.000Z"),
        HubRepo(ONNX_REPO, [
            HubFile("README.md", _readme("all-MiniLM-L6-v2 (ONNX)", "apache-2.0")),
            HubFile("config.json", _json({"model_type": "bert", "hidden_size": 384})),
            HubFile("onnx/model.onnx", b"\x08\x07\x12\x07pytorch" + bytes(2048)),
            HubFile("onnx/model_quantized.onnx", b"\x08\x07\x12\x07pytorch" + bytes(1024)),
        ], downloads=300_000, likes=70, pipeline_tag="feature-extraction", library_name="transformers.js",
            tags=["transformers.js", "onnx", "bert", "feature-extraction"],
            last_modified="2024-08-01T00:00:00.000Z"),
    ]


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    range: str | None
    authorization: str | None
    status: int = 0


_SORT_KEYS = {"downloads": "downloads", "likes": "likes", "lastModified": "last_modified",
              "createdAt": "created_at", "trendingScore": "downloads"}
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_MODEL = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_CDN = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<sha256>[0-9a-f]{64})/[^/]+$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")


class HubStandin:
    """The stand-in server: ``start()``/``stop()`` or ``with HubStandin(...) as hub:``; ``hub.url`` is its endpoint.

    Args:
        repos: the repositories it serves (``default_repos(gguf_bytes)`` for the recorded ones).
        token: the one token that opens gated repos.
        page_size: results per page of ``/api/models`` (the Hub's pages are 1000; tests use small ones
            to exercise the ``Link`` pagination).
        lfs_redirect: answer ``/resolve/`` of an LFS file as huggingface.co does: ``302`` to a CDN on
            another origin (a second server, ``cdn_url``) with ``X-Linked-Size`` / ``X-Linked-Etag`` on the
            redirect itself; the CDN serves the bytes (with Range) without asking for a token, as a signed
            URL does. Off by default: files are served by ``/resolve/`` directly.
    """

    def __init__(self, repos: Iterable[HubRepo] = (), *, token: str = DEFAULT_TOKEN, page_size: int = 1000,
                 lfs_redirect: bool = False):
        self.repos: dict[str, HubRepo] = {r.repo_id: r for r in repos}
        self.token = token
        self.page_size = page_size
        self.lfs_redirect = lfs_redirect
        self._cdn: ThreadingHTTPServer | None = None
        self.cut_after_bytes: int | None = None
        self.fail_next: list[int] = []  # statuses answered to the next requests, one each
        self.requests: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def cdn_url(self) -> str:
        """The CDN's origin (``lfs_redirect``): another port, so clients treat it as another host."""
        assert self._cdn is not None, "start() the stand-in with lfs_redirect=True first"
        host, port = self._cdn.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubStandin":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-standin", daemon=True)
        self._thread.start()
        if self.lfs_redirect:
            self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self._cdn.daemon_threads = True
            threading.Thread(target=self._cdn.serve_forever, name="hub-standin-cdn", daemon=True).start()
        return self

    def stop(self) -> None:
        for server in (self._server, self._cdn):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._cdn = None

    def __enter__(self) -> "HubStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- for tests

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def count(self, method: str | None = None, path_contains: str = "", *, ranged: bool | None = None) -> int:
        """How many logged requests match: ``method``, a substring of the path, with/without a Range."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (method is None or r.method == method) and path_contains in r.path
                       and (ranged is None or (r.range is not None) == ranged))

    def resolve_url(self, repo_id: str, path: str, revision: str = "main") -> str:
        return f"{self.url}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandin
    protocol_version = "HTTP/1.1"
    server_version = "hub-standin/1"

    def log_message(self, format, *args):  # quiet: the request log is ``hub.requests``
        pass

    # -- plumbing

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = status

    def _json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json({"error": message}, status, headers)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _repo(self, repo_id: str) -> HubRepo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            # The Hub answers 401 to an anonymous request for a repo it will not show (missing or
            # private), 404 to an authenticated one.
            self._error(404 if self._token() else 401, "RepoNotFound", "Repository not found")
        return repo

    def _revision_ok(self, repo: HubRepo, rev: str) -> bool:
        if rev in ("main", repo.sha):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def _route(self):
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        self._status = 0
        try:
            if self.hub.fail_next:
                status = self.hub.fail_next.pop(0)
                self._error(status, None, f"stand-in told to fail with {status}")
                return
            if split.path == "/api/models" or split.path == "/api/models/":
                self._list(query)
            elif m := _TREE.match(split.path):
                self._tree(unquote(m["repo"]), unquote(m["rev"]))
            elif m := _MODEL.match(split.path):
                self._model(unquote(m["repo"]), unquote(m["rev"]) if m["rev"] else None, query)
            elif m := _RESOLVE.match(split.path):
                self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["path"]))
            elif m := _CDN.match(split.path):
                self._cdn(unquote(m["repo"]), m["sha256"])
            else:
                self._error(404, None, f"stand-in: no route for {path}")
        finally:
            self.hub._log(LoggedRequest(self.command, path, query, self.headers.get("Range"),
                                        self.headers.get("Authorization"), self._status))

    # -- routes

    def _list(self, query: dict[str, list[str]]) -> None:
        def one(name: str) -> str | None:
            return query.get(name, [None])[0]

        repos = list(self.hub.repos.values())
        if search := one("search"):
            repos = [r for r in repos if search.lower() in r.repo_id.lower()]
        for tag in query.get("filter", []):
            repos = [r for r in repos if tag in r.all_tags()]
        if author := one("author"):
            repos = [r for r in repos if r.repo_id.split("/")[0] == author]
        if pipeline := one("pipeline_tag"):
            repos = [r for r in repos if r.pipeline_tag == pipeline]
        if (gated := one("gated")) is not None:
            repos = [r for r in repos if bool(r.gated) == (gated.lower() == "true")]
        if sort := one("sort"):
            key = _SORT_KEYS.get(sort)
            if key is None:
                self._error(400, None, f"Invalid sort parameter: {sort}")
                return
            repos.sort(key=lambda r: getattr(r, key), reverse=one("direction") != "1")
        limit = int(one("limit") or 0) or None
        if limit is not None:
            repos = repos[:limit]
        start = int(one("cursor") or 0)
        page = repos[start:start + self.hub.page_size]
        expand = query.get("expand")
        full = (one("full") or "").lower() == "true"
        items = [r.info(expand=expand, full=full) for r in page]
        headers = {}
        if start + self.hub.page_size < len(repos):
            rest = {k: v for k, v in query.items() if k != "cursor"}
            nxt = urlencode([*((k, x) for k, vs in rest.items() for x in vs), ("cursor", start + self.hub.page_size)])
            headers["Link"] = f'<{self.hub.url}/api/models?{nxt}>; rel="next"'
        self._json(items, headers=headers)

    def _model(self, repo_id: str, rev: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        if repo is None or (rev is not None and not self._revision_ok(repo, rev)):
            return
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        self._json(repo.info(blobs=blobs, expand=query.get("expand")))

    def _tree(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._revision_ok(repo, rev):
            return
        folders = sorted({"/".join(f.path.split("/")[:i]) for f in repo.files for i in range(1, f.path.count("/") + 1)})
        self._json([{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                    for d in folders] + [repo.tree_entry(f) for f in repo.files])

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        if repo is None or not self._revision_ok(repo, rev):
            return
        if repo.gated:
            token = self._token()
            if token is None:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it "
                                              "and be authenticated to access it. Please log in.")
                return
            if token != self.hub.token:
                self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not in the "
                                              f"authorized list. Visit https://huggingface.co/{repo_id} to ask for access.")
                return
        f = repo.file(path)
        if f is None:
            self._error(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"")
            return
        if f.lfs and self.hub.lfs_redirect:
            # As huggingface.co: a redirect to a signed CDN URL on another host; the file's size and
            # sha256 travel on the redirect (the client reads them there and never sends its token on).
            location = f"{self.hub.cdn_url}/cdn/{quote(repo_id)}/{f.sha256}/{quote(path.rsplit('/', 1)[-1])}"
            self._send(302, b"", {"X-Repo-Commit": repo.sha, "ETag": f'"{f.git_oid}"', "X-Linked-Etag": f'"{f.sha256}"',
                                  "X-Linked-Size": str(f.size), "Location": location}, content_type="text/plain")
            return
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(f.size)
        self._serve_file(f, headers)

    def _cdn(self, repo_id: str, sha256: str) -> None:
        repo = self.hub.repos.get(repo_id)
        f = next((x for x in repo.files if x.lfs and x.sha256 == sha256), None) if repo is not None else None
        if f is None:
            self._send(404, b"NoSuchKey", content_type="text/plain")
            return
        self._serve_file(f, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"})

    def _serve_file(self, f: HubFile, headers: dict[str, str]) -> None:
        """``f``'s bytes (or the asked Range of them), honouring ``cut_after_bytes``."""
        start, end, status = 0, f.size, 200
        if (asked := self.headers.get("Range")) is not None:
            parsed = _parse_range(asked, f.size)
            if parsed is None:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{f.size}"})
                return
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self._status = status
        if self.command == "HEAD":
            return
        cut = None
        with self.hub._lock:
            if self.hub.cut_after_bytes is not None:
                cut, self.hub.cut_after_bytes = self.hub.cut_after_bytes, None
        sent = 0
        try:
            for chunk in f.read(start, end):
                if cut is not None and sent + len(chunk) >= cut:
                    self.wfile.write(chunk[:cut - sent])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)  # SHUT_RDWR: the client sees the body end early
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as ``(start, end_exclusive)``; None when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", value)
    if not m or (m[1] == "" and m[2] == ""):
        return None
    if m[1] == "":
        n = int(m[2])
        return (max(size - n, 0), size) if n > 0 and size > 0 else None
    start = int(m[1])
    end = min(int(m[2]) + 1, size) if m[2] else size
    if start >= size or end <= start:
        return None
    return start, end


def tiny_gguf_bytes(gguf_models: Path) -> bytes:
    """The bytes of the suite's tiny GGUF (the ``gguf_models`` fixture's folder)."""
    return (gguf_models / "tiny" / "tiny-llama.gguf").read_bytes()

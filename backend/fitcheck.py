"""Launch-time fit check: how much GPU memory a model will need, and whether the GPU has it."""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import Literal

from backend.cache_scan import gguf_header
from backend.catalog import GpuNeed, Recipe
from backend.settings import Settings

GIB = 1024 ** 3
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")

# Memory beyond the weights: KV cache for a useful context, activations and the CUDA
# context. 1.2 x weights is the usual rule of thumb for llama.cpp, TGI and Ollama at
# modest context lengths; long contexts or many parallel requests need more.
DEFAULT_OVERHEAD = 1.2

# Runtimes that pre-allocate a fixed share of the GPU's *total* memory at start, whatever the
# model's size (weights plus KV cache pool), and fail when less than that is free: the flag that
# sets the share, and upstream's default.
# - vLLM: --gpu-memory-utilization, 0.9 in releases (0.92 on main, vllm/config/cache.py); the
#   recipe states it, so the share modelled is the one the server uses.
# - SGLang: --mem-fraction-static; by default SGLang derives it from the GPU's size
#   (python/sglang/srt/server_args.py, _handle_gpu_memory_settings: total minus a reserve for
#   activations and CUDA graphs, about 0.83-0.87 on 24-80 GB cards) and uses 0.88 when it cannot
#   read the size; 0.88 is modelled, the share it never exceeds by default.
RESERVE_FLAGS = {"vllm": ("--gpu-memory-utilization", 0.9), "sglang": ("--mem-fraction-static", 0.88)}

# Bytes per parameter by the torch dtype name in config.json.
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2, "float8_e4m3fn": 1}
# A real safetensors header is a few MB at most; anything bigger is not one.
_MAX_HEADER = 100 * 1024 * 1024

NOT_DOWNLOADED = "not downloaded yet; size unknown until first download"


@dataclass(frozen=True)
class MemoryEstimate:
    """What a model is expected to need on the GPU, and how that number was reached."""

    bytes_needed: int | None  # None: unknown
    basis: str  # plain words: where the number comes from, or why there is none
    weights_bytes: int | None = None
    params: int | None = None


@dataclass(frozen=True)
class FitVerdict:
    """Whether the estimate fits the GPU, in words a person can act on."""

    level: Literal["ok", "warn", "too_big", "unknown"]
    message: str


def gib(n: int | float) -> str:
    """``n`` bytes as "15.2 GiB", or "4.8 MiB" below one GiB (a tiny GGUF is not "0.0 GiB")."""
    if abs(n) < GIB:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / GIB:.1f} GiB"


# -- reading weights ---------------------------------------------------------------------


def safetensors_params(path: Path) -> int | None:
    """The exact parameter count of one safetensors file, read from its header.

    The format starts with an 8-byte little-endian header length, then that many bytes of
    JSON mapping each tensor name to its ``dtype``, ``shape`` and offsets (plus an
    optional ``__metadata__`` entry).

    Returns:
        The sum over tensors of the product of their shape, or None when the file is not
        a readable safetensors file.
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                return None
            (length,) = struct.unpack("<Q", raw)
            if length > _MAX_HEADER:
                return None
            raw = fh.read(length)
            if len(raw) != length:  # truncated download
                return None
            header = json.loads(raw)
        total = 0
        for name, info in header.items():
            if name == "__metadata__":
                continue
            total += math.prod(int(d) for d in info["shape"])
        return total
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF file's header says: exact parameter count and the model's shape."""

    params: int
    architecture: str | None = None
    name: str | None = None
    context_length: int | None = None
    block_count: int | None = None


def gguf_info(path: Path) -> GgufInfo | None:
    """Read a GGUF file's header: its metadata and tensor shapes (no weights are read).

    The reader is backend/cache_scan.py's ``gguf_header`` (standard library only, so the library
    also runs it inside a helper container on a cache volume). The ``gguf`` package's
    ``GGUFReader`` was measured for this and not used: it builds numpy objects for every field
    and every vocabulary entry, 13 s for a header with a 150k-token vocabulary (an 8 GiB sparse
    file) where ``gguf_header`` takes 0.04 s; both touch the header's pages only.

    Returns:
        The parameter count (sum over tensors of the product of their dimensions) and the
        ``general.*`` / ``<arch>.*`` facts, or None when the file is not a readable GGUF.
    """
    header = gguf_header(str(path))
    if header is None:
        return None
    return GgufInfo(params=header["parameters"], architecture=header["architecture"], name=header["name"],
                    context_length=header["context_length"], block_count=header["block_count"])


def config_params(config: dict) -> int | None:
    """A rough parameter count of a decoder-only transformer from its config.json.

    Formula (documented approximation, within a few percent for Llama/Qwen/Mistral-like
    models): embeddings ``vocab x hidden`` (twice unless ``tie_word_embeddings``), plus per
    layer attention ``2 x hidden^2 + 2 x hidden x kv_dim`` (q and o projections; k and v
    with grouped-query heads, ``kv_dim = kv_heads x hidden / heads``) and a gated MLP
    ``3 x hidden x intermediate``. Norms and biases are ignored. Mixture-of-experts
    models are not covered (their ``intermediate_size`` is per expert).

    Returns:
        The estimate, or None when the config lacks the sizes needed.
    """
    cfg = config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config
    try:
        hidden = int(cfg["hidden_size"])
        layers = int(cfg["num_hidden_layers"])
        vocab = int(cfg["vocab_size"])
        inter = int(cfg.get("intermediate_size") or 4 * hidden)
        heads = int(cfg.get("num_attention_heads") or 1)
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    if min(hidden, layers, vocab, inter, heads, kv_heads) <= 0:
        return None
    kv_dim = kv_heads * (hidden // heads)
    embeddings = vocab * hidden * (1 if cfg.get("tie_word_embeddings", config.get("tie_word_embeddings")) else 2)
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter
    return embeddings + layers * per_layer


def _read_config(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _weight_files(folder: Path, prefer_gguf: bool, tag: str | None) -> list[Path]:
    """The weight files a runtime would load from ``folder``: one format, not every copy.

    Repositories often ship the same weights twice (model.safetensors beside
    pytorch_model.bin) or many GGUF quantizations; summing them all would overstate the
    need several times.
    """
    by_suffix: dict[str, list[Path]] = {s: [] for s in WEIGHT_SUFFIXES}
    for path in sorted(folder.rglob("*")):
        if path.suffix in by_suffix and path.is_file():  # is_file follows the symlink to the blob
            by_suffix[path.suffix].append(path)
    if tag and by_suffix[".gguf"]:
        tagged = [p for p in by_suffix[".gguf"] if tag.lower() in p.name.lower()]
        by_suffix[".gguf"] = tagged or by_suffix[".gguf"]
    order = ((".gguf", ".safetensors", ".bin", ".pt") if prefer_gguf
             else (".safetensors", ".bin", ".pt", ".gguf"))
    for suffix in order:
        if by_suffix[suffix]:
            return by_suffix[suffix]
    return []


def _size_once(files: list[Path]) -> int:
    """Total size of ``files``, counting a blob that several links point to once."""
    seen: dict[str, int] = {}
    for path in files:
        real = os.path.realpath(path)
        if real not in seen:
            seen[real] = os.stat(real).st_size
    return sum(seen.values())


def _params(folder: Path, files: list[Path]) -> tuple[int | None, str]:
    shards = [p for p in files if p.suffix == ".safetensors"]
    if shards:
        counts = [safetensors_params(p) for p in {os.path.realpath(p): p for p in shards}.values()]
        if all(c is not None for c in counts):
            return sum(counts), "safetensors headers"
    ggufs = [p for p in files if p.suffix == ".gguf"]
    if ggufs:
        infos = [gguf_info(p) for p in {os.path.realpath(p): p for p in ggufs}.values()]
        if all(i is not None for i in infos):
            return sum(i.params for i in infos), "GGUF header"
    config = _read_config(folder)
    if config is not None and (n := config_params(config)) is not None:
        return n, "config.json"
    return None, ""


# -- finding the model -------------------------------------------------------------------


def _newest_snapshot(repo: Path) -> Path | None:
    """The snapshot the runtime would use: the one refs/main names, else the newest."""
    snapshots = repo / "snapshots"
    try:
        ref = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        ref = ""
    if ref and (snapshots / ref).is_dir():
        return snapshots / ref
    try:
        candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    except OSError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def _hf_repo_folder(cache: Path, repo_id: str) -> Path | None:
    name = "models--" + repo_id.replace("/", "--")
    # HF_HOME layout (<cache>/hub/models--...) and a hub cache given directly (also TGI's
    # older /data layout, <cache>/models--...).
    for candidate in (cache / "hub" / name, cache / name):
        if candidate.is_dir():
            return candidate
    return None


def _local_model(model: str, settings: Settings) -> Path | None:
    """``model`` as a file or folder inside one of the configured model folders, else None.

    Only absolute paths (``/``, ``~``, a Windows drive) are local models, as launch treats
    them; anything else is a model id. Links are followed before the folder check, so a
    link out of a model folder does not count.
    """
    if not (model.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", model)):
        return None
    roots = [Path(d).expanduser().resolve() for d in settings.model_dirs]
    try:
        real = Path(model).expanduser().resolve()
    except (OSError, RuntimeError):
        return None
    if real.exists() and any(real == root or real.is_relative_to(root) for root in roots):
        return real
    return None


def reserved_fraction(recipe: Recipe, args: Sequence[str] = ()) -> float | None:
    """The share of the GPU's total memory ``recipe`` reserves at start, or None for runtimes that don't.

    The recipe's command and then ``args`` (the person's extra arguments) may set the flag,
    as ``--flag 0.8`` or ``--flag=0.8``; the last one wins, as in argparse.
    """
    flag, fraction = RESERVE_FLAGS.get(recipe.name, (None, None))
    if flag is None:
        return None
    words = [*recipe.server.command, *args]
    for i, word in enumerate(words):
        value = word.split("=", 1)[1] if word.startswith(flag + "=") else (
            words[i + 1] if word == flag and i + 1 < len(words) else None)
        if value is not None:
            try:
                if 0 < float(value) <= 1:
                    fraction = float(value)
            except ValueError:
                pass
    return fraction


def _overhead_basis(recipe: Recipe, weights: int) -> tuple[int, str]:
    needed = int(weights * DEFAULT_OVERHEAD)
    text = f"weights {gib(weights)} x {DEFAULT_OVERHEAD} for KV cache and activations"
    fraction = reserved_fraction(recipe)
    if fraction is not None:
        text += (f"; {recipe.title} also reserves {fraction:.0%} of the GPU's "
                 f"memory at start ({RESERVE_FLAGS[recipe.name][0]})")
    return needed, text


def estimate_weights(recipe: Recipe, weights: int, where: str, params: int | None = None) -> MemoryEstimate:
    """The estimate for weights of a known size that are not on disk (yet): a Hub listing's file sizes.

    The same rule as for files on disk (``_overhead_basis``), so a model page and a launch agree.
    """
    needed, text = _overhead_basis(recipe, weights)
    return MemoryEstimate(needed, f"{where}: {text}", weights, params)


def _estimate_folder(folder: Path, recipe: Recipe, tag: str | None, where: str) -> MemoryEstimate:
    files = _weight_files(folder, prefer_gguf=_prefers_gguf(recipe), tag=tag)
    params, params_from = _params(folder, files)
    if files:
        weights = _size_once(files)
        needed, text = _overhead_basis(recipe, weights)
        if params is not None:
            text += f"; about {params / 1e9:.2f}B parameters (from {params_from})"
        return MemoryEstimate(needed, f"{where}: {text}", weights, params)
    if params is not None:
        # Only config.json is there: weights = parameters x the config's dtype width.
        config = _read_config(folder) or {}
        width = _DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"), 2)
        weights = params * width
        needed, text = _overhead_basis(recipe, weights)
        return MemoryEstimate(needed, f"{where}: no weight files yet; {params / 1e9:.2f}B parameters from "
                                      f"config.json x {width} bytes; {text}", weights, params)
    return MemoryEstimate(None, f"{where}: no weight files found ({', '.join(WEIGHT_SUFFIXES)})")


def _prefers_gguf(recipe: Recipe) -> bool:
    # llama.cpp loads GGUF only; the others load safetensors first.
    return recipe.name.startswith("llama")


def _ollama_estimate(model: str, recipe: Recipe, settings: Settings) -> MemoryEstimate:
    """Size an Ollama model from the manifest Ollama writes when it pulls one."""
    root = settings.cache_dirs.get("ollama")
    if root is None:
        return MemoryEstimate(None, "Ollama's cache is a Docker volume; " + NOT_DOWNLOADED)
    name, _, tag = model.partition(":")
    parts = name.split("/")
    # "qwen2.5" -> registry.ollama.ai/library/qwen2.5; "user/m" -> registry.ollama.ai/user/m;
    # "hf.co/org/m" names its own registry host.
    if len(parts) > 2 and "." in parts[0]:
        host, parts = parts[0], parts[1:]
    else:
        host = "registry.ollama.ai"
    if len(parts) == 1:
        parts = ["library", *parts]
    manifest = Path(root, "models", "manifests", host, *parts, tag or "latest")
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8"))["layers"]
        weights = sum(int(layer["size"]) for layer in layers
                      if str(layer.get("mediaType", "")).endswith((".model", ".projector")))
    except (OSError, ValueError, KeyError, TypeError):
        return MemoryEstimate(None, NOT_DOWNLOADED)
    needed, text = _overhead_basis(recipe, weights)
    return MemoryEstimate(needed, f"Ollama manifest: {text}", weights, None)


def estimate_memory(recipe: Recipe, model: str, settings: Settings) -> MemoryEstimate:
    """Estimate the GPU memory ``recipe`` needs to serve ``model``, from files already on disk.

    Looks, in order, at: a local file or folder (an absolute path) inside
    ``settings.model_dirs``; Ollama's
    manifest (for recipes that serve the model under its own name); the Hugging Face cache
    folder ``settings.cache_dirs["huggingface"]`` (newest snapshot of ``models--ORG--NAME``,
    with or without the ``hub/`` level). Weight files are summed once per blob; the
    parameter count comes from safetensors headers (exact) or config.json (approximate).
    Nothing is downloaded.

    Args:
        recipe: the runtime that will serve the model.
        model: what the person typed: a Hugging Face repo id (a llama.cpp ``:QUANT`` tag is
            allowed), an Ollama model name, or a local path.
        settings: where the caches and model folders are.

    Returns:
        The estimate; ``bytes_needed`` is None when the size cannot be known yet, and
        ``basis`` says why.
    """
    local = _local_model(model, settings)
    if local is not None:
        if local.is_file():
            weights = local.stat().st_size
            params = safetensors_params(local) if local.suffix == ".safetensors" else None
            needed, text = _overhead_basis(recipe, weights)
            info = gguf_info(local) if local.suffix == ".gguf" else None
            if info is not None:
                params = info.params
                shape = ", ".join(x for x in (
                    info.architecture and f"{info.architecture} architecture",
                    info.block_count and f"{info.block_count} layers",
                    info.context_length and f"trained context {info.context_length}") if x)
                text += f"; {params / 1e9:.3g}B parameters ({shape}; from the GGUF header)"
            return MemoryEstimate(needed, f"local file: {text}", weights, params)
        return _estimate_folder(local, recipe, None, "local folder")
    if model.startswith(("/", "~", ".")) or "\\" in model:
        return MemoryEstimate(None, f"'{model}' is not inside a configured model folder; size unknown")
    if recipe.server.served_name_is_model:
        return _ollama_estimate(model, recipe, settings)
    repo_id, _, tag = model.partition(":")
    if repo_id.count("/") != 1:
        return MemoryEstimate(None, f"'{model}' is neither a Hugging Face repo id nor a file in a "
                                    "model folder; size unknown")
    cache = settings.cache_dirs.get("huggingface")
    if cache is None:
        return MemoryEstimate(None, "the Hugging Face cache is a Docker volume, not a host folder; "
                                    "size unknown")
    repo = _hf_repo_folder(Path(cache).expanduser(), repo_id)
    snapshot = _newest_snapshot(repo) if repo is not None else None
    if snapshot is None:
        return MemoryEstimate(None, NOT_DOWNLOADED)
    return _estimate_folder(snapshot, recipe, tag or None, f"Hugging Face cache ({snapshot.name[:12]})")


def fit_verdict(estimate: MemoryEstimate, gpu_free_bytes: int | None, gpu_total_bytes: int | None,
                recipe: Recipe, *, gpu_label: str = "GPU 0", args: Sequence[str] = ()) -> FitVerdict:
    """Compare an estimate with the GPU's memory.

    For recipes that reserve a fixed share of the GPU (vLLM's --gpu-memory-utilization,
    SGLang's --mem-fraction-static; see ``reserved_fraction``), the model must fit in that
    share and that share must be free; for the others the estimate is compared with free
    memory (within 10% is a warning).

    Args:
        estimate: from :func:`estimate_memory`.
        gpu_free_bytes: free memory on the GPU the launch will use; None when unknown.
        gpu_total_bytes: that GPU's total memory; None when unknown.
        recipe: the runtime.
        gpu_label: how to name the GPU in the message.
        args: the launch's extra arguments (they may set the reserved share).

    Returns:
        The level and a message in plain words with the numbers in GiB.
    """
    if recipe.gpu.need == GpuNeed.none:
        return FitVerdict("ok", f"{recipe.title} runs on the CPU; GPU memory is not used")
    if estimate.bytes_needed is None:
        return FitVerdict("unknown", f"memory need unknown: {estimate.basis}")
    need = estimate.bytes_needed
    if gpu_free_bytes is None:
        return FitVerdict("unknown", f"needs about {gib(need)}; free GPU memory could not be read")
    fraction = reserved_fraction(recipe, args)
    if fraction is not None and gpu_total_bytes:
        budget = gpu_total_bytes * fraction
        if need > budget:
            return FitVerdict("too_big", f"needs about {gib(need)}; {recipe.title} may use {fraction:.0%} of "
                                         f"{gpu_label}'s {gib(gpu_total_bytes)} ({gib(budget)}) — it will fail "
                                         "with out-of-memory; choose a smaller or quantized model")
        if gpu_free_bytes < budget:
            return FitVerdict("too_big", f"{recipe.title} reserves {fraction:.0%} of {gpu_label} "
                                         f"({gib(budget)}) at start but only {gib(gpu_free_bytes)} is free — "
                                         "it will refuse to start; stop what else uses the GPU")
        if need > 0.9 * budget:
            return FitVerdict("warn", f"needs about {gib(need)} of the {gib(budget)} {recipe.title} reserves on "
                                      f"{gpu_label} — little room is left for the KV cache (short context)")
        return FitVerdict("ok", f"needs about {gib(need)}; {recipe.title} reserves {gib(budget)} on {gpu_label}, "
                                f"{gib(gpu_free_bytes)} free")
    if need > gpu_free_bytes:
        hint = (" (or use fewer GPU layers)" if recipe.gpu.need == GpuNeed.optional else "")
        return FitVerdict("too_big", f"needs about {gib(need)}; {gib(gpu_free_bytes)} free on {gpu_label} — "
                                     f"it will likely fail with out-of-memory; free GPU memory or choose a "
                                     f"smaller model{hint}")
    if need > 0.9 * gpu_free_bytes:
        return FitVerdict("warn", f"needs about {gib(need)}; {gib(gpu_free_bytes)} free on {gpu_label} — "
                                  "it may just fit; long prompts could run out of memory")
    return FitVerdict("ok", f"needs about {gib(need)}; {gib(gpu_free_bytes)} free on {gpu_label}")

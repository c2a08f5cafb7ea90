"""The Hugging Face Hub, as the model library sees it: search, a model's servable variants, and whether each fits.

``HubClient`` talks to the Hub with ``huggingface_hub`` (the endpoint is ``Settings.hf_endpoint``,
else ``HF_ENDPOINT``, else huggingface.co; the token is the one saved in ModelDeck, else
``HF_TOKEN``). Its calls block: the routes run them in a thread with a deadline, and every HTTP
call has its own timeout, so a Hub that does not answer is a 502 in seconds, never a hung request.

A model page groups a repository's files into *variants*, the units a person downloads and
launches: one per GGUF quantization (``Q4_K_M``; a split GGUF's ``-00001-of-0000N`` parts are one
variant) and one per safetensors shard set (named by its dtype). Each variant says which
runtimes serve it, how to launch it (the recipe and the model string that recipe's syntax takes)
and, via :func:`fit_variant`, whether it fits each GPU and the host, with the memory model
launches use (backend/fitcheck.py) against the memory free now.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, Field

from backend.catalog import Catalog, Recipe
from backend.errors import ModelDeckError
from backend.fitcheck import GIB, estimate_weights, fit_verdict, gib
from backend.secrets_store import HF_TOKEN, read_secret
from backend.settings import Settings

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds one HTTP call to the Hub may take (connect, and between bytes); the routes also give
#: the whole operation a deadline (``HUB_DEADLINE_S``).
HUB_TIMEOUT_S = 8.0
HUB_DEADLINE_S = 10.0
#: Runtimes by format, in the order the launch suggestion prefers them.
GGUF_RUNTIMES = ("llama-cpp", "ollama")
SAFETENSORS_RUNTIMES = ("vllm", "sglang", "tgi")
SERVABLE = ("gguf", "safetensors")

# A Hub repo id: namespace/name, ASCII letters, digits, '-', '_', '.', each side starting and ending
# with a letter, digit or '_', at most 96 characters; no '--', '..' or '.git' end (the Hub's rules, as
# huggingface_hub.utils.validate_repo_id checks them).
_SIDE = r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^{_SIDE}/{_SIDE}$")
REVISION_RE = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})$")
# A llama.cpp quantization name at the end of a file's stem: Q4_K_M, Q8_0, IQ2_XXS, Q4_0_4_4,
# TQ1_0, MXFP4, F16, BF16, F32, and Unsloth's dynamic UD-Q4_K_XL.
_QUANT_RE = re.compile(r"(?:^|[-_.])((?:UD-)?(?:I?Q\d(?:_[0-9A-Z]+)*|TQ\d_\d|MXFP4(?:_MOE)?|BF16|F16|F32|FP16|FP32))$",
                       re.IGNORECASE)
_SHARD_RE = re.compile(r"^(?P<prefix>.+?)-(?P<n>\d{5})-of-(?P<total>\d{5})\.safetensors$")
# Files a safetensors runtime reads besides the weights (config, tokenizer, chat template, code).
_SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".py", ".vocab")
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt", ".tflite", ".mlmodel", ".npz",
                  ".gguf", ".safetensors", ".nemo", ".engine", ".ot")
_DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32",
                "float8_e4m3fn": "fp8", "BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8",
                "F8_E5M2": "fp8", "I8": "int8", "U8": "uint8"}
_MAX_SMALL_FILE = 2 * 1024 * 1024  # config.json, a safetensors header: read whole only below this


# --------------------------------------------------------------------------- errors


#: Where a person saves the Hugging Face token, said by every refusal a token would answer.
SAVE_TOKEN = ("save a Hugging Face token with read access in ModelDeck: the token field on the model's page in "
              "Discover, or Help → First-run check (scripts: PUT /api/setup/hf-token)")


class HubRepoNotFound(ModelDeckError):
    status = 404
    code = "hub_repo_not_found"


class HubRevisionNotFound(ModelDeckError):
    status = 404
    code = "hub_revision_not_found"


class HubVariantNotFound(ModelDeckError):
    status = 404
    code = "hub_variant_not_found"


class HubNotServable(ModelDeckError):
    """The repository has no GGUF and no safetensors weights: no recipe can serve it."""

    status = 422
    code = "hub_not_servable"


class HubGated(ModelDeckError):
    """A gated repository whose files the token (or no token) may not read."""

    status = 403
    code = "hub_gated"


class HubTokenRejected(ModelDeckError):
    """The Hub refused the saved token itself (revoked, mistyped)."""

    status = 403
    code = "hub_token_invalid"


class HubUnreachable(ModelDeckError):
    """The Hub did not answer, or answered with an error of its own (5xx, 429)."""

    status = 502
    code = "hub_unreachable"


class InvalidHubRequest(ModelDeckError):
    """A repo id, revision or variant that cannot be one (``..``, spaces, too long)."""

    status = 422
    code = "invalid_request"


# --------------------------------------------------------------------------- answers


Gated = Literal[False, "auto", "manual"]
FitLevel = Literal["fits", "partial_offload", "cpu_only", "too_big", "unknown"]


class HubModel(BaseModel):
    """A repository as a search result lists it."""

    repo_id: str
    downloads: int | None = None
    likes: int | None = None
    license: str | None = None
    gated: Gated = False
    last_modified: str | None = Field(None, description="ISO 8601")
    pipeline_tag: str | None = None
    formats: list[Literal["gguf", "safetensors"]] = Field(default_factory=list)


class HubFile(BaseModel):
    """One file of a repository at a revision."""

    path: str
    size: int | None = None
    sha256: str | None = Field(None, description="LFS files only: the content's sha256")


class VariantFile(BaseModel):
    path: str
    size: int | None = None


class Launch(BaseModel):
    """What to launch: a recipe, and the model string in that recipe's syntax."""

    recipe: str
    model: str


class DeviceFit(BaseModel):
    """Whether a variant fits one device now."""

    device: str = Field(description="a GPU index ('0') or 'cpu'")
    name: str
    level: FitLevel
    message: str
    free_bytes: int | None = None
    need_bytes: int | None = None


class Variant(BaseModel):
    """A unit to download and launch: one GGUF quantization, or one safetensors shard set."""

    id: str = Field(description="the quantization (Q4_K_M) or the dtype (bf16)")
    format: Literal["gguf", "safetensors"]
    files: list[VariantFile]
    size_bytes: int = Field(description="all the variant's files (what a download fetches)")
    weights_bytes: int = Field(description="the weight files only (what the fit check sizes)")
    dtype: str | None = None
    runtimes: list[str]
    launch: Launch = Field(description="the suggested runtime and model (the first of ``launches``)")
    launches: list[Launch] = Field(default_factory=list, description="every runtime here that serves it, "
                                                                      "with the model in that runtime's syntax")
    fit: list[DeviceFit] = Field(default_factory=list)
    downloaded: bool = False


class HubModelDetail(HubModel):
    """A model page: the repository, its variants, and every file."""

    revision: str = Field(description="the commit the page describes")
    servable: bool
    message: str
    variants: list[Variant]
    files: list[HubFile]
    endpoint: str


class HubSearchAnswer(BaseModel):
    results: list[HubModel]
    endpoint: str


# --------------------------------------------------------------------------- validation


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it can be a Hub model id (``namespace/name``).

    Raises:
        InvalidHubRequest: anything else, saying what a valid id looks like.
    """
    if not isinstance(repo_id, str) or not REPO_ID_RE.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id \
            or repo_id.endswith(".git"):
        shown = repo_id if isinstance(repo_id, str) and len(repo_id) <= 120 else f"{str(repo_id)[:120]}…"
        raise InvalidHubRequest(
            f"'{shown}' is not a Hugging Face model id.",
            hint="Give it as namespace/name, e.g. bartowski/Qwen2.5-0.5B-Instruct-GGUF: letters, digits, '-', "
                 "'_' and '.', at most 96 characters each side, no spaces, '..' or '--'.")
    return repo_id


def check_revision(revision: str) -> str:
    if not REVISION_RE.fullmatch(revision or "") or ".." in revision or revision.startswith("/"):
        raise InvalidHubRequest(f"'{revision[:80]}' is not a revision.",
                                hint="Give a branch or tag name (main) or a 40-character commit id.")
    return revision


# --------------------------------------------------------------------------- file names -> variants


def gguf_quant(path: str) -> str | None:
    """The quantization a GGUF file's name carries (``Qwen2.5-0.5B-Instruct-Q4_K_M.gguf`` -> ``Q4_K_M``), as written."""
    stem = _SPLIT_RE.sub("", PurePosixPath(path).name.removesuffix(".gguf").removesuffix(".GGUF"))
    m = _QUANT_RE.search(stem)
    return m.group(1) if m else None


def _is_mmproj(path: str) -> bool:
    return PurePosixPath(path).name.lower().startswith("mmproj")


def _format_of(path: str) -> str | None:
    name = path.lower()
    for suffix in (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".ckpt",
                   ".tflite", ".mlmodel", ".npz", ".nemo"):
        if name.endswith(suffix):
            return {".bin": "pytorch (.bin)", ".pt": "pytorch (.pt)", ".pth": "pytorch (.pth)",
                    ".h5": "keras (.h5)", ".msgpack": "flax (.msgpack)"}.get(suffix, suffix[1:])
    return None


def formats_found(paths: Sequence[str]) -> list[str]:
    """The weight formats among ``paths``, most files first (``["onnx", "pytorch (.bin)"]``)."""
    counts: dict[str, int] = {}
    for p in paths:
        if (f := _format_of(p)) is not None:
            counts[f] = counts.get(f, 0) + 1
    return sorted(counts, key=lambda f: -counts[f])


@dataclass(frozen=True)
class _Group:
    key: str  # what makes the files one variant
    files: tuple[HubFile, ...]
    tag: str | None


def _gguf_groups(files: Sequence[HubFile]) -> list[_Group]:
    groups: dict[str, list[HubFile]] = {}
    for f in files:
        if f.path.lower().endswith(".gguf") and not _is_mmproj(f.path):
            key = _SPLIT_RE.sub("", f.path[:-5])
            groups.setdefault(key, []).append(f)
    # Smallest first, as quantization lists read (Q2_K ... Q8_0, F16).
    ordered = sorted(groups.items(), key=lambda kv: (_size(kv[1]), kv[0]))
    return [_Group(k, tuple(sorted(v, key=lambda f: f.path)), gguf_quant(v[0].path)) for k, v in ordered]


def _safetensors_groups(files: Sequence[HubFile]) -> list[_Group]:
    """Shard sets at the repository's root (runtimes load from there): ``model-0000i-of-0000N`` as one."""
    groups: dict[str, list[HubFile]] = {}
    for f in files:
        if "/" in f.path or not f.path.endswith(".safetensors"):
            continue
        m = _SHARD_RE.match(f.path)
        key = f"{m['prefix']}-of-{m['total']}" if m else f.path.removesuffix(".safetensors")
        groups.setdefault(key, []).append(f)
    ordered = sorted(groups.items(), key=lambda kv: (not kv[0].startswith("model"), kv[0]))
    return [_Group(k, tuple(sorted(v, key=lambda f: f.path)), None) for k, v in ordered]


def _support_files(files: Sequence[HubFile], group: _Group) -> list[HubFile]:
    """The root files a safetensors runtime reads besides the weights: config, tokenizer, index of this set."""
    prefix = group.key.split("-of-")[0] if "-of-" in group.key else group.key
    out = []
    for f in files:
        name = f.path
        if "/" in name or name.lower().endswith(_OTHER_WEIGHTS):
            continue
        if name.endswith(".safetensors.index.json"):
            if name == f"{prefix}.safetensors.index.json":
                out.append(f)
            continue
        if name.lower().endswith(_SUPPORT_SUFFIXES):
            out.append(f)
    return out


def _size(files: Sequence[HubFile]) -> int:
    return sum(f.size or 0 for f in files)


def build_variants(repo_id: str, files: Sequence[HubFile], catalog: Catalog | None, dtype: str | None,
                   settings: Settings | None = None) -> list[Variant]:
    """Group ``files`` into variants with their runtimes and launch suggestion (no fit yet).

    Args:
        repo_id: the repository (it goes into the launch model string).
        files: every file with its size.
        catalog: the recipes; runtimes not in it are left out (None: all are listed).
        dtype: the safetensors weights' dtype (config.json / header), short form ("bf16").
        settings: for the launch model check (``launch_plan.resolve_model``); None skips it.
    """
    def present(names: Sequence[str]) -> list[str]:
        return [n for n in names if catalog is None or n in catalog.recipes]

    variants: list[Variant] = []
    gguf = _gguf_groups(files)
    tags = [g.tag for g in gguf]
    for g in gguf:
        # The id is the quantization when it names this group alone; else the file's own name.
        unique = g.tag is not None and tags.count(g.tag) == 1
        vid = g.tag if unique else PurePosixPath(g.key).name
        model = f"{repo_id}:{g.tag}" if unique else repo_id
        runtimes = present(GGUF_RUNTIMES)
        # Ollama pulls a Hub GGUF as hf.co/org/repo:QUANT (the same tag llama.cpp's -hf takes).
        launches = _launches(runtimes or list(GGUF_RUNTIMES), {"ollama": f"hf.co/{model}"}, model, repo_id, settings)
        variants.append(Variant(
            id=vid, format="gguf", files=[VariantFile(path=f.path, size=f.size) for f in g.files],
            size_bytes=_size(g.files), weights_bytes=_size(g.files), dtype=g.tag, runtimes=runtimes,
            launch=launches[0], launches=launches))
    sets = _safetensors_groups(files)
    for i, g in enumerate(sets):
        short = dtype or "safetensors"
        vid = short if i == 0 else f"{short}-{g.key}"
        support = _support_files(files, g)
        runtimes = present(SAFETENSORS_RUNTIMES)
        all_files = [*g.files, *support]
        launches = _launches(runtimes or list(SAFETENSORS_RUNTIMES), {}, repo_id, repo_id, settings)
        variants.append(Variant(
            id=vid, format="safetensors", files=[VariantFile(path=f.path, size=f.size) for f in all_files],
            size_bytes=_size(all_files), weights_bytes=_size(g.files), dtype=dtype, runtimes=runtimes,
            launch=launches[0], launches=launches))
    return variants


def _launches(runtimes: list[str], special: dict[str, str], model: str, repo_id: str,
              settings: Settings | None) -> list[Launch]:
    """Each runtime with the model string its recipe takes, checked with the launch rules' own model check.

    llama.cpp's ``-hf`` takes ``org/repo[:QUANT]`` (containers/llama-cpp.toml); Ollama
    ``hf.co/org/repo[:QUANT]``; vLLM, SGLang and TGI ``org/repo``. A model string the launch check
    would refuse falls back to the repo id.
    """
    out = []
    for recipe in runtimes:
        text = special.get(recipe, model)
        if settings is not None:
            from backend.errors import InvalidLaunch
            from backend.launch_plan import resolve_model

            try:
                resolve_model(text, settings)
            except InvalidLaunch:
                text = repo_id
        out.append(Launch(recipe=recipe, model=text))
    return out


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class GpuFree:
    """One GPU's memory now (from the stats sampler's latest snapshot)."""

    index: int
    name: str
    free_bytes: int | None
    total_bytes: int | None


def gpus_from_snapshot(snapshot) -> list[GpuFree]:
    """The GPUs of a ``StatsSnapshot`` (None: no sample yet, no GPUs known)."""
    out = []
    for g in (snapshot.gpus if snapshot is not None else []):
        free = (g.memory_total_bytes - g.memory_used_bytes
                if g.memory_total_bytes is not None and g.memory_used_bytes is not None else None)
        out.append(GpuFree(g.index, g.name or f"GPU {g.index}", free, g.memory_total_bytes))
    return out


def host_available(snapshot) -> int | None:
    """Host memory available now: the snapshot's, else psutil's."""
    if snapshot is not None:
        return snapshot.host.mem_available_bytes
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown is an answer
        return None


def fit_variant(variant: Variant, recipe: Recipe | None, gpus: Sequence[GpuFree],
                host_free: int | None) -> list[DeviceFit]:
    """A verdict per GPU and one for the CPU, with the launch memory model (fitcheck).

    GGUF (llama.cpp) that does not fit a GPU but fits that GPU plus host memory is
    ``partial_offload`` (llama.cpp keeps the layers it cannot offload in host memory); on the CPU
    alone it is ``cpu_only`` when host memory holds it. Safetensors runtimes need a GPU and reserve
    their share of it (vLLM's 90%), as ``fitcheck.fit_verdict`` models.
    """
    if recipe is None:
        return [DeviceFit(device="cpu", name="CPU", level="unknown",
                          message=f"none of {', '.join(variant.runtimes) or 'its runtimes'} is in the catalog")]
    estimate = estimate_weights(recipe, variant.weights_bytes, f"{variant.id} from the Hub")
    need = estimate.bytes_needed
    gguf = variant.format == "gguf"
    out: list[DeviceFit] = []
    for gpu in gpus:
        label = f"GPU {gpu.index}"
        verdict = fit_verdict(estimate, gpu.free_bytes, gpu.total_bytes, recipe, gpu_label=label)
        level: FitLevel
        message = verdict.message
        if verdict.level in ("ok", "warn"):
            level = "fits"
        elif verdict.level == "unknown":
            level = "unknown"
        elif gguf and need is not None and gpu.free_bytes is not None and host_free is not None \
                and need <= gpu.free_bytes + host_free:
            level = "partial_offload"
            share = gpu.free_bytes / need if need else 0
            message = (f"needs about {gib(need)}; {gib(gpu.free_bytes)} free on {label} holds about {share:.0%} of it "
                       f"and llama.cpp keeps the other layers in host memory ({gib(host_free)} available) — "
                       "runs, slower than a full offload")
        else:
            level = "too_big"
            if gguf and need is not None and gpu.free_bytes is not None and host_free is not None:
                message = (f"needs about {gib(need)}; {gib(gpu.free_bytes)} free on {label} and {gib(host_free)} "
                           "of host memory together cannot hold it — choose a smaller quantization")
        out.append(DeviceFit(device=str(gpu.index), name=gpu.name, level=level, message=message,
                             free_bytes=gpu.free_bytes, need_bytes=need))
    if not gguf:
        out.append(DeviceFit(device="cpu", name="CPU", level="too_big", need_bytes=need, free_bytes=host_free,
                             message="vLLM, SGLang and TGI need an NVIDIA GPU for safetensors weights; to run on the "
                                     "CPU, pick a GGUF build of this model (llama.cpp)"))
    elif host_free is None or need is None:
        out.append(DeviceFit(device="cpu", name="CPU", level="unknown", need_bytes=need, free_bytes=host_free,
                             message="host memory available could not be read"))
    elif need <= host_free:
        out.append(DeviceFit(device="cpu", name="CPU", level="cpu_only", need_bytes=need, free_bytes=host_free,
                             message=f"runs on the CPU: needs about {gib(need)}; {gib(host_free)} of host memory "
                                     "available (slower than a GPU)"))
    else:
        out.append(DeviceFit(device="cpu", name="CPU", level="too_big", need_bytes=need, free_bytes=host_free,
                             message=f"needs about {gib(need)}; only {gib(host_free)} of host memory is available — "
                                     "choose a smaller quantization or free memory"))
    return out


def variant_downloaded(settings: Settings, repo_id: str, revision: str, variant: Variant) -> bool:
    """Whether every file of ``variant`` is in the Hugging Face cache folder at ``revision``.

    Only a host-folder cache can be looked at here (a Docker volume is the library's to list).
    """
    cache = settings.cache_dirs.get("huggingface")
    if cache is None:
        return False
    name = "models--" + repo_id.replace("/", "--")
    for root in (Path(cache).expanduser() / "hub" / name, Path(cache).expanduser() / name):
        snapshot = root / "snapshots" / revision
        if snapshot.is_dir():
            return all((snapshot / f.path).is_file() for f in variant.files)
    return False


# --------------------------------------------------------------------------- the client


def hub_endpoint(settings: Settings) -> str:
    """Where the Hub is: ``MODELDECK_HF_ENDPOINT``, else ``HF_ENDPOINT``, else huggingface.co."""
    return (settings.hf_endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


_SORTS = {"downloads": "downloads", "likes": "likes", "updated": "lastModified"}
_EXPAND = ("downloads", "likes", "gated", "lastModified", "pipeline_tag", "tags", "cardData")


class HubClient:
    """Blocking calls to the Hub; run them off the event loop (``asyncio.to_thread``).

    Args:
        settings: the endpoint (``hf_endpoint``) and the home folder the token is stored in.
        secrets: where the token comes from: a callable returning it (or None), else the token
            saved in ModelDeck (``<home>/secrets/HF_TOKEN``), then the ``HF_TOKEN`` variable.
        timeout: seconds each HTTP call may take.
    """

    def __init__(self, settings: Settings, secrets: Callable[[], str | None] | None = None,
                 timeout: float = HUB_TIMEOUT_S):
        self.settings = settings
        self.endpoint = hub_endpoint(settings)
        self._secrets = secrets
        self.timeout = timeout

    def token(self) -> str | None:
        """The token sent to the Hub: the saved one first (what the person entered), then ``HF_TOKEN``."""
        if self._secrets is not None:
            return self._secrets()
        return read_secret(self.settings.home, HF_TOKEN) or os.environ.get(HF_TOKEN) or None

    # -- errors

    def _unreachable(self, exc: BaseException) -> HubUnreachable:
        return HubUnreachable(f"The Hugging Face Hub at {self.endpoint} did not answer: {type(exc).__name__}: {exc}"[:500],
                              hint="Check the network connection (and HF_ENDPOINT / MODELDECK_HF_ENDPOINT if you set "
                                   "one), then try again.")

    def _translate(self, exc: BaseException, repo_id: str | None = None, revision: str | None = None) -> ModelDeckError:
        """A huggingface_hub or transport error as the domain error a person can act on."""
        import httpx2
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, HFValidationError,
                                            RepositoryNotFoundError, RevisionNotFoundError)

        page = f"{self.endpoint}/{repo_id}" if repo_id else self.endpoint
        if isinstance(exc, HFValidationError):  # check_repo_id / check_revision let through what the client refuses
            return InvalidHubRequest(f"The Hub client refused the request: {exc}",
                                     hint="Give the repo id as namespace/name and the revision as main or a commit id.")
        if isinstance(exc, GatedRepoError):
            status = exc.response.status_code if exc.response is not None else None
            why = ("no Hugging Face token is saved" if status == 401 or not self.token()
                   else "the saved Hugging Face token has no access to it")
            return HubGated(f"{repo_id} is a gated model and {why}.",
                            hint=f"Accept the licence on {page}, then {SAVE_TOKEN}.", details={"url": page})
        if isinstance(exc, RevisionNotFoundError):
            return HubRevisionNotFound(f"{repo_id} has no revision '{revision}'.",
                                       hint="Use main, a branch or tag that exists, or a commit id from the model page.")
        if isinstance(exc, RepositoryNotFoundError):
            return HubRepoNotFound(f"No model {repo_id} on the Hub at {self.endpoint}.",
                                   hint="Check the spelling (namespace/name), or search for it; a private model needs "
                                        f"a token with access: {SAVE_TOKEN}.")
        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            if status == 401:
                return HubTokenRejected("The Hub refused the saved Hugging Face token.",
                                        hint="Make a token with read access at https://huggingface.co/settings/tokens, then "
                                             f"{SAVE_TOKEN}.")
            if status == 429:
                return HubUnreachable(f"The Hub at {self.endpoint} is rate-limiting requests (429).",
                                      hint="Wait a minute and try again; a saved token raises the limit.")
            return HubUnreachable(f"The Hub at {self.endpoint} answered {status}.",
                                  hint="Try again in a moment; if it persists, the Hub may be down "
                                       "(https://status.huggingface.co).")
        if isinstance(exc, (httpx2.TransportError, OSError, TimeoutError)):
            return self._unreachable(exc)
        if isinstance(exc, ModelDeckError):
            return exc
        return self._unreachable(exc)

    def _headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return build_hf_headers(token=self.token() or False, library_name="modeldeck")

    # -- search

    def search(self, q: str | None = None, task: str | None = None, fmt: str | None = None,
               sort: str = "downloads", limit: int = 30) -> list[HubModel]:
        """Repositories matching ``q`` (a substring of the id), a task and a format, best first.

        One ``GET /api/models`` page, as ``HfApi.list_models`` sends it, but without its retries
        (five, with back-off): a dead Hub must be reported in seconds.
        """
        from huggingface_hub.hf_api import ModelInfo
        from huggingface_hub.utils import get_session, hf_raise_for_status

        params: list[tuple[str, str]] = []
        if q:
            params.append(("search", q))
        if fmt:
            params.append(("filter", fmt))
        if task:
            params.append(("pipeline_tag", task))
        params += [("sort", _SORTS.get(sort, "downloads")), ("direction", "-1"), ("limit", str(limit))]
        params += [("expand", e) for e in _EXPAND]
        try:
            r = get_session().get(f"{self.endpoint}/api/models", params=params, headers=self._headers(),
                                  timeout=self.timeout)
            hf_raise_for_status(r)
            items = r.json()
            if not isinstance(items, list):
                raise ValueError("the answer is not a list")
            return [summary(ModelInfo(**{"siblings": None, **item})) for item in items[:limit]]
        except ModelDeckError:
            raise
        except ValueError as exc:
            raise HubUnreachable(f"The Hub at {self.endpoint} answered something that is not a model list: {exc}",
                                 hint="Check HF_ENDPOINT / MODELDECK_HF_ENDPOINT: it must be a Hugging Face Hub.") from exc
        except Exception as exc:  # noqa: BLE001 - every failure becomes a domain error
            raise self._translate(exc) from exc

    # -- a model

    def model(self, repo_id: str, revision: str = "main", catalog: Catalog | None = None) -> HubModelDetail:
        """The model page: the repository, its files with sizes, and its variants (fit not filled in).

        Raises:
            InvalidHubRequest: a bad repo id or revision.
            HubRepoNotFound, HubRevisionNotFound: no such repo or revision.
            HubNotServable: neither GGUF nor safetensors weights (the message names what is there).
            HubGated: a gated repo the token may not read (its files are probed).
            HubUnreachable: the Hub did not answer.
        """
        check_repo_id(repo_id)
        check_revision(revision)
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint, token=self.token() or False,
                         library_name="modeldeck").model_info(repo_id, revision=revision, files_metadata=True,
                                                              timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, repo_id, revision) from exc
        files = [HubFile(path=s.rfilename, size=s.size, sha256=s.lfs.sha256 if s.lfs is not None else None)
                 for s in info.siblings or []]
        head = summary(info)
        sha = info.sha or revision
        has_gguf = bool(_gguf_groups(files))
        has_st = bool(_safetensors_groups(files))
        if not (has_gguf or has_st):
            found = formats_found([f.path for f in files])
            what = f"it has {', '.join(found)} weights" if found else "it has no weight files at all"
            raise HubNotServable(
                f"{repo_id} cannot be served by ModelDeck's runtimes: {what}, and they need GGUF (llama.cpp, "
                "Ollama) or safetensors (vLLM, SGLang, TGI).",
                hint="Search for a GGUF or safetensors build of this model (e.g. add 'GGUF' to the search).",
                details={"formats": found})
        dtype = None
        config = None
        if has_st or head.gated:
            # config.json: the dtype, and for a gated repo the proof that the token may read its files.
            config = self._optional(self._read_json, repo_id, sha, "config.json") \
                if any(f.path == "config.json" for f in files) else None
        if head.gated and config is None:
            probe = next(f for g in (_gguf_groups(files) or _safetensors_groups(files)) for f in g.files)
            self._probe(repo_id, sha, probe.path)
        if has_st:
            dtype = _config_dtype(config)
            if dtype is None:
                first = _safetensors_groups(files)[0].files[0]
                dtype = self._optional(self._safetensors_dtype, repo_id, sha, first.path)
        variants = build_variants(repo_id, files, catalog, dtype, self.settings)
        kinds = [k for k, present in (("GGUF", has_gguf), ("safetensors", has_st)) if present]
        message = f"{len(variants)} variant{'s' if len(variants) != 1 else ''} ({' and '.join(kinds)})"
        if head.gated:
            message += "; gated: your saved token has access"
        return HubModelDetail(**head.model_dump(), revision=sha, servable=True, message=message, variants=variants,
                              files=files, endpoint=self.endpoint)

    def variant_files(self, repo_id: str, revision: str, variant_id: str) -> list[HubFile]:
        """The files to download for one variant (weights, plus config and tokenizer for safetensors).

        Raises:
            HubVariantNotFound: no variant ``variant_id`` (the message lists the ones there are);
            and everything :meth:`model` raises.
        """
        detail = self.model(repo_id, revision)
        variant = next((v for v in detail.variants if v.id == variant_id), None)
        if variant is None:
            known = ", ".join(v.id for v in detail.variants)
            raise HubVariantNotFound(f"{repo_id} has no variant '{variant_id}'.", hint=f"Its variants: {known}.")
        by_path = {f.path: f for f in detail.files}
        return [by_path[f.path] for f in variant.files]

    # -- small reads

    @staticmethod
    def _optional(read, *args):
        """``read(*args)``, or None when the file cannot be read for a reason other than access: the
        dtype is a detail the page can do without (a gated refusal still raises: it is the answer)."""
        try:
            return read(*args)
        except (HubUnreachable, HubRevisionNotFound):
            return None

    def _url(self, repo_id: str, revision: str, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(repo_id, path, revision=revision, endpoint=self.endpoint)

    def _get(self, repo_id: str, revision: str, path: str, headers: dict[str, str] | None = None):
        from huggingface_hub.utils import get_session, hf_raise_for_status

        try:
            r = get_session().get(self._url(repo_id, revision, path), headers={**self._headers(), **(headers or {})},
                                  timeout=self.timeout, follow_redirects=True)
            hf_raise_for_status(r)
            return r
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, repo_id, revision) from exc

    def _probe(self, repo_id: str, revision: str, path: str) -> None:
        """Read one byte of ``path``: raises HubGated when the token may not."""
        self._get(repo_id, revision, path, {"Range": "bytes=0-0"})

    def _read_json(self, repo_id: str, revision: str, path: str) -> dict | None:
        r = self._get(repo_id, revision, path, {"Range": f"bytes=0-{_MAX_SMALL_FILE - 1}"})
        try:
            data = json.loads(r.content)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _safetensors_dtype(self, repo_id: str, revision: str, path: str) -> str | None:
        """The dtype most of a shard's tensors have, from its header (two small Range reads)."""
        try:
            (n,) = struct.unpack("<Q", self._get(repo_id, revision, path, {"Range": "bytes=0-7"}).content[:8])
            if not 0 < n <= _MAX_SMALL_FILE:
                return None
            header = json.loads(self._get(repo_id, revision, path, {"Range": f"bytes=8-{7 + n}"}).content[:n])
        except (struct.error, ValueError):
            return None
        counts: dict[str, int] = {}
        for name, t in header.items():
            if name != "__metadata__" and isinstance(t, dict):
                counts[str(t.get("dtype"))] = counts.get(str(t.get("dtype")), 0) + 1
        top = max(counts, key=counts.get, default=None)
        return _DTYPE_SHORT.get(top, top.lower()) if top else None


def _config_dtype(config: dict | None) -> str | None:
    """A config.json's weight type: its quantization method (awq, gptq, fp8) or torch dtype, short."""
    if not config:
        return None
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and isinstance(quant.get("quant_method"), str):
        return quant["quant_method"].lower()
    dtype = config.get("torch_dtype") or config.get("dtype")
    if not isinstance(dtype, str) and isinstance(config.get("text_config"), dict):
        dtype = config["text_config"].get("torch_dtype")
    return _DTYPE_SHORT.get(dtype, dtype) if isinstance(dtype, str) else None


def summary(info) -> HubModel:
    """A ``huggingface_hub`` ModelInfo as a search result."""
    tags = list(info.tags or [])
    license_ = next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None)
    card = info.card_data
    if license_ is None and card is not None:
        value = card.get("license") if hasattr(card, "get") else None
        license_ = value if isinstance(value, str) else None
    gated = info.gated if info.gated in ("auto", "manual") else False
    formats = [f for f in SERVABLE if f in tags]
    for s in info.siblings or []:
        fmt = "gguf" if s.rfilename.lower().endswith(".gguf") else (
            "safetensors" if s.rfilename.endswith(".safetensors") else None)
        if fmt and fmt not in formats:
            formats.append(fmt)
    return HubModel(repo_id=info.id, downloads=info.downloads, likes=info.likes, license=license_, gated=gated,
                    last_modified=info.last_modified.isoformat().replace("+00:00", "Z") if info.last_modified else None,
                    pipeline_tag=info.pipeline_tag, formats=sorted(formats, key=SERVABLE.index))


__all__ = ["HubClient", "HubModel", "HubModelDetail", "HubFile", "Variant", "DeviceFit", "Launch", "GpuFree",
           "HubRepoNotFound", "HubRevisionNotFound", "HubVariantNotFound", "HubNotServable", "HubGated",
           "HubTokenRejected", "HubUnreachable", "InvalidHubRequest", "check_repo_id", "check_revision",
           "gguf_quant", "build_variants", "fit_variant", "gpus_from_snapshot", "host_available",
           "variant_downloaded", "hub_endpoint", "GIB"]

"""Hub search results and a model's variants as the Discover page shows them (no Qt).

The shapes are the API's (``GET /api/hub/search``, ``GET /api/hub/models/{repo}``): HubModel,
Variant and its per-device ``fit`` verdicts from the same memory model launches use.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from desktop.formatting import format_bytes
from desktop.library.units import format_age, format_count

FORMATS = [("GGUF", "gguf"), ("safetensors", "safetensors"), ("Any format", "")]
SORTS = [("Most downloads", "downloads"), ("Most likes", "likes"), ("Recently updated", "updated")]
RESULT_COLUMNS = ["Repository", "Downloads", "Likes", "Licence", "Gated", "Updated"]
VARIANT_COLUMNS = ["Quantization", "Size", "Fits", "Runtimes", "On disk"]
SEARCH_LIMIT = 50

#: A fit level: the badge's words, and the palette roles of its text and background.
FIT_LEVELS = {
    "fits": ("fits", "success", "ok_bg"),
    "partial_offload": ("partial offload", "warning", "warn_bg"),
    "cpu_only": ("CPU only", "warning", "warn_bg"),
    "too_big": ("too big", "danger", "error_bg"),
    "unknown": ("unknown", "text_muted", "surface_alt"),
}
FIT_MARKS = {"fits": "✓", "partial_offload": "◐", "cpu_only": "◐", "too_big": "✕", "unknown": "?"}
RUNTIME_NAMES = {"llama-cpp": "llama.cpp", "ollama": "Ollama", "vllm": "vLLM", "sglang": "SGLang", "tgi": "TGI"}


def search_path(query: str, fmt: str = "gguf", sort: str = "downloads", limit: int = SEARCH_LIMIT) -> str:
    """The ``GET /api/hub/search`` path for the search box and filters (an empty format means any)."""
    params = {"q": query.strip(), "sort": sort, "limit": limit}
    if fmt:
        params["format"] = fmt
    return "/api/hub/search?" + urlencode(params)


def model_path(repo_id: str, revision: str = "main") -> str:
    """``GET /api/hub/models/{repo_id}``: the repo id's slash stays a path separator, the rest is quoted."""
    return f"/api/hub/models/{quote(repo_id, safe='/')}?" + urlencode({"revision": revision})


def gated_text(gated) -> str:
    """``—`` for an open repository; ``yes (automatic)`` / ``yes (manual review)`` for a gated one."""
    if not gated:
        return "—"
    return {"auto": "yes (automatic)", "manual": "yes (manual review)"}.get(str(gated), "yes")


def result_cells(model: dict) -> list[str]:
    """One search result as the results table's cells (RESULT_COLUMNS)."""
    return [model.get("repo_id", "?"), format_count(model.get("downloads")), format_count(model.get("likes")),
            model.get("license") or "—", gated_text(model.get("gated")), format_age(model.get("last_modified"))]


def gated_note(model: dict) -> str | None:
    """What a person must know before downloading a gated model, or None for an open one."""
    gated = model.get("gated")
    if not gated:
        return None
    how = ("access is granted at once" if gated == "auto"
           else "its authors review each request, which can take days")
    return (f"{model.get('repo_id', 'This model')} is gated: accept its licence on "
            f"https://huggingface.co/{model.get('repo_id', '')} ({how}), then save a token with read access (on "
            "its page here, or in Help → First-run check). ModelDeck sends that token with the download.")


def gated_access_note(model: dict) -> str | None:
    """For a gated model whose page the backend could read (so the saved token has access): what the download uses."""
    if not model.get("gated"):
        return None
    return (f"{model.get('repo_id', 'This model')} is gated; the Hub accepted your saved Hugging Face token, and the "
            "download sends it. Its licence applies to what you do with the model.")


@dataclass(frozen=True)
class FitBadge:
    """One device's verdict for a variant, as a badge: its text, colours (palette roles) and tooltip."""

    text: str
    role: str
    background: str
    tooltip: str
    level: str


def device_name(fit: dict) -> str:
    """``GPU 0`` for a GPU index, ``CPU`` for the host's memory."""
    device = str(fit.get("device", "?"))
    return "CPU" if device == "cpu" else f"GPU {device}"


def fit_badge(fit: dict) -> FitBadge:
    """A Variant's ``fit`` entry as a badge: ``✓ GPU 0 fits``, ``◐ GPU 0 partial offload``, ``✕ CPU too big``."""
    level = fit.get("level") if fit.get("level") in FIT_LEVELS else "unknown"
    words, role, background = FIT_LEVELS[level]
    where = device_name(fit)
    tip = fit.get("message") or words
    if fit.get("name") and fit.get("device") != "cpu":
        tip = f"{where} · {fit['name']}: {tip}"
    text = f"{FIT_MARKS[level]} {where} {words}"
    if where == "CPU" and level == "cpu_only":
        text = f"{FIT_MARKS[level]} CPU only"  # not "CPU CPU only"
    return FitBadge(text, role, background, tip, level)


def fit_badges(variant: dict) -> list[FitBadge]:
    """Every device's badge for a variant, GPUs first, in device order."""
    fits = list(variant.get("fit") or [])
    fits.sort(key=lambda f: (str(f.get("device")) == "cpu", str(f.get("device"))))
    return [fit_badge(f) for f in fits]


def runtimes_text(variant: dict) -> str:
    """``llama.cpp, Ollama`` for the runtimes that can serve a variant."""
    return ", ".join(RUNTIME_NAMES.get(r, r) for r in variant.get("runtimes") or []) or "—"


def other_launches(variant: dict) -> list[dict]:
    """The variant's launches on runtimes other than its first (``launch``), as the backend lists them."""
    first = variant.get("launch") or {}
    return [launch for launch in variant.get("launches") or []
            if launch.get("recipe") and launch.get("model")
            and (launch.get("recipe"), launch.get("model")) != (first.get("recipe"), first.get("model"))]


def launch_label(launch: dict) -> str:
    """``Ollama · hf.co/org/repo:Q4_K_M`` for a menu of runtimes."""
    return f"{RUNTIME_NAMES.get(launch.get('recipe'), launch.get('recipe'))} · {launch.get('model')}"


def variant_label(variant: dict) -> str:
    """``Q4_K_M`` for a GGUF quantization; ``bf16 · 2 shards`` for a safetensors set."""
    label = variant.get("id") or "?"
    shards = [f for f in variant.get("files") or [] if str(f.get("path", "")).endswith(".safetensors")]
    if variant.get("format") == "safetensors" and len(shards) > 1:  # config and tokenizer files are no shards
        label += f" · {len(shards)} shards"
    return label


def variant_cells(variant: dict) -> list[str]:
    """A variant's text cells (VARIANT_COLUMNS; the Fits cell holds the badges' words for a plain reading)."""
    return [variant_label(variant), format_bytes(variant.get("size_bytes")),
            " · ".join(b.text for b in fit_badges(variant)) or "—", runtimes_text(variant),
            "✓" if variant.get("downloaded") else ""]


def best_variant(variants: list[dict]) -> int:
    """The row to select first: the largest variant that fits fully on a GPU, else the smallest one."""
    if not variants:
        return -1
    fitting = [i for i, v in enumerate(variants)
               if any(f.get("level") == "fits" and f.get("device") != "cpu" for f in v.get("fit") or [])]
    if fitting:
        return max(fitting, key=lambda i: variants[i].get("size_bytes") or 0)
    return min(range(len(variants)), key=lambda i: variants[i].get("size_bytes") or 0)


def model_summary(model: dict) -> str:
    """The line under a model page's title: downloads, likes, licence, last update, the commit shown."""
    parts = [f"{format_count(model.get('downloads'))} downloads", f"{format_count(model.get('likes'))} likes",
             f"licence {model.get('license') or 'not stated'}", f"updated {format_age(model.get('last_modified'))}"]
    if model.get("pipeline_tag"):
        parts.insert(0, model["pipeline_tag"])
    if model.get("revision"):
        parts.append(f"commit {str(model['revision'])[:10]}")
    return " · ".join(parts)

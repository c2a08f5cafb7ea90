"""The library: the models on disk (model folders, the runtimes' caches in host folders or volumes), and deleting them.

What is listed, each with its size, where it lives, the deployments that use it and when it
was last launched:

- GGUF files in ``Settings.model_dirs`` (launched with llama.cpp as a local file);
- the Hugging Face cache (``cache_dirs["huggingface"]``, else the volume
  ``modeldeck-cache-huggingface``): a GGUF file of a snapshot is one model (``org/repo:QUANT``
  for llama.cpp), the rest of a snapshot (safetensors and configs) another (``org/repo`` for
  vLLM, SGLang, TGI); loose GGUF files in the cache folder too;
- Ollama's models (``cache_dirs["ollama"]``, else the volume ``modeldeck-cache-ollama``) from
  the manifests under ``models/manifests``.

Metadata comes from GGUF headers only (backend/cache_scan.py; the quantization is named with
the ``gguf`` package's ``LlamaFileType``), so a multi-gigabyte file costs a few milliseconds.
A volume is read by running backend/cache_scan.py in a short-lived helper container.

Ids are derived from where an entry lives and are looked up in a fresh scan: a client never
names a path, so a delete can only remove what the scan found.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from backend import cache_scan
from backend.deployment_status import Deployment
from backend.downloads import helper_labels
from backend.engine import Engine
from backend.errors import EngineUnavailable, ModelDeckError
from backend.settings import Settings

ID_RE = r"^(gguf|hf_snapshot|ollama)-[0-9a-f]{20}$"
VOLUME_TARGET = "/cache"
VOLUME_SCAN_TTL_S = 10.0
_SPLIT_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
#: Recipes that load a Hugging Face snapshot by repo id (GGUF files go to llama.cpp).
SNAPSHOT_RECIPE = "vllm"


class ModelNotFound(ModelDeckError):
    status = 404
    code = "model_not_found"


class ModelInUse(ModelDeckError):
    status = 409
    code = "model_in_use"


class GgufFacts(BaseModel):
    architecture: str | None
    parameters: int | None
    quantization: str | None
    context_length: int | None


class LaunchHint(BaseModel):
    recipe: str
    model: str


class LocalModel(BaseModel):
    """One model on disk."""

    id: str
    kind: Literal["gguf", "hf_snapshot", "ollama"]
    name: str
    repo_id: str | None = None
    revision: str | None = None
    variant: str | None = None
    path: str
    location: str
    size_bytes: int
    gguf: GgufFacts | None = None
    last_launched: str | None = None
    used_by: list[str] = []
    launch: LaunchHint | None = None


class LibraryListing(BaseModel):
    models: list[LocalModel]
    scanned_ms: float
    problems: list[str] = Field(default_factory=list,
                                description="Places that could not be read now (a cache volume while Docker is away).")


@dataclass
class _Where:
    """A place that holds models: a host folder, or a volume read through a helper container."""

    kind: str  # "model_dir" | cache kind
    root: str  # host folder, or the mount point inside the helper
    volume: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "model_dir":
            return f"model folder {self.root}"
        if self.volume:
            return f"cache {self.kind} (volume {self.volume})"
        return f"cache {self.kind} ({self.root})"

    def shown_path(self, rel: str) -> str:
        return f"{self.volume}:/{rel}" if self.volume else os.path.join(self.root, rel)


@dataclass
class _Entry:
    model: LocalModel
    where: _Where
    delete: tuple[str, list]  # cache_scan function name and its arguments after the root
    root: str  # the folder the delete function is given (a hub cache's own folder for its repos)
    host_path: str | None = None  # for matching a deployment that names a local file


def _quant_name(file_type: int | None) -> str | None:
    if file_type is None:
        return None
    try:
        from gguf import LlamaFileType
        name = LlamaFileType(file_type).name
    except (ImportError, ValueError):
        return None
    return {"ALL_F32": "F32"}.get(name, name.removeprefix("MOSTLY_"))


def _variant_from_name(filename: str) -> str | None:
    """The quantization in a GGUF file's name, as the Hub model page names the variant (backend/hub.py)."""
    from backend.hub import gguf_quant

    return gguf_quant(_SPLIT_RE.sub(".gguf", filename))


def _facts(header: dict | None) -> GgufFacts | None:
    if header is None:
        return None
    return GgufFacts(architecture=header.get("architecture"), parameters=header.get("parameters"),
                     quantization=_quant_name(header.get("file_type")), context_length=header.get("context_length"))


def _id(kind: str, *parts: str) -> str:
    return f"{kind}-" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:20]


class Library:
    """Scans the places models live and deletes what a scan found.

    Args:
        settings: model folders and cache folders.
        engine: reads cache volumes through helper containers.
        deployments: the deployments now (running or stopped), for ``used_by`` and ``last_launched``.
        helper_image: a local image with python3 for the helper containers.
    """

    def __init__(self, settings: Settings, engine: Engine, deployments: Callable[[], list[Deployment]],
                 helper_image: Callable[[], str], generation: Callable[[], int] = lambda: 0):
        self.settings = settings
        self.engine = engine
        self.deployments = deployments
        self.helper_image = helper_image
        #: Changes whenever ModelDeck itself changed a cache (a download finished): volume scans are redone.
        self.generation = generation
        self._source: str | None = None
        # A volume is read by starting a container (~0.3 s): its scan is kept VOLUME_SCAN_TTL_S
        # seconds unless ModelDeck changed the cache meanwhile.
        self._volume_scans: dict[str, tuple[float, int, dict]] = {}

    # -- scanning ---------------------------------------------------------------------

    def _places(self) -> list[_Where]:
        places = [_Where("model_dir", str(Path(d).expanduser().resolve())) for d in self.settings.model_dirs]
        for kind in ("huggingface", "ollama"):
            host = self.settings.cache_dirs.get(kind)
            if host is not None:
                places.append(_Where(kind, str(Path(host).expanduser().resolve())))
            else:
                places.append(_Where(kind, VOLUME_TARGET, volume=f"modeldeck-cache-{kind}"))
        return places

    def _run(self, where: _Where, *argv: str) -> dict:
        """Run backend/cache_scan.py's ``main`` on ``where`` (in-process for a folder, in a helper for a volume)."""
        if where.volume is None:
            if argv[0] == "scan":
                return cache_scan.scan_cache(where.root, argv[1]) if os.path.isdir(where.root) else {}
            fn = getattr(cache_scan, argv[1])
            return {"freed": fn(where.root, *json.loads(argv[2]))}
        if self._source is None:
            self._source = inspect.getsource(cache_scan)
        code, out, err = self.engine.run_in_volume(
            self.helper_image(), where.volume,
            ["python3", "-c", self._source, argv[0], where.root, *argv[1:]],
            labels=helper_labels(self.settings), target=VOLUME_TARGET, timeout=300)
        if code != 0:
            raise ModelDeckError(f"Reading the volume {where.volume} failed: {err.strip()[-400:]}",
                                 hint="Check that Docker runs and the volume is not in use by a broken container.")
        return json.loads(out.strip().splitlines()[-1])

    def _scan_place(self, where: _Where) -> dict:
        if where.kind == "model_dir":
            return {"ggufs": cache_scan.scan_ggufs(where.root)} if os.path.isdir(where.root) else {}
        if where.volume is None:
            return self._run(where, "scan", where.kind)
        now, generation = time.monotonic(), self.generation()
        cached = self._volume_scans.get(where.volume)
        if cached is not None and now - cached[0] < VOLUME_SCAN_TTL_S and cached[1] == generation:
            return cached[2]
        found = self._run(where, "scan", where.kind) if self.engine.volume_exists(where.volume) else {}
        self._volume_scans[where.volume] = (now, generation, found)
        return found

    def _entries(self, problems: list[str] | None = None) -> list[_Entry]:
        """Every model found; a place that cannot be read now (a volume while Docker is away) is skipped
        and said in ``problems``."""
        entries: list[_Entry] = []
        for where in self._places():
            try:
                found = self._scan_place(where)
            except ModelDeckError as exc:
                if problems is not None:
                    problems.append(f"{where.label}: {exc.message} {exc.hint or ''}".strip())
                continue
            entries += self._ggufs(where, found.get("ggufs", []))
            for hub in found.get("hubs", []):
                entries += self._hub(where, hub["repos"], hub["prefix"])
            entries += self._ollama(where, found.get("ollama", []))
        return entries

    def _ggufs(self, where: _Where, files: Iterable[dict]) -> list[_Entry]:
        out = []
        for f in files:
            shown = where.shown_path(f["path"])
            variant = _variant_from_name(f["path"])
            model = LocalModel(
                id=_id("gguf", where.label, f["path"]), kind="gguf", name=os.path.basename(f["path"]),
                variant=variant, path=shown, location=where.label, size_bytes=f["size"], gguf=_facts(f["gguf"]),
                launch=LaunchHint(recipe="llama-cpp", model=shown) if where.kind == "model_dir" else None)
            out.append(_Entry(model, where, ("delete_file", [f["path"]]), where.root,
                              host_path=shown if where.volume is None else None))
        return out

    def _hub(self, where: _Where, repos: Iterable[dict], prefix: str) -> list[_Entry]:
        out = []
        hub_root = f"{where.root}/{prefix}" if prefix else where.root
        for repo in repos:
            repo_id, folder = repo["repo_id"], repo["folder"]
            for commit, files in repo["snapshots"].items():
                base = "/".join(p for p in (prefix, folder, "snapshots", commit) if p)
                ggufs = [f for f in files if f["path"].lower().endswith(".gguf")]
                others = [f for f in files if not f["path"].lower().endswith(".gguf")]
                # Split GGUFs (-00001-of-00003) are one model: grouped by their name without the part.
                groups: dict[str, list[dict]] = {}
                for f in ggufs:
                    groups.setdefault(_SPLIT_RE.sub(".gguf", f["path"]), []).append(f)
                for name, parts in groups.items():
                    parts.sort(key=lambda f: f["path"])
                    variant = _variant_from_name(name)
                    head = parts[0]
                    tag = f"{repo_id}:{variant}" if variant else repo_id
                    shown = where.shown_path(f"{base}/{head['path']}")
                    model = LocalModel(
                        id=_id("gguf", where.label, prefix, folder, commit, name), kind="gguf",
                        name=f"{repo_id} {variant or os.path.basename(name)}", repo_id=repo_id, revision=commit,
                        variant=variant, path=shown, location=where.label,
                        size_bytes=sum(f["size"] for f in parts), gguf=_facts(head["gguf"]),
                        launch=LaunchHint(recipe="llama-cpp", model=tag))
                    out.append(_Entry(model, where, ("delete_hub_files", [folder, commit, [f["path"] for f in parts]]),
                                      hub_root, host_path=shown if where.volume is None else None))
                weights = [f for f in others if f["path"].endswith((".safetensors", ".bin", ".pt"))]
                if weights:
                    model = LocalModel(
                        id=_id("hf_snapshot", where.label, prefix, folder, commit), kind="hf_snapshot", name=repo_id,
                        repo_id=repo_id, revision=commit, path=where.shown_path(base), location=where.label,
                        size_bytes=sum(f["size"] for f in others),
                        launch=LaunchHint(recipe=SNAPSHOT_RECIPE, model=repo_id))
                    out.append(_Entry(model, where, ("delete_hub_files",
                                                     [folder, commit, [f["path"] for f in others]]), hub_root))
        return out

    def _ollama(self, where: _Where, manifests: Iterable[dict]) -> list[_Entry]:
        out = []
        for m in manifests:
            name = m["model"] if m["namespace"] == "library" else f"{m['namespace']}/{m['model']}"
            if m["host"] != "registry.ollama.ai":
                name = f"{m['host']}/{m['namespace']}/{m['model']}"
            name = f"{name}:{m['tag']}"
            model = LocalModel(id=_id("ollama", where.label, m["manifest"]), kind="ollama", name=name,
                               variant=m["tag"], path=where.shown_path(m["manifest"]), location=where.label,
                               size_bytes=m["size"], gguf=_facts(m["gguf"]),
                               launch=LaunchHint(recipe="ollama", model=name))
            out.append(_Entry(model, where, ("delete_ollama_model", [m["manifest"]]), where.root))
        return out

    # -- who uses what ----------------------------------------------------------------

    @staticmethod
    def _uses(dep: Deployment, entry: _Entry) -> bool:
        m, model = entry.model, dep.model
        if model.startswith(("/", "~")):
            if entry.host_path is None:
                return False
            target = os.path.realpath(os.path.expanduser(model))
            here = os.path.realpath(entry.host_path)
            return here == target or here.startswith(target.rstrip(os.sep) + os.sep)
        if m.kind == "ollama":
            if dep.recipe != "ollama":
                return False
            name, _, tag = model.partition(":")
            return f"{name}:{tag or 'latest'}" == m.name
        repo, _, tag = model.partition(":")
        if m.repo_id is None or repo.lower() != m.repo_id.lower() or dep.recipe == "ollama":
            return False
        if m.kind == "gguf":
            return not tag or (m.variant or "").upper() == tag.upper() or tag.lower() in m.path.lower()
        return dep.recipe != "llama-cpp"

    def list(self) -> LibraryListing:
        began = time.perf_counter()
        problems: list[str] = []
        entries = self._entries(problems)
        self._annotate(entries)
        models = sorted((e.model for e in entries), key=lambda m: (m.location, m.name.lower()))
        return LibraryListing(models=models, scanned_ms=round((time.perf_counter() - began) * 1000, 2),
                              problems=problems)

    def _annotate(self, entries: list[_Entry]) -> None:
        try:
            deps = self.deployments()
        except EngineUnavailable:
            deps = []
        for e in entries:
            users = [d for d in deps if d.container_id and self._uses(d, e)]
            e.model.used_by = sorted(d.id for d in users)
            times = [d.started_at or d.created for d in users if d.started_at or d.created]
            e.model.last_launched = max(times) if times else None

    # -- deleting ---------------------------------------------------------------------

    def delete(self, model_id: str) -> int:
        """Delete the entry ``model_id`` of a fresh scan; return the bytes freed.

        Raises:
            ModelNotFound: no such entry now.
            ModelInUse: a deployment (running or stopped) uses it; the message names them.
        """
        entries = self._entries()
        entry = next((e for e in entries if e.model.id == model_id), None)
        if entry is None:
            raise ModelNotFound(f"No model '{model_id}' in the library.",
                                hint="GET /api/library lists the models and their ids; it may have been deleted.")
        self._annotate([entry])
        if entry.model.used_by:
            names = ", ".join(entry.model.used_by)
            raise ModelInUse(f"{entry.model.name} is used by the deployment{'s' if len(entry.model.used_by) > 1 else ''} "
                             f"{names}.", hint="Remove those deployments first (Deployments → Remove), then delete it.",
                             details={"used_by": entry.model.used_by})
        fn, args = entry.delete
        where = _Where(entry.where.kind, entry.root, entry.where.volume)
        self._volume_scans.clear()
        return int(self._run(where, "call", fn, json.dumps(args)).get("freed", 0))

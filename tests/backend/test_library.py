"""The library (backend/library.py): what is on disk, through a real backend process; deleting, and refusing to.

Downloads come from the Hub stand-in (tests/support/hub_standin.py); the llama.cpp deployment that
keeps a model in use is a real container of the locally built llama-server.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import gguf
import numpy as np
import pytest

from backend.engine import Engine
from tests.backend.test_downloads import backends, start, tiny_gguf, unique_repo, wait_state  # noqa: F401 - fixtures
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch_ready
from tests.support.hub_standin import GGUF_REPO, SAFETENSORS_REPO, SPLIT_GGUF_REPO
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

GIB = 1 << 30


def sparse_gguf(path: Path, size: int, vocab: int = 150_000) -> int:
    """A GGUF of ``size`` bytes: a real header (a 150k-token vocabulary, 64 tensor infos) and a hole for the data.

    Returns:
        Its parameter count (what the tensor infos add up to).
    """
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("sparse-test")
    writer.add_context_length(8192)
    writer.add_block_count(32)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_token_list([f"t{i}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    params = 0
    for i in range(64):
        writer.add_tensor_info(f"blk.{i}.ffn_up.weight", (4096, 4096), np.dtype(np.float16), 4096 * 4096 * 2)
        params += 4096 * 4096
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    os.truncate(path, size)
    return params


@pytest.fixture()
def folders(tmp_path, gguf_models):
    """A model folder with the tiny GGUF (and a file that is not one); empty host caches (no volume reads)."""
    models = tmp_path / "models"
    (models / "tiny").mkdir(parents=True)
    shutil.copy(gguf_models / "tiny" / "tiny-llama.gguf", models / "tiny" / "tiny-llama.gguf")
    (models / "notes.txt").write_text("not a model")
    caches = {"huggingface": tmp_path / "hf-cache", "ollama": tmp_path / "ollama-cache"}
    for c in caches.values():
        c.mkdir()
    return models, caches


def library(backend) -> list[dict]:
    r = backend.get("/api/library")
    assert r.status_code == 200, r.text
    return r.json()["models"]


def test_model_folder_ggufs_are_listed_with_header_metadata_and_a_sparse_8_gib_file_lists_fast(
        backends, folders):
    models, caches = folders
    params = sparse_gguf(models / "big-Q4_K_M.gguf", 8 * GIB)
    assert os.stat(models / "big-Q4_K_M.gguf").st_blocks * 512 < 64 << 20, "the file is sparse"
    backend = backends(caches["huggingface"], model_dirs=[models],
                       env={"MODELDECK_CACHE_DIR_OLLAMA": str(caches["ollama"])})
    listed = {m["name"]: m for m in library(backend)}
    assert set(listed) == {"tiny-llama.gguf", "big-Q4_K_M.gguf"}

    tiny = listed["tiny-llama.gguf"]
    reader = gguf.GGUFReader(models / "tiny" / "tiny-llama.gguf")
    assert tiny["kind"] == "gguf" and tiny["location"] == f"model folder {models}"
    assert tiny["path"] == str(models / "tiny" / "tiny-llama.gguf")
    assert tiny["size_bytes"] == (models / "tiny" / "tiny-llama.gguf").stat().st_size
    assert tiny["gguf"] == {"architecture": "llama", "parameters": sum(int(t.n_elements) for t in reader.tensors),
                            "quantization": "F16", "context_length": 32768}
    assert tiny["launch"] == {"recipe": "llama-cpp", "model": tiny["path"]}
    assert tiny["used_by"] == [] and tiny["last_launched"] is None
    assert tiny["id"].startswith("gguf-")

    big = listed["big-Q4_K_M.gguf"]
    assert big["size_bytes"] == 8 * GIB and big["variant"] == "Q4_K_M"
    assert big["gguf"] == {"architecture": "llama", "parameters": params, "quantization": "Q4_K_M",
                           "context_length": 8192}

    # Headers only: the whole listing, 8 GiB file and 150k-token vocabulary included, well under a second.
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        r = backend.get("/api/library")
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200
    assert statistics.median(times) < 0.5, times
    assert r.json()["scanned_ms"] < 400
    assert [m["id"] for m in r.json()["models"]] == [m["id"] for m in library(backend)], "ids are stable"


def test_hub_snapshots_are_listed_with_revision_and_size_and_deleted(backends, hub_standin, folders):
    _models, caches = folders
    cache = caches["huggingface"]
    backend = backends(cache, env={"MODELDECK_CACHE_DIR_OLLAMA": str(caches["ollama"])})
    for body in ({"repo_id": SAFETENSORS_REPO}, {"repo_id": GGUF_REPO, "variant": "Q4_K_M"},
                 {"repo_id": SPLIT_GGUF_REPO, "variant": "Q8_0"}):
        job = start(backend, **body).json()
        assert wait_state(backend, job["id"])["state"] == "done"
    st_repo, gguf_repo = hub_standin.repos[SAFETENSORS_REPO], hub_standin.repos[GGUF_REPO]
    by_repo = {m["repo_id"]: m for m in library(backend)}
    snap = by_repo[SAFETENSORS_REPO]
    folder = cache / "hub" / ("models--" + SAFETENSORS_REPO.replace("/", "--"))
    files = [f for f in (folder / "snapshots" / st_repo.sha).iterdir()]
    assert snap["kind"] == "hf_snapshot" and snap["revision"] == st_repo.sha
    assert snap["size_bytes"] == sum(f.stat().st_size for f in files) > 0
    assert snap["location"] == f"cache huggingface ({cache})"
    assert snap["launch"] == {"recipe": "vllm", "model": SAFETENSORS_REPO}
    assert snap["gguf"] is None

    q4 = by_repo[GGUF_REPO]
    assert q4["kind"] == "gguf" and q4["variant"] == "Q4_K_M" and q4["revision"] == gguf_repo.sha
    assert q4["launch"] == {"recipe": "llama-cpp", "model": f"{GGUF_REPO}:Q4_K_M"}
    assert q4["gguf"]["architecture"] == "llama"

    # A GGUF split in parts is one model, its size the parts' sum, its metadata the first part's header.
    split = by_repo[SPLIT_GGUF_REPO]
    parts = [f for f in hub_standin.repos[SPLIT_GGUF_REPO].files if "Q8_0" in f.path]
    assert split["variant"] == "Q8_0" and split["size_bytes"] == sum(f.size for f in parts) and len(parts) == 2
    assert split["path"].endswith("Q8_0/Qwen2.5-0.5B-Instruct-Q8_0-00001-of-00002.gguf")
    assert split["launch"] == {"recipe": "llama-cpp", "model": f"{SPLIT_GGUF_REPO}:Q8_0"}

    assert backend.delete(f"/api/library/{snap['id']}").status_code == 204
    assert not folder.exists(), "the snapshot, its blobs and refs are gone"
    assert backend.delete(f"/api/library/{snap['id']}").status_code == 404
    left = library(backend)
    assert sorted(m["repo_id"] for m in left) == [GGUF_REPO, SPLIT_GGUF_REPO]


def test_ollama_models_are_read_from_its_manifests(backends, folders, tiny_gguf):
    _models, caches = folders
    root = caches["ollama"] / "models"
    digest = "sha256-" + hashlib.sha256(tiny_gguf).hexdigest()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / digest).write_bytes(tiny_gguf)
    (root / "blobs" / "sha256-aaaa").write_text("{}")
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "tinyllama" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "config": {"digest": "sha256:aaaa", "size": 2},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest.replace("-", ":"),
                    "size": len(tiny_gguf)}]}))
    backend = backends(caches["huggingface"], env={"MODELDECK_CACHE_DIR_OLLAMA": str(caches["ollama"])})
    (m,) = library(backend)
    assert m["kind"] == "ollama" and m["name"] == "tinyllama:latest"
    assert m["size_bytes"] == len(tiny_gguf) and m["gguf"]["architecture"] == "llama"
    assert m["launch"] == {"recipe": "ollama", "model": "tinyllama:latest"}
    assert backend.delete(f"/api/library/{m['id']}").status_code == 204
    assert not manifest.exists() and not (root / "blobs" / digest).exists()
    assert library(backend) == []


def test_a_model_in_use_is_not_deleted_and_llama_cpp_loads_the_downloaded_layout(
        backends, hub_standin, folders, llamacpp_image, tiny_gguf):
    models, caches = folders
    cache = caches["huggingface"]
    repo_id, _ = unique_repo(hub_standin, tiny_gguf)
    backend = backends(cache, model_dirs=[models], env={"MODELDECK_CACHE_DIR_OLLAMA": str(caches["ollama"])})
    job = start(backend, repo_id=repo_id, variant="Q4_K_M").json()
    assert wait_state(backend, job["id"])["state"] == "done"

    # llama.cpp finds the file ModelDeck downloaded by itself: -hf org/repo:Q4_K_M, offline, from the
    # Hugging Face cache folder mounted at /root/.cache/huggingface (common/hf-cache.cpp).
    dep = launch_ready(backend.url, backend.token, {
        "recipe": "llama-cpp", "model": f"{repo_id}:Q4_K_M", "served_name": "library-hf", "image_source": "local",
        "args": ["--offline"]}, timeout=180)
    entry = next(m for m in library(backend) if m["repo_id"] == repo_id)
    assert entry["used_by"] == [dep["id"]]
    assert entry["last_launched"] is not None
    r = backend.delete(f"/api/library/{entry['id']}")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "model_in_use" and dep["id"] in error["message"] and error["hint"]
    snapshot = cache / "hub" / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    assert any(snapshot.rglob("*.gguf")), "nothing was deleted"

    # Stopped still counts as in use; removed does not.
    assert backend.post(f"/api/deployments/{dep['id']}/stop").status_code == 200
    assert backend.delete(f"/api/library/{entry['id']}").status_code == 409
    assert backend.delete(f"/api/deployments/{dep['id']}").status_code == 204
    wait_until(lambda: not next(m for m in library(backend) if m["repo_id"] == repo_id)["used_by"], 20,
               what="the removed deployment to leave used_by")
    assert backend.delete(f"/api/library/{entry['id']}").status_code == 204
    assert not snapshot.parent.exists()


def test_ids_are_only_those_of_a_scan(backends, folders):
    models, caches = folders
    backend = backends(caches["huggingface"], model_dirs=[models],
                       env={"MODELDECK_CACHE_DIR_OLLAMA": str(caches["ollama"])})
    before = library(backend)
    # An unknown id is 404; anything not shaped like an id is refused before a scan (422), or finds no
    # route at all once the router has decoded its slashes (404).
    for bad, statuses in (("gguf-0123456789abcdef0123", {404}), ("..", {404}), ("gguf-..%2F..%2Fnotes.txt", {404, 422}),
                          ("%2E%2E", {422}), ("gguf-" + "0" * 200, {422}), ("ollama-zz", {422}),
                          ("gguf-0123456789abcdef012%00", {422})):
        r = backend.delete(f"/api/library/{bad}")
        assert r.status_code in statuses, (bad, r.status_code, r.text)
        assert r.json()["error"]["message"]
    assert (models / "notes.txt").exists() and (models / "tiny" / "tiny-llama.gguf").exists()
    assert library(backend) == before


def test_ollama_models_in_its_volume_are_listed_and_deleted_through_a_helper(backends, folders, tiny_gguf):
    _models, caches = folders
    name = f"modeldeck-test-{uuid.uuid4().hex[:8]}"
    digest = "sha256-" + hashlib.sha256(tiny_gguf + name.encode()).hexdigest()
    manifest = {"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest.replace("-", ":"), "size": len(tiny_gguf)}]}
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for path, data in ((f"models/blobs/{digest}", tiny_gguf),
                           (f"models/manifests/registry.ollama.ai/library/{name}/1b", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    volume = "modeldeck-cache-ollama"
    Engine().put_into_volume("modeldeck/demo-base:bookworm", volume, archive.getvalue(), labels={RUN_LABEL: RUN_ID},
                             target="/root/.ollama")
    try:
        backend = backends(caches["huggingface"])  # no Ollama folder: its volume
        (m,) = [m for m in library(backend) if m["name"] == f"{name}:1b"]
        assert m["kind"] == "ollama" and m["location"] == f"cache ollama (volume {volume})"
        assert m["size_bytes"] == len(tiny_gguf) and m["gguf"]["architecture"] == "llama"
        assert backend.delete(f"/api/library/{m['id']}").status_code == 204
        assert all(x["name"] != f"{name}:1b" for x in library(backend))
        left = subprocess.run(["docker", "run", "--rm", "--label", f"{RUN_LABEL}={RUN_ID}", "-v", f"{volume}:/o",
                               "modeldeck/demo-base:bookworm", "sh", "-c",
                               f"ls /o/models/blobs/{digest} /o/models/manifests/registry.ollama.ai/library/{name}/1b "
                               "2>/dev/null | wc -l"], capture_output=True, text=True, timeout=60)
        assert left.stdout.strip() == "0", "manifest and blob are gone from the volume"
    finally:
        subprocess.run(["docker", "run", "--rm", "--label", f"{RUN_LABEL}={RUN_ID}", "-v", f"{volume}:/o",
                        "modeldeck/demo-base:bookworm", "rm", "-rf", f"/o/models/blobs/{digest}",
                        f"/o/models/manifests/registry.ollama.ai/library/{name}"], timeout=60)

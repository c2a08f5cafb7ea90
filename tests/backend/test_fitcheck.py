"""Tests for backend/fitcheck.py against a real (tiny) Hugging Face cache tree built in tmp_path."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from backend.catalog import load_catalog
from backend.fitcheck import (GIB, NOT_DOWNLOADED, MemoryEstimate, config_params, estimate_memory, fit_verdict,
                              reserved_fraction, safetensors_params)
from backend.settings import REPO_ROOT, Settings

CATALOG = load_catalog(REPO_ROOT / "containers")
VLLM, LLAMA, OLLAMA, TGI, DEMO, SGLANG = (CATALOG.get(n) for n in ("vllm", "llama-cpp", "ollama", "tgi", "demo",
                                                                     "sglang"))

QWEN_05B_CONFIG = {"hidden_size": 896, "num_hidden_layers": 24, "vocab_size": 151936, "intermediate_size": 4864,
                   "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True,
                   "torch_dtype": "bfloat16"}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """Write a real safetensors file (header + zeroed data); return its parameter count."""
    width = {"F32": 4, "BF16": 2, "F16": 2}
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = params = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for d in shape:
            count *= d
        params += count
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * width[dtype]]}
        offset += count * width[dtype]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return params


def make_repo(root: Path, repo_id: str, files: dict[str, bytes | Path], *, rev: str = "rev2",
              ref: bool = True) -> Path:
    """Build models--ORG--NAME with blobs/, snapshots/<rev>/ symlinks and refs/main, as huggingface_hub does."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    blobs = repo / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):  # an existing blob, shared by several names
            blob = content
        else:
            blob = blobs / f"{rev}-{name.replace('/', '_')}"
            blob.write_bytes(content)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return repo


@pytest.fixture
def hf(tmp_path: Path) -> Path:
    return tmp_path / "huggingface"


def settings_for(tmp_path: Path, **kw) -> Settings:
    return Settings(home=tmp_path / "home", **kw)


def tiny_weights(tmp_path: Path) -> tuple[bytes, int]:
    scratch = tmp_path / "scratch.safetensors"
    params = write_safetensors(scratch, {"embed.weight": ("BF16", [64, 32]), "lm_head.weight": ("BF16", [64, 32]),
                                         "norm.weight": ("F32", [32])})
    return scratch.read_bytes(), params


# -- safetensors and config.json ---------------------------------------------------------


def test_safetensors_params_reads_header(tmp_path):
    path = tmp_path / "m.safetensors"
    assert write_safetensors(path, {"a": ("F16", [3, 5]), "b": ("F32", [7])}) == 22
    assert safetensors_params(path) == 22


@pytest.mark.parametrize("content", [b"", b"1234", struct.pack("<Q", 10) + b"{not json}",
                                     struct.pack("<Q", 2**40) + b"{}", struct.pack("<Q", 100) + b"{}",
                                     struct.pack("<Q", 2) + b"[]", struct.pack("<Q", 15) + b'{"a": {"x": 1}}'])
def test_safetensors_params_refuses_garbage(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    assert safetensors_params(path) is None


def test_safetensors_params_missing_file(tmp_path):
    assert safetensors_params(tmp_path / "nope.safetensors") is None


def test_config_params_matches_qwen_05b():
    # Qwen2.5-0.5B has 494M parameters; the rough formula must land within 2%.
    n = config_params(QWEN_05B_CONFIG)
    assert abs(n - 494_032_768) / 494_032_768 < 0.02


def test_config_params_untied_and_nested_text_config():
    untied = dict(QWEN_05B_CONFIG, tie_word_embeddings=False)
    assert config_params(untied) - config_params(QWEN_05B_CONFIG) == 151936 * 896
    assert config_params({"text_config": QWEN_05B_CONFIG}) == config_params(QWEN_05B_CONFIG)


@pytest.mark.parametrize("config", [{}, {"hidden_size": "x", "num_hidden_layers": 2, "vocab_size": 3},
                                    dict(QWEN_05B_CONFIG, hidden_size=0)])
def test_config_params_incomplete(config):
    assert config_params(config) is None


# -- the Hugging Face cache --------------------------------------------------------------


def test_hf_cache_with_hub_level(tmp_path, hf):
    data, params = tiny_weights(tmp_path)
    config = json.dumps(QWEN_05B_CONFIG).encode()
    make_repo(hf / "hub", "org/tiny", {"model.safetensors": data, "config.json": config,
                                       "pytorch_model.bin": b"x" * 5000})  # same weights again: not counted
    est = estimate_memory(VLLM, "org/tiny", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == len(data)
    assert est.params == params  # exact, from the header, preferred over config.json
    assert est.bytes_needed == int(len(data) * 1.2)
    assert "safetensors headers" in est.basis and "90%" in est.basis


def test_hf_cache_without_hub_level(tmp_path, hf):
    # TGI's older layout and a cache dir that is the hub folder itself.
    data, _ = tiny_weights(tmp_path)
    make_repo(hf, "org/flat", {"model.safetensors": data})
    est = estimate_memory(TGI, "org/flat", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == len(data)
    assert "90%" not in est.basis


def test_shared_blob_counted_once_and_sharded_params_summed(tmp_path, hf):
    shard1 = tmp_path / "s1.safetensors"
    p1 = write_safetensors(shard1, {"a": ("BF16", [16, 16])})
    shard2 = tmp_path / "s2.safetensors"
    p2 = write_safetensors(shard2, {"b": ("BF16", [8, 16])})
    repo = make_repo(hf / "hub", "org/sharded", {"model-00001-of-00002.safetensors": shard1.read_bytes(),
                                                 "model-00002-of-00002.safetensors": shard2.read_bytes()})
    blob = next(p for p in (repo / "blobs").iterdir() if "00001" in p.name)
    (repo / "snapshots" / "rev2" / "copy" ).mkdir()
    (repo / "snapshots" / "rev2" / "copy" / "again.safetensors").symlink_to(blob)
    est = estimate_memory(VLLM, "org/sharded", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == shard1.stat().st_size + shard2.stat().st_size
    assert est.params == p1 + p2


def test_refs_main_picks_snapshot(tmp_path, hf):
    make_repo(hf / "hub", "org/m", {"model.safetensors": b"\0" * 100}, rev="old", ref=False)
    make_repo(hf / "hub", "org/m", {"model.safetensors": b"\0" * 300}, rev="new")
    old = hf / "hub" / "models--org--m" / "snapshots" / "old"
    os.utime(old, (2_000_000_000, 2_000_000_000))  # newer on disk, but refs/main says "new"
    est = estimate_memory(TGI, "org/m", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == 300


def test_newest_snapshot_without_refs(tmp_path, hf):
    make_repo(hf / "hub", "org/m", {"model.safetensors": b"\0" * 100}, rev="a", ref=False)
    make_repo(hf / "hub", "org/m", {"model.safetensors": b"\0" * 300}, rev="b", ref=False)
    snaps = hf / "hub" / "models--org--m" / "snapshots"
    os.utime(snaps / "a", (2_000_000_000, 2_000_000_000))
    os.utime(snaps / "b", (1_000_000_000, 1_000_000_000))
    est = estimate_memory(TGI, "org/m", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == 100
    # A refs/main naming a snapshot that is gone falls back to the newest as well.
    (hf / "hub" / "models--org--m" / "refs").mkdir()
    (hf / "hub" / "models--org--m" / "refs" / "main").write_text("vanished")
    assert estimate_memory(TGI, "org/m", settings_for(tmp_path, cache_dirs={"huggingface": hf})).weights_bytes == 100


def test_config_only_estimates_from_dtype(tmp_path, hf):
    make_repo(hf / "hub", "org/cfg", {"config.json": json.dumps(QWEN_05B_CONFIG).encode()})
    est = estimate_memory(TGI, "org/cfg", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.params == config_params(QWEN_05B_CONFIG)
    assert est.weights_bytes == est.params * 2
    assert est.bytes_needed == int(est.params * 2 * 1.2)
    assert "config.json" in est.basis


def test_snapshot_without_weights_or_config(tmp_path, hf):
    make_repo(hf / "hub", "org/empty", {"README.md": b"hi"})
    est = estimate_memory(TGI, "org/empty", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.bytes_needed is None and "no weight files" in est.basis


def test_broken_symlink_is_ignored(tmp_path, hf):
    repo = make_repo(hf / "hub", "org/broken", {"model.safetensors": b"\0" * 64})
    (repo / "snapshots" / "rev2" / "extra.safetensors").symlink_to("../../blobs/missing")
    est = estimate_memory(TGI, "org/broken", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.weights_bytes == 64


def test_not_downloaded(tmp_path, hf):
    (hf / "hub").mkdir(parents=True)
    est = estimate_memory(VLLM, "org/absent", settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est == MemoryEstimate(None, NOT_DOWNLOADED)
    repo = hf / "hub" / "models--org--nosnap"
    repo.mkdir()
    assert estimate_memory(VLLM, "org/nosnap", settings_for(tmp_path, cache_dirs={"huggingface": hf})
                           ).basis == NOT_DOWNLOADED


def test_cache_is_a_volume(tmp_path):
    est = estimate_memory(VLLM, "org/tiny", settings_for(tmp_path))
    assert est.bytes_needed is None and "Docker volume" in est.basis


@pytest.mark.parametrize("model", ["gpt2", "a/b/c", "/etc/passwd", "~/x", "../up", "C:\\models\\m"])
def test_not_a_repo_or_local_model(tmp_path, hf, model):
    est = estimate_memory(VLLM, model, settings_for(tmp_path, cache_dirs={"huggingface": hf}))
    assert est.bytes_needed is None and "size unknown" in est.basis


def test_gguf_repo_with_quant_tag(tmp_path, hf):
    make_repo(hf / "hub", "org/m-GGUF", {"m-Q4_K_M.gguf": b"\0" * 400, "m-Q8_0.gguf": b"\0" * 800,
                                         "model.safetensors": b"\0" * 10})
    s = settings_for(tmp_path, cache_dirs={"huggingface": hf})
    assert estimate_memory(LLAMA, "org/m-GGUF:q4_k_m", s).weights_bytes == 400  # tag is case-insensitive
    assert estimate_memory(LLAMA, "org/m-GGUF:Q2_K", s).weights_bytes == 1200  # unknown tag: all GGUF files
    assert estimate_memory(LLAMA, "org/m-GGUF", s).weights_bytes == 1200
    assert estimate_memory(VLLM, "org/m-GGUF", s).weights_bytes == 10  # vLLM loads safetensors first


# -- local models --------------------------------------------------------------------------


def test_local_file(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    gguf = models / "m.gguf"
    gguf.write_bytes(b"\0" * 1000)
    s = settings_for(tmp_path, model_dirs=[models])
    est = estimate_memory(LLAMA, str(gguf), s)
    assert (est.weights_bytes, est.bytes_needed, est.params) == (1000, 1200, None)
    assert est.basis.startswith("local file")
    # As for launch, a relative name is a model id, never a file.
    assert estimate_memory(LLAMA, "m.gguf", s).bytes_needed is None


def test_local_file_with_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(b"\0" * 10)
    s = settings_for(tmp_path, model_dirs=[tmp_path / "models"])
    assert estimate_memory(LLAMA, "~/models/m.gguf", s).weights_bytes == 10


def test_local_safetensors_file_has_params(tmp_path):
    models = tmp_path / "models"
    p = write_safetensors(models / "one.safetensors", {"w": ("F16", [10, 10])})
    est = estimate_memory(VLLM, str(models / "one.safetensors"), settings_for(tmp_path, model_dirs=[models]))
    assert est.params == p == 100


def test_local_folder(tmp_path):
    folder = tmp_path / "models" / "my-model"
    p = write_safetensors(folder / "model.safetensors", {"w": ("BF16", [32, 32])})
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 99999)
    est = estimate_memory(VLLM, str(folder), settings_for(tmp_path, model_dirs=[tmp_path / "models"]))
    assert est.weights_bytes == (folder / "model.safetensors").stat().st_size
    assert est.params == p
    assert est.basis.startswith("local folder")


def test_local_folder_with_only_bin(tmp_path):
    folder = tmp_path / "models" / "old"
    folder.mkdir(parents=True)
    (folder / "pytorch_model.bin").write_bytes(b"\0" * 500)
    (folder / "config.json").write_text(json.dumps(QWEN_05B_CONFIG))
    est = estimate_memory(TGI, str(folder), settings_for(tmp_path, model_dirs=[tmp_path / "models"]))
    assert est.weights_bytes == 500 and est.params == config_params(QWEN_05B_CONFIG)
    assert "config.json" in est.basis


def test_path_outside_model_dirs_is_not_read(tmp_path):
    outside = tmp_path / "elsewhere" / "m.gguf"
    outside.parent.mkdir()
    outside.write_bytes(b"\0" * 10)
    (tmp_path / "models").mkdir()
    link = tmp_path / "models" / "escape.gguf"
    link.symlink_to(outside)  # a link out of the model folder does not count either
    s = settings_for(tmp_path, model_dirs=[tmp_path / "models"])
    assert estimate_memory(LLAMA, str(outside), s).bytes_needed is None
    assert estimate_memory(LLAMA, str(link), s).bytes_needed is None
    assert estimate_memory(LLAMA, str(tmp_path / "models" / "absent.gguf"), s).bytes_needed is None


# -- Ollama --------------------------------------------------------------------------------


def write_manifest(root: Path, *parts: str, sizes=(1000, 50)) -> None:
    path = root.joinpath("models", "manifests", *parts)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"layers": [
        {"mediaType": "application/vnd.ollama.image.model", "size": sizes[0]},
        {"mediaType": "application/vnd.ollama.image.template", "size": sizes[1]}]}))


@pytest.mark.parametrize(("model", "parts"), [
    ("qwen2.5:0.5b", ("registry.ollama.ai", "library", "qwen2.5", "0.5b")),
    ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
    ("someone/model:tag", ("registry.ollama.ai", "someone", "model", "tag")),
    ("hf.co/org/repo:Q4_K_M", ("hf.co", "org", "repo", "Q4_K_M")),
])
def test_ollama_manifest(tmp_path, model, parts):
    root = tmp_path / "ollama"
    write_manifest(root, *parts)
    est = estimate_memory(OLLAMA, model, settings_for(tmp_path, cache_dirs={"ollama": root}))
    assert (est.weights_bytes, est.bytes_needed) == (1000, 1200)
    assert est.basis.startswith("Ollama manifest")


def test_ollama_not_pulled_or_volume(tmp_path):
    root = tmp_path / "ollama"
    root.mkdir()
    assert estimate_memory(OLLAMA, "qwen2.5:0.5b", settings_for(tmp_path, cache_dirs={"ollama": root})
                           ).basis == NOT_DOWNLOADED
    est = estimate_memory(OLLAMA, "qwen2.5:0.5b", settings_for(tmp_path))
    assert est.bytes_needed is None and "Docker volume" in est.basis


# -- verdicts ------------------------------------------------------------------------------


def est(gib_needed: float) -> MemoryEstimate:
    return MemoryEstimate(int(gib_needed * GIB), "test", int(gib_needed * GIB / 1.2), None)


def test_verdict_cpu_only_recipe():
    assert fit_verdict(est(100), 0, 0, DEMO).level == "ok"


def test_verdict_unknown_estimate_and_unknown_gpu():
    v = fit_verdict(MemoryEstimate(None, NOT_DOWNLOADED), 10 * GIB, 24 * GIB, TGI)
    assert v.level == "unknown" and NOT_DOWNLOADED in v.message
    v = fit_verdict(est(4), None, None, TGI)
    assert v.level == "unknown" and "4.0 GiB" in v.message


def test_verdict_too_big_message():
    v = fit_verdict(MemoryEstimate(int(15.2 * GIB), "x"), int(9.8 * GIB), 24 * GIB, TGI)
    assert v.level == "too_big"
    assert v.message.startswith("needs about 15.2 GiB; 9.8 GiB free on GPU 0 — it will likely fail "
                                "with out-of-memory")
    assert "fewer GPU layers" in fit_verdict(est(15.2), int(9.8 * GIB), None, LLAMA).message


def test_verdict_warn_and_ok_by_free_memory():
    assert fit_verdict(est(9.5), 10 * GIB, 24 * GIB, TGI).level == "warn"
    ok = fit_verdict(est(4), 10 * GIB, 24 * GIB, TGI, gpu_label="GPU 1")
    assert ok.level == "ok" and ok.message == "needs about 4.0 GiB; 10.0 GiB free on GPU 1"


def test_verdict_vllm_compares_with_its_reservation():
    total = 24 * GIB  # vLLM may use 21.6 GiB
    too_big = fit_verdict(est(22), total, total, VLLM)
    assert too_big.level == "too_big" and "21.6 GiB" in too_big.message and "out-of-memory" in too_big.message
    busy = fit_verdict(est(2), 12 * GIB, total, VLLM)  # fits, but 21.6 GiB is not free
    assert busy.level == "too_big" and "refuse to start" in busy.message and "12.0 GiB" in busy.message
    assert fit_verdict(est(20), 23 * GIB, total, VLLM).level == "warn"
    assert fit_verdict(est(2), 23 * GIB, total, VLLM).level == "ok"
    # Without the total, vLLM is judged like the others.
    assert fit_verdict(est(2), 23 * GIB, None, VLLM).level == "ok"


def test_verdict_sglang_compares_with_its_static_memory_fraction():
    """SGLang reserves --mem-fraction-static of the total at start, modelled as vLLM's reserve."""
    total = 24 * GIB
    assert reserved_fraction(SGLANG) == 0.88  # upstream's fallback share, the most it takes by default
    assert reserved_fraction(VLLM) == 0.9  # stated in the recipe's command
    too_big = fit_verdict(est(22), total, total, SGLANG)
    assert too_big.level == "too_big" and "21.1 GiB" in too_big.message and "88%" in too_big.message
    busy = fit_verdict(est(2), 12 * GIB, total, SGLANG)
    assert busy.level == "too_big" and "refuse to start" in busy.message
    assert fit_verdict(est(2), 23 * GIB, total, SGLANG).level == "ok"
    # The person's own flag wins, in either spelling, as argparse reads it.
    half = fit_verdict(est(2), 13 * GIB, total, SGLANG, args=["--mem-fraction-static", "0.5"])
    assert half.level == "ok" and "12.0 GiB" in half.message
    assert reserved_fraction(SGLANG, ["--mem-fraction-static=0.7"]) == 0.7
    assert reserved_fraction(VLLM, ["--gpu-memory-utilization", "0.6"]) == 0.6
    assert reserved_fraction(SGLANG, ["--mem-fraction-static", "lots"]) == 0.88
    assert reserved_fraction(TGI) is None


def test_sizes_below_a_gib_read_in_mib():
    from backend.fitcheck import gib
    assert gib(5 * 2**20) == "5.0 MiB" and gib(15.2 * 2**30) == "15.2 GiB" and gib(2**30) == "1.0 GiB"

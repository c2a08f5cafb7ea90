"""Reading and writing cache folders without a backend: backend/cache_scan.py and backend/hub_cache.py.

The folders are written the way the real tools write them: GGUF files with the ``gguf`` package,
the hub layout with ``backend/hub_cache.py`` and checked with ``huggingface_hub``'s own cache
scanner.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from huggingface_hub import scan_cache_dir

from backend import cache_scan
from backend.hub_cache import CacheFile, hub_archive, place_in_folder

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_gguf(path: Path, *, arch: str = "qwen2", vocab: int = 1000, file_type=gguf.LlamaFileType.MOSTLY_Q8_0,
               tensors: int = 3) -> int:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("unit")
    writer.add_context_length(4096)
    writer.add_block_count(tensors)
    writer.add_file_type(file_type)
    writer.add_token_list([f"w{i}" for i in range(vocab)])
    writer.add_token_types([1] * vocab)
    writer.add_array("unit.nested", [[1, 2], [3]])  # an array of arrays: walked, not decoded
    params = 0
    for i in range(tensors):
        data = np.zeros((8, 16 + i), dtype=np.float32)
        writer.add_tensor(f"t{i}", data)
        params += data.size
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return params


def test_gguf_header_reads_metadata_and_counts_parameters(tmp_path):
    path = tmp_path / "m.gguf"
    params = write_gguf(path)
    assert cache_scan.gguf_header(str(path)) == {
        "architecture": "qwen2", "name": "unit", "parameters": params, "context_length": 4096,
        "block_count": 3, "file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0)}


def test_gguf_header_refuses_what_is_not_a_whole_header(tmp_path):
    path = tmp_path / "m.gguf"
    write_gguf(path, vocab=50_000)
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[:len(data) // 3])  # a download stopped inside the vocabulary
    assert cache_scan.gguf_header(str(cut)) is None
    (tmp_path / "text.gguf").write_text("not a model")
    assert cache_scan.gguf_header(str(tmp_path / "text.gguf")) is None
    assert cache_scan.gguf_header(str(tmp_path / "missing.gguf")) is None
    bad = bytearray(data)
    bad[4:8] = (99).to_bytes(4, "little")  # an unknown version
    (tmp_path / "v99.gguf").write_bytes(bytes(bad))
    assert cache_scan.gguf_header(str(tmp_path / "v99.gguf")) is None


def test_a_big_vocabulary_header_is_read_quickly(tmp_path):
    path = tmp_path / "big.gguf"
    write_gguf(path, vocab=150_000)
    os.truncate(path, 4 << 30)  # a sparse 4 GiB file: only the header is real
    t0 = time.perf_counter()
    header = cache_scan.gguf_header(str(path))
    elapsed = time.perf_counter() - t0
    assert header is not None and header["architecture"] == "qwen2"
    assert elapsed < 0.3, elapsed


def test_the_module_runs_alone_as_the_helper_container_runs_it(tmp_path):
    """The library sends cache_scan's source to ``python3 -c`` in a container: it must need nothing else."""
    (tmp_path / "a").mkdir()
    write_gguf(tmp_path / "a" / "x-Q8_0.gguf")
    source = Path(cache_scan.__file__).read_text()
    run = subprocess.run([sys.executable, "-I", "-c", source, "scan", str(tmp_path), "models"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert run.returncode == 0, run.stderr
    assert '"path": "a/x-Q8_0.gguf"' in run.stdout and '"architecture": "qwen2"' in run.stdout


def test_files_placed_in_a_folder_are_what_huggingface_hub_finds(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    weights = staging / "w.part"
    weights.write_bytes(b"w" * 1000)
    config = staging / "c.part"
    config.write_bytes(b"{}")
    cache = tmp_path / "cache"
    place_in_folder(cache, "org/model", "main", COMMIT,
                    [CacheFile("sub/model.safetensors", "a" * 64, weights), CacheFile("config.json", "b" * 40, config)])
    info = scan_cache_dir(cache / "hub")
    (repo,) = info.repos
    assert repo.repo_id == "org/model" and repo.size_on_disk == 1002
    (rev,) = repo.revisions
    assert rev.commit_hash == COMMIT and rev.refs == frozenset({"main"})
    assert {f.file_name for f in rev.files} == {"model.safetensors", "config.json"}
    assert not weights.exists(), "moved, not copied, on one disk"


def test_the_volume_archive_unpacks_to_the_same_layout(tmp_path):
    staged = tmp_path / "s.part"
    staged.write_bytes(b"x" * 1234)
    stream = b"".join(hub_archive("org/model", "main", COMMIT, [CacheFile("a/b/m.gguf", "c" * 64, staged),
                                                                 CacheFile("README.md", "d" * 40, None)]))
    assert len(stream) % tarfile.BLOCKSIZE == 0
    out = tmp_path / "volume"
    with tarfile.open(fileobj=io.BytesIO(stream)) as tar:
        tar.extractall(out, filter="tar")
    repo = out / "hub" / "models--org--model"
    assert (repo / "refs" / "main").read_text() == COMMIT
    assert os.readlink(repo / "snapshots" / COMMIT / "a" / "b" / "m.gguf") == "../../../../blobs/" + "c" * 64
    assert (repo / "snapshots" / COMMIT / "a" / "b" / "m.gguf").read_bytes() == b"x" * 1234
    # A blob already in the volume is linked, not sent again.
    assert os.readlink(repo / "snapshots" / COMMIT / "README.md") == "../../blobs/" + "d" * 40
    assert not (repo / "blobs" / ("d" * 40)).exists()


def test_deleting_one_snapshot_file_keeps_blobs_others_link(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in ("q4", "q8", "readme"):
        (staging / name).write_bytes(name.encode() * 100)
    cache = tmp_path / "cache"
    place_in_folder(cache, "org/m-GGUF", "main", COMMIT, [
        CacheFile("m-Q4_K_M.gguf", "1" * 64, staging / "q4"), CacheFile("m-Q8_0.gguf", "2" * 64, staging / "q8"),
        CacheFile("README.md", "3" * 40, staging / "readme")])
    # Another commit links the same Q4 blob.
    other = "f" * 40
    place_in_folder(cache, "org/m-GGUF", "v2", other, [CacheFile("m-Q4_K_M.gguf", "1" * 64, None)])
    hub = str(cache / "hub")
    freed = cache_scan.delete_hub_files(hub, "models--org--m-GGUF", COMMIT, ["m-Q4_K_M.gguf"])
    assert freed == 0, "the Q4 blob is still linked from the other snapshot"
    blobs = cache / "hub" / "models--org--m-GGUF" / "blobs"
    assert (blobs / ("1" * 64)).exists()
    assert cache_scan.delete_hub_files(hub, "models--org--m-GGUF", COMMIT, ["m-Q8_0.gguf"]) == len(b"q8" * 100)
    assert not (blobs / ("2" * 64)).exists()
    cache_scan.delete_hub_files(hub, "models--org--m-GGUF", other, None)
    cache_scan.delete_hub_files(hub, "models--org--m-GGUF", COMMIT, None)
    assert not (cache / "hub" / "models--org--m-GGUF").exists(), "no snapshot left: the repository goes"


@pytest.mark.parametrize("args", [
    ("..", COMMIT, None), ("models--org--m", "../..", None), ("models--org--m", COMMIT, ["../../../x"]),
    ("/etc", COMMIT, None)])
def test_delete_refuses_paths_outside_its_root(tmp_path, args):
    victim = tmp_path / "x"
    victim.write_text("keep")
    root = tmp_path / "hub"
    (root / "models--org--m" / "snapshots" / COMMIT).mkdir(parents=True)
    with pytest.raises(ValueError):
        cache_scan.delete_hub_files(str(root), *args)
    assert victim.read_text() == "keep"
    with pytest.raises(ValueError):
        cache_scan.delete_file(str(root), "../x")
    assert victim.exists()


def test_a_listing_without_docker_shows_the_folders_and_says_what_it_could_not_read(tmp_path):
    from backend.engine import Engine
    from backend.library import Library
    from backend.settings import Settings

    models = tmp_path / "models"
    models.mkdir()
    write_gguf(models / "m-Q8_0.gguf")
    engine = Engine(f"unix://{tmp_path}/no-docker.sock", timeout=2)
    library = Library(Settings(home=tmp_path / "home", model_dirs=[models]), engine, lambda: [],
                      lambda: "modeldeck/demo-base:bookworm")
    listing = library.list()
    assert [(m.name, m.variant, m.gguf.quantization) for m in listing.models] == [("m-Q8_0.gguf", "Q8_0", "Q8_0")]
    assert len(listing.problems) == 2  # the Hugging Face and Ollama volumes
    assert all("volume modeldeck-cache-" in p and "Docker" in p for p in listing.problems), listing.problems


def test_a_cache_shared_with_tgi_is_read_at_both_levels(tmp_path):
    """TGI mounts the cache as its hub folder (/data/models--*); the others use <cache>/hub/models--*."""
    staged = tmp_path / "w"
    for name in ("a", "b"):
        staged.write_bytes(name.encode() * 10)
        place_in_folder(tmp_path / ("cache" if name == "a" else "x"), f"org/{name}", "main", COMMIT,
                        [CacheFile("model.safetensors", name * 64, staged)])
    os.rename(tmp_path / "x" / "hub" / "models--org--b", tmp_path / "cache" / "models--org--b")
    found = cache_scan.scan_cache(str(tmp_path / "cache"), "huggingface")
    assert [(h["prefix"], [r["repo_id"] for r in h["repos"]]) for h in found["hubs"]] == [("hub", ["org/a"]),
                                                                                         ("", ["org/b"])]
    assert found["ggufs"] == []

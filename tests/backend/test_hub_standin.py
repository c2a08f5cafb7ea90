"""The Hub stand-in speaks the Hub's protocol to the REAL huggingface_hub client: search, model info,
downloads (whole, cut and resumed with Range), gated repos and unknown repos."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

from backend.fitcheck import gguf_info, safetensors_params
from tests.support.hub_standin import (
    BIG_GGUF_REPO, DEFAULT_TOKEN, GATED_REPO, GGUF_REPO, ONNX_REPO, SAFETENSORS_REPO, SHARDED_REPO,
    HubFile, HubRepo, HubStandin, default_repos, safetensors_header_params, tiny_gguf_bytes, tiny_llama_tensors,
)

Q4 = "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"


def test_list_models_searches_filters_and_sorts(hub_standin):
    api = HfApi(endpoint=hub_standin.url, token=False)
    found = [m.id for m in api.list_models(search="qwen2.5", sort="downloads")]
    assert found == [SAFETENSORS_REPO, GGUF_REPO, "unsloth/Qwen2.5-0.5B-Instruct-GGUF"]  # most downloaded first

    gguf = [m.id for m in api.list_models(filter="gguf", sort="likes")]
    assert gguf == [BIG_GGUF_REPO, GGUF_REPO, "unsloth/Qwen2.5-0.5B-Instruct-GGUF"]
    assert ONNX_REPO not in [m.id for m in api.list_models(filter="text-generation")]
    assert [m.id for m in api.list_models(search="QWEN", filter="safetensors")] == [SAFETENSORS_REPO]

    expanded = list(api.list_models(search="Llama-3.2", expand=["downloads", "likes", "gated", "lastModified",
                                                                 "pipeline_tag", "tags"]))
    assert len(expanded) == 1
    m = expanded[0]
    assert (m.id, m.gated, m.downloads, m.pipeline_tag) == (GATED_REPO, "manual", 2_500_000, "text-generation")
    assert m.last_modified is not None and m.last_modified.year == 2024
    assert "license:llama3.2" in m.tags

    assert [m.id for m in api.list_models(sort="downloads", limit=2)] == [GATED_REPO, SAFETENSORS_REPO]


def test_list_models_follows_link_pagination(gguf_models):
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models)), page_size=2) as hub:
        ids = [m.id for m in HfApi(endpoint=hub.url, token=False).list_models(sort="likes")]
        assert len(ids) == len(hub.repos) == 7
        assert hub.count("GET", "/api/models") == 4  # pages of 2, 2, 2, 1


def test_model_info_with_file_sizes(hub_standin):
    api = HfApi(endpoint=hub_standin.url, token=False)
    info = api.model_info(GGUF_REPO, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings}
    gguf = hub_standin.repos[GGUF_REPO].file(Q4).data
    assert sizes[Q4] == len(gguf) > 1_000_000
    assert info.siblings[1].lfs.sha256 == hashlib.sha256(gguf).hexdigest()
    assert len(info.sha) == 40 and info.gated is False and "gguf" in info.tags

    by_rev = api.model_info(GGUF_REPO, revision=info.sha)
    assert by_rev.sha == info.sha
    bare = api.model_info(GGUF_REPO)
    assert bare.siblings[0].size is None  # sizes only with files_metadata, as on the Hub

    big = api.model_info(BIG_GGUF_REPO, files_metadata=True)
    assert sum(s.size for s in big.siblings if s.rfilename.endswith(".gguf")) > 60 * 1000 ** 3

    tree = {f.path: f.size for f in api.list_repo_tree(SHARDED_REPO, recursive=True)}
    assert set(tree) == {"README.md", "config.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors", "model.safetensors.index.json"}


def test_download_gguf_bytes_equal(hub_standin, tmp_path):
    path = hf_hub_download(GGUF_REPO, Q4, endpoint=hub_standin.url, cache_dir=tmp_path, token=False)
    data = hub_standin.repos[GGUF_REPO].file(Q4).data
    with open(path, "rb") as fh:
        assert fh.read() == data
    info = gguf_info(Path(path))
    assert info is not None and info.architecture == "llama"
    # The HF cache layout the runtimes read: blobs named by the sha256, a snapshot named by the commit.
    sha = hub_standin.repos[GGUF_REPO].sha
    assert f"models--bartowski--Qwen2.5-0.5B-Instruct-GGUF/snapshots/{sha}/{Q4}" in path
    assert (tmp_path / "models--bartowski--Qwen2.5-0.5B-Instruct-GGUF" / "blobs" / hashlib.sha256(data).hexdigest()).is_file()


def test_download_cut_halfway_resumes_with_range(hub_standin, tmp_path):
    # hf_hub_download writes in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB) and resumes from what it wrote:
    # a file of 2.5 chunks cut after 1.5 of them must resume at exactly one chunk, with a Range.
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    data = np.random.default_rng(7).bytes(chunk * 5 // 2)
    hub_standin.add(HubRepo("modeldeck-test/resume", [HubFile("weights.safetensors", data)]))
    hub_standin.cut_after_bytes = chunk * 3 // 2
    path = hf_hub_download("modeldeck-test/resume", "weights.safetensors", endpoint=hub_standin.url,
                           cache_dir=tmp_path, token=False)
    with open(path, "rb") as fh:
        assert fh.read() == data
    gets = [r for r in hub_standin.requests if r.method == "GET" and r.path.endswith("weights.safetensors")]
    assert [g.range for g in gets] == [None, f"bytes={chunk}-"]
    assert [g.status for g in gets] == [200, 206]
    assert hub_standin.count("GET", "weights.safetensors", ranged=True) == 1


def test_range_requests_directly(hub_standin):
    url = hub_standin.resolve_url(GGUF_REPO, Q4)
    data = hub_standin.repos[GGUF_REPO].file(Q4).data
    r = httpx.get(url, headers={"Range": "bytes=-10"})
    assert (r.status_code, r.content, r.headers["content-range"]) == (206, data[-10:], f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}")
    r = httpx.get(url, headers={"Range": "bytes=4-7"})
    assert (r.status_code, r.content) == (206, data[4:8])
    r = httpx.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    head = httpx.head(url)
    assert head.headers["x-linked-size"] == str(len(data)) and head.headers["x-repo-commit"] == hub_standin.repos[GGUF_REPO].sha


def test_safetensors_shard_is_real(hub_standin, tmp_path):
    path = hf_hub_download(SAFETENSORS_REPO, "model.safetensors", endpoint=hub_standin.url, cache_dir=tmp_path, token=False)
    expected = sum(a.size for a in tiny_llama_tensors().values())
    assert safetensors_params(Path(path)) == expected  # the backend's own header reader
    folder = snapshot_download(SHARDED_REPO, endpoint=hub_standin.url, cache_dir=tmp_path, token=False)
    shards = sorted(Path(folder).glob("*.safetensors"))
    assert len(shards) == 2 and all(safetensors_params(p) for p in shards)
    assert sum(safetensors_header_params(p.read_bytes()) for p in shards) == expected


def test_gated_needs_the_right_token(hub_standin, tmp_path):
    api = HfApi(endpoint=hub_standin.url)
    assert api.model_info(GATED_REPO, token=False).gated == "manual"  # the page is public, as on the Hub
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download(GATED_REPO, "config.json", endpoint=hub_standin.url, cache_dir=tmp_path, token=False)
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong:
        hf_hub_download(GATED_REPO, "config.json", endpoint=hub_standin.url, cache_dir=tmp_path, token="hf_wrong")
    assert wrong.value.response.status_code == 403
    path = hf_hub_download(GATED_REPO, "config.json", endpoint=hub_standin.url, cache_dir=tmp_path, token=DEFAULT_TOKEN)
    assert b'"torch_dtype": "bfloat16"' in open(path, "rb").read()
    assert hub_standin.requests[-1].authorization == f"Bearer {DEFAULT_TOKEN}"


def test_unknown_repo_and_file(hub_standin, tmp_path):
    api = HfApi(endpoint=hub_standin.url)
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        api.model_info("nobody/nothing", token=False)
    assert anonymous.value.response.status_code == 401  # what the Hub answers without a token
    with pytest.raises(RepositoryNotFoundError) as authed:
        api.model_info("nobody/nothing", token="hf_any")
    assert authed.value.response.status_code == 404
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(GGUF_REPO, "missing.gguf", endpoint=hub_standin.url, cache_dir=tmp_path, token=False)


def test_lfs_files_redirect_to_a_cdn_as_on_the_hub(gguf_models, tmp_path):
    """With lfs_redirect the client reads size and sha256 off the 302, fetches from the CDN without the
    token, and resumes a cut transfer there with a Range."""
    chunk = constants.DOWNLOAD_CHUNK_SIZE
    data = np.random.default_rng(3).bytes(chunk * 5 // 2)
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models)), lfs_redirect=True) as hub:
        hub.add(HubRepo("modeldeck-test/gated-big", [HubFile("model.safetensors", data)], gated="auto"))
        assert hub.cdn_url != hub.url
        meta = get_hf_file_metadata(hub.resolve_url("modeldeck-test/gated-big", "model.safetensors"), token=DEFAULT_TOKEN)
        assert (meta.size, meta.etag) == (len(data), hashlib.sha256(data).hexdigest())
        assert meta.location.startswith(hub.cdn_url + "/cdn/")

        hub.cut_after_bytes = chunk * 3 // 2
        path = hf_hub_download("modeldeck-test/gated-big", "model.safetensors", endpoint=hub.url, cache_dir=tmp_path,
                               token=DEFAULT_TOKEN)
        with open(path, "rb") as fh:
            assert fh.read() == data
        resolves = [r for r in hub.requests if "/resolve/" in r.path]
        cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
        assert {r.status for r in resolves} == {302}
        assert all(r.authorization == f"Bearer {DEFAULT_TOKEN}" for r in resolves)  # the gate is on the Hub
        assert [(r.range, r.status, r.authorization) for r in cdn] == [(None, 200, None), (f"bytes={chunk}-", 206, None)]

        # Small files (config.json, README) are never redirected.
        readme = hf_hub_download(GGUF_REPO, "README.md", endpoint=hub.url, cache_dir=tmp_path, token=False)
        assert open(readme, "rb").read() == hub.repos[GGUF_REPO].file("README.md").data
        assert hub.requests[-1].status == 200 and "/resolve/" in hub.requests[-1].path

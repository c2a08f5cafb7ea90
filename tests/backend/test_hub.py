"""Hub search and model pages on a real backend whose HF_ENDPOINT is the Hub stand-in: variants, sizes,
runtimes, launch suggestions a launch accepts, fit verdicts, gated repos and every refusal."""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import httpx
import hypothesis
import hypothesis.strategies
import pytest
from huggingface_hub.utils import validate_repo_id

from backend.app import create_app
from backend.catalog import load_catalog
from backend.hub import (GpuFree, HubClient, HubFile, HubGated, HubVariantNotFound, InvalidHubRequest, Launch,
                         Variant, VariantFile, build_variants, check_repo_id, fit_variant, gguf_quant)
from backend.secrets_store import HF_TOKEN, delete_secret, write_secret
from backend.settings import Settings
from backend.stats.sampler import StatsSampler
from tests.backend.stats.helpers import FakeNvml, fake_gpu
from tests.support.backend_process import AUTH, BackendProcess
from tests.support.hub_standin import (
    BIG_GGUF_REPO, DEFAULT_TOKEN, GATED_REPO, GGUF_REPO, ONNX_REPO, SAFETENSORS_REPO, SHARDED_REPO, SPLIT_GGUF_REPO,
    HubFile as StandinFile, HubRepo, HubStandin, default_repos, safetensors_bytes, tiny_gguf_bytes, tiny_llama_tensors,
)
from tests.support.live_server import free_port, serve
from tests.support.waiting import wait_until

GIB = 1024 ** 3


@pytest.fixture(scope="module")
def hub(gguf_models):
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models))) as standin:
        yield standin


@pytest.fixture(scope="module")
def backend(hub, tmp_path_factory):
    """modeldeck-backend as a process, its HF_ENDPOINT the stand-in, no token of its own."""
    proc = BackendProcess(tmp_path_factory.mktemp("hub-backend") / "home",
                          env={"HF_ENDPOINT": hub.url, "HF_TOKEN": "", "MODELDECK_HF_ENDPOINT": ""})
    proc.start()
    yield proc
    proc.stop()


def get(backend: BackendProcess, path: str, **params) -> httpx.Response:
    return httpx.get(backend.url + path, params=params, headers=AUTH, timeout=30)


def model(backend: BackendProcess, repo_id: str, **params) -> httpx.Response:
    return get(backend, f"/api/hub/models/{repo_id}", **params)


def error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code, body
    assert body["message"] and body["hint"], body  # says what was wrong and what to do
    return body


# --------------------------------------------------------------------------- search


def test_search_by_text_format_and_sort(backend, hub):
    r = get(backend, "/api/hub/search", q="qwen2.5", format="gguf")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["endpoint"] == hub.url
    results = answer["results"]
    assert [m["repo_id"] for m in results] == [GGUF_REPO, SPLIT_GGUF_REPO]  # most downloaded first
    first = results[0]
    assert first == {"repo_id": GGUF_REPO, "downloads": 25_310, "likes": 48, "license": "apache-2.0", "gated": False,
                     "last_modified": "2024-09-19T07:10:11Z", "pipeline_tag": "text-generation", "formats": ["gguf"]}
    # What the desktop sent reached the Hub as huggingface_hub sends it.
    asked = [q for q in hub.requests if q.path == "/api/models"][-1].query
    assert asked["search"] == ["qwen2.5"] and asked["filter"] == ["gguf"] and asked["sort"] == ["downloads"]

    by_likes = get(backend, "/api/hub/search", sort="likes", limit=3).json()["results"]
    assert [m["repo_id"] for m in by_likes] == [GATED_REPO, SAFETENSORS_REPO, BIG_GGUF_REPO]  # 900, 275, 160 likes
    updated = get(backend, "/api/hub/search", sort="updated", format="safetensors").json()["results"]
    assert [m["last_modified"] for m in updated] == sorted((m["last_modified"] for m in updated), reverse=True)
    assert all("safetensors" in m["formats"] for m in updated) and len(updated) == 3

    gated = get(backend, "/api/hub/search", q="llama-3.2").json()["results"]
    assert [(m["repo_id"], m["gated"], m["license"]) for m in gated] == [(GATED_REPO, "manual", "llama3.2")]
    task = get(backend, "/api/hub/search", task="feature-extraction").json()["results"]
    assert [m["repo_id"] for m in task] == [ONNX_REPO]
    assert get(backend, "/api/hub/search", q="no-such-model-anywhere").json()["results"] == []


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"sort": "stars"}, {"format": "onnx"},
                                    {"q": "x" * 201}, {"task": "text generation"}, {"task": "../x"}])
def test_search_refuses_bad_queries(backend, params):
    body = error(get(backend, "/api/hub/search", **params), 422, "invalid_request")
    assert next(iter(params)) in body["message"]


# --------------------------------------------------------------------------- model pages


def test_gguf_variants_by_quantization(backend, hub):
    r = model(backend, GGUF_REPO)
    assert r.status_code == 200, r.text
    page = r.json()
    size = hub.repos[GGUF_REPO].file("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf").size
    assert page["revision"] == hub.repos[GGUF_REPO].sha and page["servable"] is True
    assert {v["id"] for v in page["variants"]} == {"Q4_K_M", "Q8_0", "f16"}
    q4 = next(v for v in page["variants"] if v["id"] == "Q4_K_M")
    assert q4["format"] == "gguf" and q4["files"] == [{"path": "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "size": size}]
    assert q4["size_bytes"] == size
    assert q4["runtimes"] == ["llama-cpp", "ollama"]
    assert q4["launch"] == {"recipe": "llama-cpp", "model": f"{GGUF_REPO}:Q4_K_M"}
    assert q4["launches"] == [q4["launch"], {"recipe": "ollama", "model": f"hf.co/{GGUF_REPO}:Q4_K_M"}]
    assert q4["downloaded"] is False
    cpu = next(f for f in q4["fit"] if f["device"] == "cpu")
    # The launch memory model: weights x 1.2 (backend/fitcheck.py DEFAULT_OVERHEAD).
    assert cpu["need_bytes"] == int(size * 1.2)
    assert cpu["level"] == "cpu_only" and "host memory" in cpu["message"]
    assert {f["path"] for f in page["files"]} == {f.path for f in hub.repos[GGUF_REPO].files}


def test_split_gguf_is_one_variant(backend, hub):
    page = model(backend, SPLIT_GGUF_REPO).json()
    q8 = next(v for v in page["variants"] if v["id"] == "Q8_0")
    parts = [f.size for f in hub.repos[SPLIT_GGUF_REPO].files if "Q8_0" in f.path]
    assert [f["path"].rsplit("-", 3)[-3:] for f in q8["files"]] == [["00001", "of", "00002.gguf"],
                                                                     ["00002", "of", "00002.gguf"]]
    assert q8["size_bytes"] == sum(parts) and q8["launch"]["model"] == f"{SPLIT_GGUF_REPO}:Q8_0"
    assert [v["id"] for v in page["variants"]] == ["Q8_0", "Q4_K_M"]  # same size: by path


def test_safetensors_variants_dtype_and_files(backend, hub):
    page = model(backend, SAFETENSORS_REPO).json()
    [v] = page["variants"]
    shard = hub.repos[SAFETENSORS_REPO].file("model.safetensors").size
    assert (v["id"], v["format"], v["dtype"]) == ("bf16", "safetensors", "bf16")  # config.json torch_dtype
    assert v["runtimes"] == ["vllm", "sglang", "tgi"]
    assert v["launch"] == {"recipe": "vllm", "model": SAFETENSORS_REPO}
    paths = [f["path"] for f in v["files"]]
    assert paths[0] == "model.safetensors" and {"config.json", "generation_config.json",
                                                "tokenizer_config.json"} <= set(paths)
    assert "README.md" not in paths
    assert v["size_bytes"] == sum(f["size"] for f in v["files"]) > shard
    cpu = next(f for f in v["fit"] if f["device"] == "cpu")
    assert cpu["level"] == "too_big" and "GPU" in cpu["message"] and cpu["need_bytes"] == int(shard * 1.2)

    sharded = model(backend, SHARDED_REPO).json()
    [v] = sharded["variants"]
    assert v["id"] == "fp16"
    assert [f["path"] for f in v["files"]][:2] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert "model.safetensors.index.json" in [f["path"] for f in v["files"]]


def test_dtype_from_the_safetensors_header_when_config_has_none(backend, hub):
    tensors = {k: a.view("float16") for k, a in tiny_llama_tensors(range(1)).items()}
    repo = hub.add(HubRepo("modeldeck-test/no-dtype", [
        StandinFile("config.json", b'{"model_type": "llama"}'),
        StandinFile("model.safetensors", safetensors_bytes(tensors)),
    ]))
    try:
        [v] = model(backend, repo.repo_id).json()["variants"]
    finally:
        del hub.repos[repo.repo_id]
    assert v["dtype"] == "fp16" and v["id"] == "fp16"
    ranges = [q.range for q in hub.requests if q.path == f"/{repo.repo_id}/resolve/{repo.sha}/model.safetensors"]
    size = repo.file("model.safetensors").size
    # Only the header was read (its length, then the JSON), never the weights.
    assert ranges[0] == "bytes=0-7" and len(ranges) == 2
    assert int(ranges[1].split("-")[1]) < size - 10_000


def test_launch_suggestion_is_what_the_recipe_takes(backend):
    page = model(backend, GGUF_REPO).json()
    q8 = next(v for v in page["variants"] if v["id"] == "Q8_0")
    r = httpx.post(f"{backend.url}/api/deployments/plan", headers=AUTH, timeout=30,
                   json={"recipe": q8["launch"]["recipe"], "model": q8["launch"]["model"], "gpus": []})
    assert r.status_code == 200, r.text
    args = r.json()["docker_run_args"]
    assert args[args.index("-hf") + 1] == f"{GGUF_REPO}:Q8_0"  # llama-server -hf org/repo:QUANT
    ollama = q8["launches"][1]
    r = httpx.post(f"{backend.url}/api/deployments/plan", headers=AUTH, timeout=30,
                   json={"recipe": ollama["recipe"], "model": ollama["model"], "gpus": []})
    assert r.status_code == 200, r.text
    assert f"hf.co/{GGUF_REPO}:Q8_0" in r.text  # what Ollama is asked to pull

    st = model(backend, SAFETENSORS_REPO).json()["variants"][0]["launch"]
    r = httpx.post(f"{backend.url}/api/deployments/plan", headers=AUTH, timeout=30,
                   json={"recipe": st["recipe"], "model": st["model"], "gpus": ["0"]})
    assert r.status_code == 200, r.text
    assert SAFETENSORS_REPO in r.json()["docker_run_args"]


def test_big_model_does_not_fit_the_host(backend, hub):
    page = model(backend, BIG_GGUF_REPO).json()
    q4 = next(v for v in page["variants"] if v["id"] == "Q4_K_M")
    assert len(q4["files"]) == 2 and q4["size_bytes"] == int(39.9 * 1000 ** 3) + int(2.6 * 1000 ** 3)
    cpu = next(f for f in q4["fit"] if f["device"] == "cpu")
    expected = "cpu_only" if cpu["need_bytes"] <= cpu["free_bytes"] else "too_big"
    assert cpu["level"] == expected
    assert [v["id"] for v in page["variants"]] == ["Q2_K", "Q4_K_M"]  # smallest first


# --------------------------------------------------------------------------- gated, refusals


def test_gated_without_wrong_and_right_token(backend, hub):
    body = error(model(backend, GATED_REPO), 403, "hub_gated")
    assert "no Hugging Face token is saved" in body["message"]
    assert f"{hub.url}/{GATED_REPO}" in body["hint"] and "Help → First-run check" in body["hint"] and "Discover" in body["hint"]
    assert hub.requests[-1].status == 401 and hub.requests[-1].authorization is None

    write_secret(backend.home, HF_TOKEN, "hf_not_on_the_list")
    try:
        body = error(model(backend, GATED_REPO), 403, "hub_gated")
        assert "has no access" in body["message"]
        assert hub.requests[-1].status == 403

        write_secret(backend.home, HF_TOKEN, DEFAULT_TOKEN)
        r = model(backend, GATED_REPO)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["gated"] == "manual" and "gated" in page["message"]
        assert page["variants"][0]["dtype"] == "bf16"
        assert hub.requests[-1].authorization == f"Bearer {DEFAULT_TOKEN}"
    finally:
        delete_secret(backend.home, HF_TOKEN)


def test_unknown_repo_and_revision(backend):
    body = error(model(backend, "nobody/no-such-model"), 404, "hub_repo_not_found")
    assert "nobody/no-such-model" in body["message"]
    error(model(backend, GGUF_REPO, revision="v9-missing"), 404, "hub_revision_not_found")


def test_not_servable_names_the_formats_found(backend):
    body = error(model(backend, ONNX_REPO), 422, "hub_not_servable")
    assert "onnx" in body["message"] and "GGUF" in body["message"]
    assert body["details"]["formats"] == ["onnx"]


@pytest.mark.parametrize("repo_id", ["single-segment", "a/b/c", quote("../etc", safe=""), "org/..x", "org/na me",
                                     "org/" + "x" * 97, "org/a--b", "-org/x", "org/x.", "org-/x", "org/x.git", "café/x"])
def test_bad_repo_ids_are_refused(backend, hub, repo_id):
    before = len(hub.requests)
    r = model(backend, repo_id)
    assert r.status_code == 422, (repo_id, r.text)
    assert r.json()["error"]["message"]
    assert len(hub.requests) == before  # refused before asking the Hub


@pytest.mark.parametrize("revision", ["..", "a/../b", "has space", "x" * 201, "/abs"])
def test_bad_revisions_are_refused(backend, revision):
    assert model(backend, GGUF_REPO, revision=revision).status_code == 422


def test_unreachable_hub_is_a_fast_502(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"
    proc = BackendProcess(tmp_path / "home", env={"HF_ENDPOINT": closed, "HF_TOKEN": ""})
    proc.start()
    try:
        for path in ("/api/hub/search", f"/api/hub/models/{GGUF_REPO}"):
            t0 = time.monotonic()
            body = error(get(proc, path, q="qwen") if "search" in path else get(proc, path), 502, "hub_unreachable")
            assert time.monotonic() - t0 < 10
            assert closed in body["message"]
    finally:
        proc.stop()


def test_a_hub_that_never_answers_is_a_502_within_10_s(tmp_path, engine):
    """A Hub that accepts the connection and then says nothing: the page gives up in time."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nothing ever reads or answers
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        settings = Settings(home=tmp_path / "home", token="t", hf_endpoint=endpoint)
        with serve(create_app(settings, engine=engine)) as url:
            t0 = time.monotonic()
            r = httpx.get(f"{url}/api/hub/models/{GGUF_REPO}", headers={"Authorization": "Bearer t"}, timeout=30)
            elapsed = time.monotonic() - t0
    body = error(r, 502, "hub_unreachable")
    assert endpoint in body["message"]
    assert elapsed <= 10.5, elapsed


def test_modeldeck_setting_overrides_hf_endpoint(hub, tmp_path):
    proc = BackendProcess(tmp_path / "home", env={"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                                  "MODELDECK_HF_ENDPOINT": hub.url, "HF_TOKEN": ""})
    proc.start()
    try:
        r = get(proc, "/api/hub/search", q="smollm")
        assert r.status_code == 200, r.text
        assert r.json()["endpoint"] == hub.url and [m["repo_id"] for m in r.json()["results"]] == [SHARDED_REPO]
    finally:
        proc.stop()


def test_model_page_through_cdn_redirects(gguf_models, tmp_path):
    """On huggingface.co LFS files redirect to a CDN: the header read for the dtype follows it."""
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models)), lfs_redirect=True) as cdn_hub:
        tensors = {k: a.view("float16") for k, a in tiny_llama_tensors(range(1)).items()}
        cdn_hub.add(HubRepo("modeldeck-test/no-dtype", [StandinFile("config.json", b"{}"),
                                                        StandinFile("model.safetensors", safetensors_bytes(tensors))]))
        client = HubClient(Settings(home=tmp_path / "home", hf_endpoint=cdn_hub.url), secrets=lambda: None)
        detail = client.model("modeldeck-test/no-dtype")
        assert [v.id for v in detail.variants] == ["fp16"]
        assert [r.range for r in cdn_hub.requests if r.path.startswith("/cdn/")][0] == "bytes=0-7"
        assert client.model(GGUF_REPO).variants[0].size_bytes == len(tiny_gguf_bytes(gguf_models))


def test_hub_client_for_downloads(hub, tmp_path):
    """The Python API downloads use: files of one variant, gated access with the given token, odd repos."""
    hub.add(HubRepo("modeldeck-test/odd", [StandinFile("config.json", b"not json"),
                                           StandinFile("model.safetensors", b"\x03\x00")]))
    try:
        anonymous = HubClient(Settings(home=tmp_path / "a", hf_endpoint=hub.url), secrets=lambda: None)
        [odd] = anonymous.model("modeldeck-test/odd").variants
        assert (odd.id, odd.dtype) == ("safetensors", None)  # neither config nor header says: still a page
        with pytest.raises(HubGated):
            anonymous.variant_files(GATED_REPO, "main", "bf16")
        allowed = HubClient(Settings(home=tmp_path / "b", hf_endpoint=hub.url), secrets=lambda: DEFAULT_TOKEN)
        files = allowed.variant_files(GATED_REPO, "main", "bf16")
        assert [f.path for f in files] == ["model.safetensors", "config.json"]
        shard = hub.repos[GATED_REPO].file("model.safetensors")
        assert (files[0].size, files[0].sha256) == (shard.size, shard.sha256)
        with pytest.raises(HubVariantNotFound, match="Its variants: bf16"):
            allowed.variant_files(GATED_REPO, "main", "Q4_K_M")
    finally:
        del hub.repos["modeldeck-test/odd"]


# --------------------------------------------------------------------------- fit on GPUs


def test_fit_per_gpu_from_the_live_snapshot(hub, tmp_path, engine):
    """An in-process backend whose stats sampler reads a fake NVML: two GPUs, one nearly full."""
    busy = {**fake_gpu(1), "total": 8 * GIB, "used": 7 * GIB, "name": "NVIDIA Small"}
    settings = Settings(home=tmp_path / "home", token="t", hf_endpoint=hub.url)
    app = create_app(settings, engine=engine)
    with serve(app) as url:
        sampler = StatsSampler(lambda: [], interval=0.1, gpu_interval=0.1, nvml=FakeNvml([fake_gpu(0), busy]))
        sampler.start()
        app.state.stats = sampler
        try:
            wait_until(lambda: (s := sampler.latest()) is not None and len(s.gpus) == 2, what="a snapshot with 2 GPUs")

            def fits(repo_id: str) -> dict[str, dict[str, dict]]:
                r = httpx.get(f"{url}/api/hub/models/{repo_id}", headers={"Authorization": "Bearer t"}, timeout=30)
                assert r.status_code == 200, r.text
                return {v["id"]: {f["device"]: f for f in v["fit"]} for v in r.json()["variants"]}

            tiny = fits(GGUF_REPO)["Q4_K_M"]
            assert set(tiny) == {"0", "1", "cpu"}
            assert tiny["0"]["level"] == "fits" and tiny["0"]["name"] == "NVIDIA Fake 0"
            assert tiny["0"]["free_bytes"] == 23 * GIB  # 24 GiB total, 1 GiB used
            assert tiny["1"]["level"] == "fits" and tiny["1"]["free_bytes"] == 1 * GIB

            big = fits(BIG_GGUF_REPO)["Q2_K"]
            need, host = big["0"]["need_bytes"], big["cpu"]["free_bytes"]
            assert need == int(26.4 * 1000 ** 3 * 1.2)
            # 29.5 GiB does not fit 23 GiB free: llama.cpp offloads part when GPU + host hold it.
            assert big["0"]["level"] == ("partial_offload" if need <= 23 * GIB + host else "too_big")
            assert big["1"]["level"] == ("partial_offload" if need <= 1 * GIB + host else "too_big")

            vllm = fits(SAFETENSORS_REPO)["bf16"]
            assert vllm["0"]["level"] == "fits"  # 90% of 24 GiB reserved, 23 GiB free
            assert vllm["1"]["level"] == "too_big" and "reserves 90%" in vllm["1"]["message"]
            assert vllm["cpu"]["level"] == "too_big"
        finally:
            sampler.stop()


# --------------------------------------------------------------------------- the pieces, with numbers


def _gguf_variant(weights: int) -> Variant:
    return Variant(id="Q4_K_M", format="gguf", files=[VariantFile(path="m-Q4_K_M.gguf", size=weights)],
                   size_bytes=weights, weights_bytes=weights, runtimes=["llama-cpp"],
                   launch=Launch(recipe="llama-cpp", model="o/m:Q4_K_M"))


def test_fit_levels_with_numbers():
    catalog = load_catalog(Settings().catalog_dir)
    llama = catalog.get("llama-cpp")
    v = _gguf_variant(10 * GIB)  # needs 12 GiB
    gpu = [GpuFree(0, "A", 16 * GIB, 24 * GIB)]
    assert [f.level for f in fit_variant(v, llama, gpu, 64 * GIB)] == ["fits", "cpu_only"]
    small = [GpuFree(0, "A", 4 * GIB, 8 * GIB)]
    levels = fit_variant(v, llama, small, 32 * GIB)
    assert [f.level for f in levels] == ["partial_offload", "cpu_only"]
    assert "33%" in levels[0].message and "host memory" in levels[0].message
    assert [f.level for f in fit_variant(v, llama, small, 6 * GIB)] == ["too_big", "too_big"]
    assert [f.level for f in fit_variant(v, llama, [], 32 * GIB)] == ["cpu_only"]  # no GPU: the host holds it
    assert [f.level for f in fit_variant(v, llama, [GpuFree(0, "A", None, None)], None)] == ["unknown", "unknown"]
    assert fit_variant(v, None, gpu, 1)[0].level == "unknown"


@pytest.mark.parametrize("name, tag", [
    ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M"), ("Llama-3.2-1B-Instruct-f16.gguf", "f16"),
    ("model.Q8_0.gguf", "Q8_0"), ("x-IQ2_XXS.gguf", "IQ2_XXS"), ("x-BF16-00001-of-00003.gguf", "BF16"),
    ("Q4_K_M/m-Q4_K_M-00002-of-00002.gguf", "Q4_K_M"), ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
    ("GLM-4.5-Air-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"), ("Qwen2.5-0.5B-Instruct-q5_k_m.gguf", "q5_k_m"),
    ("tiny-llama.gguf", None), ("qwen2.5-7b-instruct-q4_0-00001-of-00002.gguf", "q4_0"),
])
def test_quantization_from_file_names(name, tag):
    assert gguf_quant(name) == tag


def test_variants_group_files():
    files = [HubFile(path=p, size=s) for p, s in [
        ("README.md", 10), ("m-Q4_K_M.gguf", 400), ("m-Q8_0-00001-of-00002.gguf", 500),
        ("m-Q8_0-00002-of-00002.gguf", 300), ("mmproj-m-f16.gguf", 50), ("config.json", 5),
        ("model-00001-of-00002.safetensors", 1000), ("model-00002-of-00002.safetensors", 900),
        ("model.safetensors.index.json", 7), ("consolidated.safetensors", 1900), ("tokenizer.json", 3),
        ("original/consolidated.00.pth", 1900), ("onnx/model.safetensors", 5)]]
    variants = build_variants("o/m", files, None, "bf16")
    assert [(v.id, v.size_bytes, v.weights_bytes) for v in variants] == [
        ("Q4_K_M", 400, 400), ("Q8_0", 800, 800),
        ("bf16", 1000 + 900 + 7 + 5 + 3, 1900), ("bf16-consolidated", 1900 + 5 + 3, 1900)]
    assert [v.launch.model for v in variants] == ["o/m:Q4_K_M", "o/m:Q8_0", "o/m", "o/m"]
    assert [(x.recipe, x.model) for x in variants[0].launches] == [("llama-cpp", "o/m:Q4_K_M"),
                                                                   ("ollama", "hf.co/o/m:Q4_K_M")]
    assert [x.recipe for x in variants[2].launches] == ["vllm", "sglang", "tgi"]
    consolidated = variants[3]
    assert "model.safetensors.index.json" not in [f.path for f in consolidated.files]


@hypothesis.given(hypothesis.strategies.text(alphabet="ab_-./é9 ", max_size=12))
@hypothesis.settings(max_examples=300, deadline=None)
def test_repo_ids_accepted_are_ids_the_hub_client_accepts(text):
    """Whatever passes check_repo_id also passes huggingface_hub's own check (else it would be a 502, not a 422)."""
    try:
        check_repo_id(text)
    except InvalidHubRequest:
        return
    validate_repo_id(text)
    assert text.count("/") == 1

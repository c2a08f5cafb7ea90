"""A real model runtime on every test machine: llama.cpp's llama-server, built here from source, with a real GGUF.

The image is the one the backend builds when the published image cannot be pulled
(backend/local_images.py; scripts/test builds it once per machine). The model is a tiny real
GGUF (scripts/make-tiny-gguf: llama architecture, llama.cpp's own SentencePiece vocabulary,
random weights). Everything goes through the public API of a real backend on a free port, with
the llama.cpp recipe as shipped but for its image references (pointed at a registry that does
not exist, so the launch must fall back on the local build by itself).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from backend.app import create_app
from backend.catalog import load_catalog
from backend.deployments import DeploymentService, LocalFallback
from backend.errors import ImageUnavailable
from backend.launches import LaunchProgress
from backend.launch_plan import LaunchRequest, plan
from backend.local_images import load_local_build
from backend.settings import REPO_ROOT, Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch
from tests.support.live_server import serve
from tests.support.waiting import wait_until
from tests.support.sse import sse_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "llamacpp-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNREACHABLE = "registry.invalid/ggml-org/llama.cpp"  # .invalid never resolves (RFC 2606)
EOS = 2  # tokenizer.ggml.eos_token_id of ggml-vocab-llama-spm.gguf


@pytest.fixture(scope="module")
def model_dir(gguf_models) -> Path:
    return gguf_models


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory) -> Path:
    """The shipped catalog, with llama.cpp's published images pointed at a registry that cannot answer."""
    folder = tmp_path_factory.mktemp("catalog")
    for recipe in (REPO_ROOT / "containers").glob("*.toml"):
        shutil.copy(recipe, folder / recipe.name)
    shutil.copytree(REPO_ROOT / "containers" / "llama-cpp", folder / "llama-cpp")
    text = (folder / "llama-cpp.toml").read_text()
    assert text.count('"ghcr.io/ggml-org/llama.cpp:') == 2
    (folder / "llama-cpp.toml").write_text(text.replace('"ghcr.io/ggml-org/llama.cpp:', f'"{UNREACHABLE}:'))
    return folder


@pytest.fixture(scope="module")
def settings(tmp_path_factory, catalog_dir, model_dir, demo_base_image) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("llama-home"), token=TOKEN, catalog_dir=catalog_dir,
                    model_dirs=[model_dir], demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})


@pytest.fixture(scope="module")
def api(engine, settings, llamacpp_image):
    with serve(create_app(settings, engine=engine)) as url:
        yield url


@pytest.fixture(scope="module")
def tiny(api, model_dir, llamacpp_image):
    """The tiny GGUF launched once with the llama.cpp recipe (automatic image choice); removed at the end."""
    served = f"t{RUN_ID}-llama"
    dep_id, events = launch(api, TOKEN, {"recipe": "llama-cpp", "model": str(model_dir / "tiny" / "tiny-llama.gguf"),
                                         "served_name": served}, timeout=180)
    assert events[-1]["phase"] == "ready", events[-5:]
    yield {"id": dep_id, "served": served, "events": events}
    httpx.delete(f"{api}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


@pytest.fixture()
def client(api):
    c = openai.OpenAI(base_url=f"{api}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    yield c
    c.close()


def test_local_gguf_launches_on_the_local_build_and_is_ready_through_llama_servers_health(
        api, tiny, engine, llamacpp_image):
    phases = [e["phase"] for e in tiny["events"]]
    assert phases[0] == "queued" and phases[-1] == "ready"
    assert "pulling" not in phases, "the local build is here: no registry is asked"
    loading = [e for e in tiny["events"] if e["phase"] == "loading"]
    assert loading and "/health" in loading[0]["message"], "readiness is llama-server's own /health (503 while loading)"
    d = httpx.get(f"{api}/api/deployments/{tiny['id']}", headers=AUTH).json()
    assert d["ready"] and d["image"] == llamacpp_image
    attrs = engine.client.api.inspect_container(f"modeldeck-{tiny['id']}")
    # The recipe as shipped: -m for a local file, no fixed -ngl; the image's entrypoint is llama-server.
    assert attrs["Config"]["Cmd"] == ["-m", "/models/tiny/tiny-llama.gguf", "--alias", tiny["served"],
                                      "--host", "0.0.0.0", "--port", "8080"]
    assert attrs["Config"]["Entrypoint"] == ["/app/llama-server"]
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/models")
    assert mount["RW"] is False
    health = httpx.get(f"http://127.0.0.1:{d['host_port']}/health", timeout=5)
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_chat_through_v1_with_the_openai_client(client, tiny):
    reply = client.chat.completions.create(model=tiny["served"], max_tokens=16,
                                           messages=[{"role": "user", "content": "Hello there"}])
    assert reply.model == tiny["served"]
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    # Counted by llama-server's own tokenizer: the chat template wraps the words in several tokens.
    assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens > 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = client.chat.completions.create(model=tiny["served"], max_tokens=12, stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Hello there"}])
    text, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text)
    assert usage is not None and usage.completion_tokens == 12
    assert tiny["served"] in [m.id for m in client.models.list().data]


def test_a_slow_loading_gguf_is_ready_only_after_llama_servers_503_while_loading(api, model_dir, llamacpp_image):
    """The tiny model is ready in ~0.1 s, too fast to see llama-server's own loading phase; this one is not.

    A 512-wide, 16-layer model (112 MiB) has a 1 GiB KV cache at its 32768-token context, which
    llama-server allocates and zeroes after its HTTP server is up: for a second or more, /health
    (and every other path) answers 503 "Loading model". The test polls the container's published
    port itself every ~20 ms while the backend's launch waits, and checks that the backend called
    the deployment ready only after that phase, never during it.
    """
    folder = model_dir / "slow"  # inside the backend's model folder (MODELDECK_MODEL_DIRS); removed at the end
    served = f"t{RUN_ID}-llama-slow"
    # Wall-clock times throughout: the launch events carry time.time() too.
    health: list[tuple[float, float, int | str, str]] = []  # (sent, answered, status or error, body)
    views: list[tuple[float, float, str, bool]] = []  # GET /api/deployments/{id}: (sent, answered, status, ready)
    events: list[dict] = []
    port: list[int] = []
    port_known, stop = threading.Event(), threading.Event()
    dep_id = None

    def follow_events() -> None:
        with httpx.stream("GET", f"{api}/api/deployments/{dep_id}/events", headers=AUTH, timeout=120) as s:
            for name, data in sse_events(s):
                if name == "progress":
                    events.append(json.loads(data))

    def poll_health() -> None:
        if not port_known.wait(120):
            return
        with httpx.Client(timeout=5, trust_env=False) as c:
            while not stop.is_set():
                sent = time.time()
                try:
                    r = c.get(f"http://127.0.0.1:{port[0]}/health")
                    health.append((sent, time.time(), r.status_code, r.text))
                    if r.status_code == 200:
                        return  # llama-server never goes back to loading
                except httpx.HTTPError as exc:  # not listening yet
                    health.append((sent, time.time(), type(exc).__name__, ""))
                stop.wait(0.02)

    try:
        run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make-tiny-gguf"), str(folder),
                              "--name", "slow-llama", "--width", "512", "--layers", "16"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        path = folder / "slow-llama.gguf"
        assert path.stat().st_size > 100 * 2 ** 20
        r = httpx.post(f"{api}/api/deployments", headers=AUTH, timeout=30,
                       json={"recipe": "llama-cpp", "model": str(path), "served_name": served})
        assert r.status_code in (200, 202), r.text
        dep_id = r.json()["id"]
        threads = [threading.Thread(target=f, daemon=True) for f in (follow_events, poll_health)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        with httpx.Client(headers=AUTH, timeout=30) as c:
            while time.monotonic() < deadline:
                sent = time.time()
                d = c.get(f"{api}/api/deployments/{dep_id}").json()
                views.append((sent, time.time(), d["status"], d["ready"]))
                if d["host_port"] and not port:
                    port.append(d["host_port"])
                    port_known.set()
                if d["ready"] or d["status"] in ("ready", "failed"):
                    break
                time.sleep(0.02)
        threads[0].join(30)  # the events stream ends with the launch
        threads[1].join(10)  # the poller ends at its first 200
        stop.set()

        phases = [e["phase"] for e in events]
        assert phases and phases[-1] == "ready", events[-3:]
        loading_at = next(e["time"] for e in events if e["phase"] == "loading")
        ready_at = events[-1]["time"]
        codes = [h[2] for h in health]
        summary = (f"/health polled {len(codes)} times: {codes.count(503)} x 503, "
                   f"{sum(not isinstance(x, int) for x in codes)} not listening, "
                   f"200 at the end: {codes[-1:] == [200]}; "
                   f"loading -> ready {ready_at - loading_at:.2f} s")
        print(summary)
        loads = [h for h in health if h[2] == 503]
        assert loads, "llama-server's loading phase was never seen: " + summary
        loading_error = {"message": "Loading model", "type": "unavailable_error", "code": 503}
        assert all(json.loads(h[3])["error"] == loading_error for h in loads), loads[0][3]
        # Seen while the backend's launch was in its loading phase, by its events and by its API.
        assert any(loading_at <= h[0] and h[1] <= ready_at for h in loads), summary
        loading_views = [v for v in views if v[2] == "loading" and not v[3]]
        assert loading_views and any(loading_views[0][1] <= h[0] and h[1] <= loading_views[-1][0] for h in loads), \
            (summary, views)
        # Never ready while llama-server still said 503: every 503 was asked before the ready event,
        # and before any view of the deployment that said ready.
        first_ready = next(v for v in views if v[3] or v[2] == "ready")
        assert max(h[0] for h in loads) < min(ready_at, first_ready[1]), (summary, views)
        # The server went from 503 to 200 once, and answers 200 from then on.
        assert codes[-1] == 200 and 503 not in codes[codes.index(200):], summary
        assert all(h[2] == 200 for h in health if h[0] > ready_at), summary
        # The bigger model still generates.
        with openai.OpenAI(base_url=f"{api}/v1", api_key=TOKEN, max_retries=0, timeout=60) as client:
            reply = client.chat.completions.create(model=served, max_tokens=4,
                                                   messages=[{"role": "user", "content": "Hello"}])
        assert reply.usage.completion_tokens == 4
    finally:
        stop.set()
        if dep_id:
            httpx.delete(f"{api}/api/deployments/{dep_id}", headers=AUTH, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_fit_check_reads_the_real_files_size_and_header(api, model_dir):
    path = model_dir / "tiny" / "tiny-llama.gguf"
    r = httpx.post(f"{api}/api/fit-check", headers=AUTH, timeout=30,
                   json={"recipe": "llama-cpp", "model": str(path)})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["bytes_needed"] == int(path.stat().st_size * 1.2)
    # 32000 x 64 embeddings + 2 layers of (4 x 64 x 64 attention + 3 x 128 x 64 MLP + 2 x 64 norms) + 64.
    params = 32000 * 64 + 2 * (4 * 64 * 64 + 3 * 128 * 64 + 2 * 64) + 64
    assert f"{params / 1e9:.3g}B parameters" in answer["basis"], answer["basis"]
    assert "llama architecture" in answer["basis"] and "2 layers" in answer["basis"]
    assert "GGUF header" in answer["basis"]


def test_killed_mid_stream_the_client_gets_an_openai_error_event(api, tiny, engine, model_dir):
    served = f"t{RUN_ID}-llama-kill"
    dep_id, events = launch(api, TOKEN, {"recipe": "llama-cpp", "model": str(model_dir / "tiny" / "tiny-llama.gguf"),
                                         "served_name": served}, timeout=180)
    assert events[-1]["phase"] == "ready", events[-5:]
    try:
        chunks, error, done = 0, None, False
        killed = threading.Event()

        def kill() -> None:
            engine.client.api.kill(f"modeldeck-{dep_id}")
            killed.set()

        # Thousands of tokens with the end-of-text token banned: seconds of streaming.
        with httpx.stream("POST", f"{api}/v1/chat/completions", headers=AUTH, timeout=60,
                          json={"model": served, "stream": True, "max_tokens": 8000, "logit_bias": {str(EOS): -100},
                                "messages": [{"role": "user", "content": "go on"}]}) as s:
            for _, data in sse_events(s):
                chunks += 1
                if chunks == 5:
                    threading.Thread(target=kill, daemon=True).start()
                if data == "[DONE]":
                    done = True
                elif data.startswith("{") and "error" in json.loads(data):
                    error = json.loads(data)["error"]
        assert killed.wait(10), "docker kill returned"
        assert chunks < 8000, "the stream ended early, by the kill"
        assert error is not None and error["message"] and error["type"], "the stream must end with an error event"
        assert done, "the error event is followed by [DONE] so OpenAI clients stop reading"
    finally:
        httpx.delete(f"{api}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


def test_metrics_show_llama_cpps_tokens_per_second(api, client, tiny):
    client.chat.completions.create(model=tiny["served"], max_tokens=64, logit_bias={str(EOS): -100},
                                   messages=[{"role": "user", "content": "count"}])
    # /metrics renders the stats sampler's latest snapshot: the request shows from its next tick.
    served = re.escape(tiny["served"])

    def counted() -> tuple[list[str], list[str]] | None:
        text = httpx.get(f"{api}/metrics", headers=AUTH, timeout=10).text
        rates = re.findall(rf'^modeldeck_decode_tokens_per_second{{model="{served}"}} (\S+)$', text, re.M)
        tokens = re.findall(rf'^modeldeck_completion_tokens_total{{model="{served}"}} (\S+)$', text, re.M)
        return (rates, tokens) if rates and tokens and float(tokens[0]) >= 64 else None

    rates, tokens = wait_until(counted, 10, interval=0.2, what="/metrics to count the 64 tokens")
    assert rates and float(rates[0]) > 0, rates


def test_local_image_with_gpus_says_it_is_cpu_only(api, model_dir):
    r = httpx.post(f"{api}/api/deployments", headers=AUTH, timeout=30, json={
        "recipe": "llama-cpp", "model": str(model_dir / "tiny" / "tiny-llama.gguf"), "gpus": ["0"],
        "image_source": "local", "served_name": f"t{RUN_ID}-llama-gpu"})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert "CPU-only" in error["message"] and "gpus: []" in error["hint"]


def test_published_only_says_what_failed(api, model_dir):
    dep_id, events = launch(api, TOKEN, {"recipe": "llama-cpp", "model": str(model_dir / "tiny" / "tiny-llama.gguf"),
                                         "image_source": "published", "served_name": f"t{RUN_ID}-llama-pub"},
                            timeout=60)
    try:
        assert [e["phase"] for e in events][-2:] == ["pulling", "failed"], events
        assert UNREACHABLE in events[-1]["message"] and events[-1]["details"]["hint"]
        assert events[-1]["details"]["code"] == "image_unavailable"
    finally:
        httpx.delete(f"{api}/api/deployments/{dep_id}", headers=AUTH, timeout=30)


def test_a_failed_pull_falls_back_on_the_local_build(engine, settings, llamacpp_image, model_dir):
    """The step a launch takes when the published image is missing: pull, fail fast, run the local build."""
    service = DeploymentService(engine, load_catalog(settings.catalog_dir), settings)
    try:
        recipe = service.catalog.get("llama-cpp")
        req = LaunchRequest(recipe="llama-cpp", model=str(model_dir / "tiny" / "tiny-llama.gguf"), gpus=[])
        spec = plan(recipe, req, settings, image=f"{UNREACHABLE}:server", host_port=0, gpu_runtime=False)
        build = load_local_build(settings.catalog_dir, "llama-cpp")
        lp = LaunchProgress("x", "h", image=spec.image)
        started = time.monotonic()
        out = service.launcher._ensure_image(recipe, spec, lp, LocalFallback(
            build, cpu_only_gpus=False, replan=lambda tag: plan(recipe, req, settings, image=tag, host_port=0,
                                                                gpu_runtime=False)))
        assert time.monotonic() - started < 25
        assert out.image == llamacpp_image == lp.image
        assert out.labels["modeldeck.config_hash"] != spec.labels["modeldeck.config_hash"], "re-planned"
        messages = [(e.phase, e.message) for e in lp.events]
        assert messages[0] == ("pulling", f"Pulling image {UNREACHABLE}:server")
        assert any(p == "building" and "CPU-only image built here from source" in m for p, m in messages), messages

        # With GPUs asked for, the CPU-only build does not stand in silently.
        lp = LaunchProgress("y", "h", image=spec.image)
        with pytest.raises(ImageUnavailable) as err:
            service.launcher._ensure_image(recipe, spec, lp, LocalFallback(build, cpu_only_gpus=True))
        assert "CPU-only" in err.value.hint and "gpus: []" in err.value.hint
    finally:
        service.close()


def test_a_silent_registry_fails_the_pull_within_the_time_out(engine, settings, monkeypatch):
    """Docker's pull has no time-out: a registry that never answers must not hold a launch for minutes."""
    import backend.launcher as launcher

    service = DeploymentService(engine, load_catalog(settings.catalog_dir), settings)
    released = threading.Event()

    def silent_pull(ref):
        released.wait(30)
        yield from ()

    monkeypatch.setattr(service.engine, "pull", silent_pull)
    try:
        started = time.monotonic()
        with pytest.raises(ImageUnavailable, match="No registry answered") as err:
            list(service.launcher._pull_within("example.org/x:1", 1.0))
        assert time.monotonic() - started < 5 and err.value.hint
        assert launcher.PULL_ANSWER_TIMEOUT_S <= 30
    finally:
        released.set()
        service.close()

"""POST /api/deployments/plan on a real backend: each recipe's exact argument vector, checked against upstream.

Every test here would have caught a recipe bug that upstream's own source shows (see
docs/recipes.md for the file and version each argument was checked against). Planning
creates and pulls nothing; the last tests prove that what is planned is what a launch
creates, and that the `docker run` line recreates it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL, skip_or_fail
from tests.support.live_server import free_port, serve
from tests.support.deployments import wait_ready

pytestmark = [pytest.mark.docker]
TOKEN = "plan-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture(scope="module")
def api(engine, demo_base_image, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("plan-home"), token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


def plan(api: str, **body) -> dict:
    r = httpx.post(f"{api}/api/deployments/plan", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def after_image(answer: dict) -> list[str]:
    """What `docker run` passes after the image: the rest of the entrypoint, then the command."""
    args = answer["docker_run_args"]
    return args[args.index(answer["image"], 3) + 1:]


def test_vllm_model_is_the_first_argument_of_vllm_serve(api, engine):
    """vllm/vllm-openai's ENTRYPOINT is `vllm serve` (docker/Dockerfile); `--model` is deprecated there and a
    `--served-model-name` before the model is refused (vllm/utils/argparse_utils.py)."""
    name = f"t{RUN_ID}-plan-vllm"
    p = plan(api, recipe="vllm", model=MODEL, served_name=name, gpus=["0"], args=["--max-model-len", "4096"])
    assert p["command"] == [MODEL, "--served-model-name", name, "--port", "8000",
                            "--gpu-memory-utilization", "0.9", "--max-model-len", "4096"]
    assert "--model" not in p["command"] and p["entrypoint"] is None
    assert p["image"] == "vllm/vllm-openai:latest" and after_image(p) == p["command"]
    assert p["gpus"] == ["0"] and p["shm_size"] == "8g" and p["init"] is True
    args = p["docker_run_args"]
    assert args[:3] == ["docker", "run", "-d"] and "--init" in args
    assert args[args.index("--gpus") + 1] == '"device=0"'
    # No port asked: Docker assigns one when the container starts (`ip::port`), nothing is held meanwhile.
    assert args[args.index("-p") + 1] == "127.0.0.1::8000" and p["host_port_automatic"] and p["host_port"] == 0
    # Nothing was created or pulled.
    assert engine.list(labels={"modeldeck.id": p["id"]}) == []
    assert p["id"] not in [d["id"] for d in httpx.get(f"{api}/api/deployments", headers=AUTH).json()]


def test_tgi_shards_over_the_gpus_picked_and_is_a_release(api):
    """Without --num-shard TGI takes every visible GPU (launcher/src/main.rs, find_num_shards); `latest` is main."""
    two = plan(api, recipe="tgi", model=MODEL, served_name=f"t{RUN_ID}-plan-tgi", gpus=["0", "2"])
    assert two["command"] == ["--model-id", MODEL, "--port", "80", "--num-shard", "2"]
    assert two["image"] == "ghcr.io/huggingface/text-generation-inference:3.3.7"
    assert two["gpus"] == ["0", "2"] and after_image(two) == two["command"]
    one = plan(api, recipe="tgi", model=MODEL, served_name=f"t{RUN_ID}-plan-tgi", gpus=["1"])
    assert one["command"][-2:] == ["--num-shard", "1"]


def test_sglang_shared_memory_and_limits_as_upstream_runs_it(api):
    """docs/get_started/install.md: --shm-size 32g; docker/compose.yaml: ulimits memlock -1, stack 67108864."""
    name = f"t{RUN_ID}-plan-sglang"
    p = plan(api, recipe="sglang", model=MODEL, served_name=name, gpus=["0"])
    assert p["shm_size"] == "32g" and p["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert p["ipc"] is None, "ModelDeck never joins the host's IPC namespace"
    assert p["entrypoint"] == ["python3", "-m", "sglang.launch_server"]
    assert p["command"] == ["--model-path", MODEL, "--served-model-name", name, "--host", "0.0.0.0",
                            "--port", "30000"]
    args = p["docker_run_args"]
    assert args[args.index("--shm-size") + 1] == "32g"
    assert [args[i + 1] for i, a in enumerate(args) if a == "--ulimit"] == ["memlock=-1:-1",
                                                                          "stack=67108864:67108864"]
    assert args[args.index("--entrypoint") + 1] == "python3"
    assert after_image(p) == ["-m", "sglang.launch_server", *p["command"]]


def test_ollama_is_ready_only_when_its_model_answers(api):
    """The readiness check that a backend started later repeats is in the labels, filled in."""
    p = plan(api, recipe="ollama", model="qwen2.5:0.5b", gpus=[])
    assert p["command"] == ["serve"] and p["gpus"] == []
    assert json.loads(p["labels"]["modeldeck.model_check"]) == {
        "method": "POST", "path": "/api/show", "body": {"model": "qwen2.5:0.5b"}}


def test_secrets_are_planned_by_name_only(api):
    secret = "hf_planSecretValue123"
    r = httpx.post(f"{api}/api/deployments/plan", headers=AUTH, timeout=30,
                   json={"recipe": "vllm", "model": MODEL, "gpus": ["0"], "env": {"HF_TOKEN": secret, "PLAIN": "1"}})
    assert r.status_code == 200 and secret not in r.text
    p = r.json()
    assert p["secrets"] == ["HF_TOKEN"] and p["environment"] == {"PLAIN": "1"}
    args = p["docker_run_args"]
    assert ["-e", "HF_TOKEN"] in [args[i:i + 2] for i in range(len(args))]
    assert "-e PLAIN=1 \\\n" in p["docker_run"] and "-e HF_TOKEN \\\n" in p["docker_run"]


def test_plan_refusals_say_what_to_do(api):
    r = httpx.post(f"{api}/api/deployments/plan", headers=AUTH, json={"recipe": "nope", "model": "x"})
    assert r.status_code == 404 and "Known recipes" in r.json()["error"]["hint"]
    r = httpx.post(f"{api}/api/deployments/plan", headers=AUTH, json={"recipe": "demo", "model": "a;b"})
    assert r.status_code in (400, 422) and r.json()["error"]["hint"]
    r = httpx.post(f"{api}/api/deployments/plan", headers=AUTH, json={"recipe": "demo", "model": "demo-tiny",
                                                                      "gpus": ["0"]})
    assert r.status_code in (400, 422) and "CPU only" in r.json()["error"]["message"]


@pytest.mark.slow
def test_plan_is_what_a_launch_creates(api, engine, demo_image):
    body = {"recipe": "demo", "model": "demo-tiny", "served_name": f"t{RUN_ID}-plan-same", "port": free_port(),
            "env": {"DEMO_TOKEN_DELAY": "0.01"}}
    p = plan(api, **body)
    assert not p["host_port_automatic"] and p["host_port"] == body["port"]
    r = httpx.post(f"{api}/api/deployments", headers=AUTH, json=body, timeout=30)
    assert r.status_code == 202, r.text
    try:
        wait_ready(api, TOKEN, p["id"])
        attrs = engine.client.api.inspect_container(p["name"])
        assert attrs["Config"]["Cmd"] == p["command"] and attrs["Config"]["Image"] == p["image"]
        # Docker adds the image's own labels (modeldeck.build on the demo image); the rest are the plan's.
        assert {k: v for k, v in attrs["Config"]["Labels"].items() if k in p["labels"]} == p["labels"]
        assert attrs["HostConfig"]["Init"] is True
        assert attrs["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1",
                                                                     "HostPort": str(body["port"])}]}
        assert "DEMO_TOKEN_DELAY=0.01" in attrs["Config"]["Env"]
    finally:
        httpx.delete(f"{api}/api/deployments/{p['id']}", headers=AUTH, timeout=60)


@pytest.mark.slow
def test_docker_run_line_recreates_the_container(api, engine, demo_image):
    if shutil.which("docker") is None:
        skip_or_fail("the docker command line is needed to run the planned `docker run`")
    p = plan(api, recipe="demo", model="demo-tiny", served_name=f"t{RUN_ID}-plan-run", port=free_port())
    env = {**os.environ, "DOCKER_HOST": os.environ.get("DOCKER_HOST") or engine.endpoint}  # the engine in use
    try:
        run = subprocess.run(["bash", "-c", p["docker_run"]], capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, run.stderr
        attrs = engine.client.api.inspect_container(p["name"])
        assert {k: v for k, v in attrs["Config"]["Labels"].items() if k in p["labels"]} == p["labels"]
        assert attrs["Config"]["Cmd"] == p["command"]
        assert attrs["HostConfig"]["Init"] is True
        assert attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
        # The backend takes the container for its own (it carries the labels) and finds it ready.
        d = wait_ready(api, TOKEN, p["id"], timeout=60)
        assert d["host_port"] == p["host_port"] and d["served_name"] == f"t{RUN_ID}-plan-run"
    finally:
        httpx.delete(f"{api}/api/deployments/{p['id']}", headers=AUTH, timeout=60)

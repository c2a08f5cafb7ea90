"""Launch planning: validation of requests and the container spec a recipe turns into."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from backend.catalog import load_catalog
from backend.errors import InvalidLaunch
from backend.launch_plan import LaunchRequest, deployment_id_for, home_id, plan
from backend.settings import Settings


@pytest.fixture()
def catalog():
    return load_catalog(Settings().catalog_dir)


def make(catalog, settings, **kw):
    req = LaunchRequest(**{"recipe": "demo", "model": "demo-tiny", **kw})
    return plan(catalog.get(req.recipe), req, settings, image="img:1", host_port=40000, gpu_runtime=False)


@pytest.mark.parametrize("model", ["../etc/passwd", "org/../../x", "a b", "a;rm -rf /", "$(id)", "a|b",
                                   "`x`", "x\ny", "a//b", ""])
def test_bad_model_ids_are_refused(catalog, settings, model):
    with pytest.raises((InvalidLaunch, ValidationError)):
        make(catalog, settings, model=model)


def test_host_paths_only_inside_model_folders(catalog, tmp_path):
    allowed = tmp_path / "models"
    (allowed / "tiny").mkdir(parents=True)
    (allowed / "tiny" / "model.gguf").write_bytes(b"x")
    settings = Settings(home=tmp_path, model_dirs=[allowed])
    spec = make(catalog, settings, model=str(allowed / "tiny" / "model.gguf"))
    assert "/models/tiny/model.gguf" in spec.command
    mount = next(m for m in spec.mounts if m.target == "/models")
    assert mount.kind == "bind" and mount.read_only and mount.source == str(allowed.resolve())
    for bad in ["/etc/passwd", str(allowed / ".." / "secret"), str(tmp_path)]:
        with pytest.raises(InvalidLaunch):
            make(catalog, settings, model=bad)


def test_spec_for_demo(catalog, settings):
    spec = make(catalog, settings, served_name="my-demo", args=["--seed-extra"])
    assert spec.name == "modeldeck-my-demo"
    assert spec.host_ip == "127.0.0.1" and spec.host_port == 40000 and spec.internal_port == 8000
    assert spec.command == ("--port", "8000", "--model", "demo-tiny", "--served-name", "my-demo", "--seed-extra")
    assert spec.labels["modeldeck.managed"] == "true"
    assert spec.labels["modeldeck.served_name"] == "my-demo"
    assert spec.labels["modeldeck.test-run"], "settings.extra_labels reach the container"
    assert spec.gpu_ids == ()


def test_default_served_name_and_ids():
    assert deployment_id_for("Qwen/Qwen2.5-0.5B-Instruct") == "qwen-qwen2.5-0.5b-instruct"
    assert deployment_id_for("///") == "model"


def test_config_hash_is_stable_and_sensitive(catalog, settings):
    a = make(catalog, settings, served_name="x")
    b = make(catalog, settings, served_name="x")
    c = make(catalog, settings, served_name="x", args=["--other"])
    assert a.labels["modeldeck.config_hash"] == b.labels["modeldeck.config_hash"]
    assert a.labels["modeldeck.config_hash"] != c.labels["modeldeck.config_hash"]


def test_secrets_given_at_launch_stay_out_of_labels(catalog, settings):
    spec = make(catalog, settings, env={"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k1", "PLAIN": "v"})
    assert spec.secret_values == {"HF_TOKEN": "hf_supersecret", "MY_API_KEY": "k1"}
    assert "HF_TOKEN" in spec.secret_env and spec.environment["PLAIN"] == "v"
    assert "hf_supersecret" not in repr(spec) and "hf_supersecret" not in str(spec.labels)
    assert "HF_TOKEN" not in spec.environment


def test_cpu_only_recipe_refuses_gpus(catalog, settings):
    with pytest.raises(InvalidLaunch, match="CPU only"):
        make(catalog, settings, gpus=["0"])


@pytest.mark.parametrize("field,value", [("gpus", ["0; rm"]), ("gpus", ["all", "0"]), ("env", {"LD_PRELOAD": "x"}),
                                         ("env", {"1BAD": "x"}), ("port", 80), ("args", ["a\nb"]),
                                         ("privileged", True)])
def test_request_validation(field, value):
    with pytest.raises(ValidationError):
        LaunchRequest(recipe="demo", model="demo-tiny", **{field: value})


def gpu_plan(catalog, settings, recipe: str, gpus, machine_gpus=None, **kw):
    req = LaunchRequest(recipe=recipe, model="Qwen/Qwen2.5-0.5B-Instruct", gpus=gpus, **kw)
    return plan(catalog.get(recipe), req, settings, image="img:1", host_port=40000, gpu_runtime=True,
                machine_gpus=machine_gpus)


def test_tgi_shards_over_all_gpus_only_when_it_can_count_them(catalog, settings):
    """'All GPUs' becomes the machine's count; unknown, TGI is not left to guess (it would take every device)."""
    assert gpu_plan(catalog, settings, "tgi", None, machine_gpus=4).command[-2:] == ("--num-shard", "4")
    assert gpu_plan(catalog, settings, "tgi", ["all"], machine_gpus=2).command[-2:] == ("--num-shard", "2")
    with pytest.raises(InvalidLaunch, match="cannot count") as err:
        gpu_plan(catalog, settings, "tgi", None, machine_gpus=None)
    assert "Pick the GPUs explicitly" in err.value.hint
    # Recipes that do not ask for the count launch with "all" as before.
    assert gpu_plan(catalog, settings, "vllm", None, machine_gpus=None).gpu_ids == ("all",)


def test_model_check_and_limits_reach_the_spec(catalog, settings):
    ollama = plan(catalog.get("ollama"), LaunchRequest(recipe="ollama", model="qwen2.5:0.5b", gpus=[]), settings,
                  image="img:1", host_port=40000, gpu_runtime=False)
    assert json.loads(ollama.labels["modeldeck.model_check"]) == {
        "method": "POST", "path": "/api/show", "body": {"model": "qwen2.5:0.5b"}}
    sglang = gpu_plan(catalog, settings, "sglang", ["0"])
    assert sglang.ulimits == (("memlock", -1), ("stack", 67108864)) and sglang.shm_size == "32g"
    assert sglang.labels["modeldeck.model_check"] == ""


# -- llama.cpp: how the model is passed, and no fixed GPU layer count ----------------------------


def llama_plan(catalog, settings, model: str, gpus=None, **kw):
    req = LaunchRequest(recipe="llama-cpp", model=model, gpus=gpus, **kw)
    return plan(catalog.get("llama-cpp"), req, settings, image="img:1", host_port=40000, gpu_runtime=True)


def test_llama_cpp_loads_a_local_file_with_m_and_a_hub_repo_with_hf(catalog, tmp_path):
    """llama-server's -hf takes only <user>/<model>[:quant] (common/arg.cpp); a file is -m (--model)."""
    folder = tmp_path / "models"
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "x.gguf").write_bytes(b"GGUF")
    settings = Settings(home=tmp_path, model_dirs=[folder])
    local = llama_plan(catalog, settings, str(folder / "tiny" / "x.gguf"), gpus=[])
    assert local.command[:2] == ("-m", "/models/tiny/x.gguf")
    assert "-hf" not in local.command
    assert local.command[2:] == ("--alias", "x", "--host", "0.0.0.0", "--port", "8080")
    hub = llama_plan(catalog, settings, "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", gpus=[])
    assert hub.command[:2] == ("-hf", "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M")
    assert "-m" not in hub.command and not [m for m in hub.mounts if m.target == "/models"]


def test_llama_cpp_keeps_upstreams_automatic_gpu_fit(catalog, settings):
    """-ngl defaults to "auto" with --fit on (common/common.h); a fixed 999 would defeat the fit."""
    on_gpu = llama_plan(catalog, settings, "org/repo-GGUF", gpus=["0"])
    assert on_gpu.gpu_ids == ("0",)
    assert not {"-ngl", "--gpu-layers", "--n-gpu-layers", "999"} & set(on_gpu.command)
    chosen = llama_plan(catalog, settings, "org/repo-GGUF", gpus=["0"], args=["-ngl", "20"])
    assert chosen.command[-2:] == ("-ngl", "20") and chosen.command.count("-ngl") == 1


def test_any_recipe_can_say_how_a_local_path_is_passed(tmp_path):
    """{model_args} is general: local_model_args for paths, model_args for ids (and for paths when alone)."""
    (tmp_path / "r.toml").write_text(
        'title = "R"\n[image]\nref = "x/r:1"\n[server]\nport = 9000\n'
        'command = ["serve", "{model_args}", "--port", "{port}"]\n'
        'model_args = ["--repo", "{model}"]\nlocal_model_args = ["--path", "{model}", "--offline"]\n'
        '[gpu]\nneed = "none"\n')
    (tmp_path / "s.toml").write_text(
        'title = "S"\n[image]\nref = "x/s:1"\n[server]\nport = 9000\n'
        'command = ["{model_args}"]\nmodel_args = ["--model", "{model}"]\n[gpu]\nneed = "none"\n')
    cat = load_catalog(tmp_path)
    assert cat.errors == {}
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "m.bin").write_bytes(b"x")
    settings = Settings(home=tmp_path, model_dirs=[folder])

    def cmd(recipe: str, model: str) -> tuple[str, ...]:
        return plan(cat.get(recipe), LaunchRequest(recipe=recipe, model=model), settings, image="i:1",
                    host_port=40000, gpu_runtime=False).command

    assert cmd("r", "org/name") == ("serve", "--repo", "org/name", "--port", "9000")
    assert cmd("r", str(folder / "m.bin")) == ("serve", "--path", "/models/m.bin", "--offline", "--port", "9000")
    assert cmd("s", str(folder / "m.bin")) == ("--model", "/models/m.bin")


def test_image_source_is_one_of_three(catalog):
    assert LaunchRequest(recipe="llama-cpp", model="a/b").image_source == "auto"
    assert LaunchRequest(recipe="llama-cpp", model="a/b", image_source="local").image_source == "local"
    with pytest.raises(ValidationError):
        LaunchRequest(recipe="llama-cpp", model="a/b", image_source="docker.io/evil")


def test_containers_say_which_home_launched_them(catalog, settings, tmp_path):
    """A backend finishes only its own home's interrupted launches; another home's may be running."""
    mine = make(catalog, settings).labels["modeldeck.launched_from"]
    other = make(catalog, Settings(home=tmp_path / "elsewhere")).labels["modeldeck.launched_from"]
    assert mine == home_id(settings) and mine != other and len(mine) == 16

"""The Kubernetes export: valid against the API's schema, loaded by the official client, saying what the container does.

No cluster can run here, so every document is checked offline twice: by ``kubernetes_validate``
against Kubernetes 1.37's OpenAPI schema in strict mode (an unknown or misplaced field fails), and
by deserialising it into the official ``kubernetes`` client's models (V1Deployment, V1Service,
V1PersistentVolumeClaim), whose fields the assertions then read. The demo is launched for real
and exported through the API; the other recipes (whose images need a GPU and a registry) are
exported from their launch plans, which are exactly what a launch would create.
"""

from __future__ import annotations

import json
import math

import httpx
import kubernetes_validate
import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from kubernetes import client as k8s

from backend.app import create_app
from backend.catalog import load_catalog
from backend.kubernetes_export import NON_ROOT_USER, InvalidExport, check_options, render_kubernetes
from backend.launch_plan import LaunchRequest, plan
from backend.settings import Settings
from backend.spec import ContainerSpec
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import demo_body, launch, launch_ready
from tests.support.live_server import free_port, serve
from tests.support.waiting import wait_until

K8S_VERSION = "1.37.0"
TOKEN = "k8s-export-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "sk-this-secret-value-must-never-be-exported"
CATALOG = load_catalog(Settings().catalog_dir)
MODELS = {"Deployment": "V1Deployment", "Service": "V1Service",
          "PersistentVolumeClaim": "V1PersistentVolumeClaim"}


def load(text: str) -> dict[str, list]:
    """Every document validated (strict) and deserialised into the client's model for its kind."""
    api = k8s.ApiClient()
    out: dict[str, list] = {}
    for doc in yaml.safe_load_all(text):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError
        obj = api.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
        assert api.sanitize_for_serialization(obj) == doc, "the client's model holds every field that was written"
        out.setdefault(doc["kind"], []).append(obj)
    return out


def container_of(objs: dict[str, list]) -> k8s.V1Container:
    (dep,) = objs["Deployment"]
    (container,) = dep.spec.template.spec.containers
    return container


def plan_for(recipe: str, settings: Settings, **kw):
    r = CATALOG.get(recipe)
    req = LaunchRequest(**{"recipe": recipe, "model": r.defaults.model or "demo-tiny", **kw})
    return plan(r, req, settings, image=r.image_for(bool(req.gpus)) or "modeldeck/demo:test", host_port=0,
                gpu_runtime=True, machine_gpus=4), r


# -- every shipped recipe, from its launch plan -------------------------------------------------------

CASES = [(name, gpus) for name, r in sorted(CATALOG.recipes.items())
         for gpus in ([[]] if r.gpu.need.value == "none" else
                      [["0", "2"], ["all"]] + ([[]] if r.gpu.need.value == "optional" else []))]


def test_every_shipped_recipe_is_covered():
    assert {name for name, _ in CASES} == set(CATALOG.recipes) and len(CATALOG.recipes) >= 6


@pytest.mark.parametrize(("recipe", "gpus"), CASES, ids=[f"{n}-{'+'.join(g) or 'cpu'}" for n, g in CASES])
def test_recipe_exports_valid_manifests(recipe, gpus, settings):
    spec, r = plan_for(recipe, settings, gpus=gpus, env={"HF_TOKEN": SECRET, "PLAIN_SETTING": "0.5"})
    text = render_kubernetes(spec, r, namespace="models", storage_class="fast-ssd", cache_size="200Gi")
    assert SECRET not in text
    objs = load(text)
    assert sorted(objs) == sorted(["Deployment", "Service"] + (["PersistentVolumeClaim"] if r.caches else []))
    (dep,), (svc,) = objs["Deployment"], objs["Service"]
    c = container_of(objs)
    pod = dep.spec.template.spec

    assert dep.spec.replicas == 1 and dep.spec.strategy.type == "Recreate"
    assert dep.metadata.namespace == svc.metadata.namespace == "models"
    labels = dep.metadata.labels
    assert labels["app.kubernetes.io/name"] == recipe and labels["app.kubernetes.io/managed-by"] == "modeldeck"
    assert labels["app.kubernetes.io/instance"] == dep.metadata.name == svc.metadata.name
    assert dep.spec.selector.match_labels.items() <= dep.spec.template.metadata.labels.items()
    assert svc.spec.selector == dep.spec.selector.match_labels
    assert dep.metadata.annotations["modeldeck/served-name"] == spec.labels["modeldeck.served_name"]

    # Exactly the container ModelDeck runs.
    assert c.image == spec.image
    assert c.args == list(spec.command)
    assert c.command == (list(spec.entrypoint) if spec.entrypoint is not None else None)
    assert c.ports[0].container_port == r.server.port and c.ports[0].name == "http"
    assert svc.spec.type == "ClusterIP" and svc.spec.ports[0].port == r.server.port
    assert svc.spec.ports[0].target_port == "http"

    # Probes from the recipe's health path, the startup probe allowing its whole start-up time.
    for probe in (c.startup_probe, c.readiness_probe, c.liveness_probe):
        assert probe.http_get.path == r.readiness.health_path and probe.http_get.port == "http"
    assert c.startup_probe.period_seconds * c.startup_probe.failure_threshold >= r.server.startup_timeout
    assert c.startup_probe.failure_threshold == math.ceil(r.server.startup_timeout / c.startup_probe.period_seconds)

    # GPUs: the count picked; "all" becomes 1, and the file says so.
    limits = (c.resources.limits or {}) if c.resources else {}
    expected_gpus = {(): None, ("all",): "1"}.get(tuple(gpus), str(len(gpus)))
    assert limits.get("nvidia.com/gpu") == expected_gpus
    if gpus == ["all"]:
        assert "# nvidia.com/gpu: 1 - the deployment used every GPU" in text

    # Secrets by reference only; plain values as they are.
    env = {e.name: e for e in c.env or []}
    if "HF_TOKEN" in spec.secret_env:
        ref = env["HF_TOKEN"].value_from.secret_key_ref
        assert env["HF_TOKEN"].value is None
        assert ref.name == f"modeldeck-{spec.labels['modeldeck.id']}" and ref.key == "HF_TOKEN"
        assert f"kubectl create secret generic {ref.name} -n models --from-literal=HF_TOKEN=..." in text
    assert env["PLAIN_SETTING"].value == "0.5", "quoted: a string, never the number 0.5"

    # One claim per model cache, mounted where the recipe keeps it.
    claims = {p.metadata.name: p for p in objs.get("PersistentVolumeClaim", [])}
    assert len(claims) == len(r.caches)
    mounts = {m.mount_path: m for m in c.volume_mounts or []}
    volumes = {v.name: v for v in pod.volumes or []}
    for cache in r.caches:
        vol = volumes[mounts[cache.target].name]
        claim = claims[vol.persistent_volume_claim.claim_name]
        assert claim.spec.access_modes == ["ReadWriteOnce"] and claim.spec.storage_class_name == "fast-ssd"
        assert claim.spec.resources.requests == {"storage": "200Gi"}
    if r.resources.shm_size:
        shm = volumes[mounts["/dev/shm"].name].empty_dir
        assert shm.medium == "Memory" and shm.size_limit == r.resources.shm_size.upper() + "i"

    # No privileges: non-root where the image allows it, and nothing to escalate to anywhere.
    sc = c.security_context
    assert sc.allow_privilege_escalation is False and sc.privileged is False
    assert sc.capabilities.drop == ["ALL"] and not sc.capabilities.add
    assert pod.security_context.seccomp_profile.type == "RuntimeDefault"
    assert sc.run_as_non_root is (recipe in NON_ROOT_USER)
    if recipe not in NON_ROOT_USER:
        assert "runAsNonRoot: false - the" in text and "runs as root upstream" in text
    assert pod.automount_service_account_token is False and pod.share_process_namespace is True


def test_ollama_says_to_pull_its_model(settings):
    spec, r = plan_for("ollama", settings, gpus=[])
    text = render_kubernetes(spec, r)
    assert ("curl -X POST http://127.0.0.1:11434/api/pull -H 'Content-Type: application/json' "
            "-d '{\"model\": \"qwen2.5:0.5b\", \"stream\": false}'") in text
    load(text)


def test_a_model_folder_becomes_a_read_only_claim(tmp_path, demo_base_image):
    folder = tmp_path / "models"
    (folder / "tiny").mkdir(parents=True)
    (folder / "tiny" / "m.gguf").write_bytes(b"GGUF")
    settings = Settings(home=tmp_path / "home", model_dirs=[folder], demo_base_image=demo_base_image)
    spec, r = plan_for("llama-cpp", settings, model=str(folder / "tiny" / "m.gguf"), gpus=[])
    objs = load(render_kubernetes(spec, r))
    c = container_of(objs)
    models = next(m for m in c.volume_mounts if m.mount_path == "/models")
    assert models.read_only is True
    vol = next(v for v in objs["Deployment"][0].spec.template.spec.volumes if v.name == models.name)
    assert vol.persistent_volume_claim.read_only is True
    assert len(objs["PersistentVolumeClaim"]) == 2  # the models and the Hugging Face cache
    assert c.args[:2] == ["-m", "/models/tiny/m.gguf"]


def test_long_and_dotted_ids_become_valid_names(settings):
    served = "Org/" + "a.b_" * 30
    spec, r = plan_for("demo", settings, served_name=served)
    objs = load(render_kubernetes(spec, r))
    name = objs["Deployment"][0].metadata.name
    assert len(name) <= 63 and name.startswith("modeldeck-") and "." not in name and "_" not in name


@pytest.mark.parametrize(("option", "value"), [
    ("namespace", ""), ("namespace", "Upper"), ("namespace", "a_b"), ("namespace", "-x"), ("namespace", "x" * 64),
    ("namespace", "a.b"), ("storage_class", "Fast SSD"), ("storage_class", "-x"), ("cache_size", "50GB"),
    ("cache_size", "0"), ("cache_size", "-1Gi"), ("cache_size", "lots"), ("cache_size", ""),
])
def test_bad_options_are_refused_with_what_to_do(option, value):
    values = {"namespace": "default", "storage_class": None, "cache_size": "50Gi", option: value}
    with pytest.raises(InvalidExport) as info:
        check_options(**values)
    assert option in info.value.message and info.value.hint and info.value.status == 422


@hypothesis_settings(max_examples=60, deadline=None)
@given(text=st.text(), dep_id=st.text(min_size=1, max_size=120))
def test_any_string_round_trips_and_stays_valid(text, dep_id):
    """Whatever a command, an environment value, a model or an id holds, the file stays valid and says it exactly."""
    spec = ContainerSpec(name="modeldeck-x", image="example.org/img:1", command=("--x", text), internal_port=8000,
                         host_port=0, environment={"V": text},
                         labels={"modeldeck.id": dep_id, "modeldeck.model": text, "modeldeck.served_name": text,
                                 "modeldeck.recipe": "demo"})
    objs = load(render_kubernetes(spec, CATALOG.get("demo")))
    c = container_of(objs)
    assert c.args == ["--x", text] and c.env[0].value == text
    assert objs["Deployment"][0].metadata.annotations["modeldeck/model"] == text


def test_good_options_pass():
    check_options("my-models", "fast-ssd.example.com", "1.5Ti")
    check_options("default", None, "500M")


# -- the demo, launched for real and exported through the API -----------------------------------------

@pytest.fixture(scope="module")
def api(engine, demo_base_image, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("k8s-home"), token=TOKEN, demo_base_image=demo_base_image,
                        extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


@pytest.fixture(scope="module")
def demo(api, engine, demo_image):
    body = demo_body(f"t{RUN_ID}-k8s", env={"MY_API_KEY": SECRET, "PLAIN": "x"}, mem_limit="256m")
    dep = launch_ready(api, TOKEN, body)
    yield dep
    httpx.delete(f"{api}/api/deployments/{dep['id']}", headers=AUTH, timeout=60)


def export(api: str, dep_id: str, **params) -> httpx.Response:
    return httpx.get(f"{api}/api/deployments/{dep_id}/kubernetes", headers=AUTH, params=params, timeout=30)


@pytest.mark.slow
def test_launched_demo_exports_what_runs(api, engine, demo):
    r = export(api, demo["id"], namespace="lab", storage_class="standard", cache_size="10Gi")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/yaml")
    assert f'filename="{demo["id"]}-kubernetes.yaml"' in r.headers["content-disposition"]
    assert SECRET not in r.text
    objs = load(r.text)
    assert sorted(objs) == ["Deployment", "Service"], "the demo keeps no model cache"
    c = container_of(objs)
    attrs = engine.client.api.inspect_container(demo["container_id"])
    assert c.args == attrs["Config"]["Cmd"] and c.image == attrs["Config"]["Image"]
    assert c.command is None, "the demo's own entrypoint, as under Docker"
    env = {e.name: e for e in c.env}
    assert env["PLAIN"].value == "x"
    ref = env["MY_API_KEY"].value_from.secret_key_ref
    assert (ref.name, ref.key) == (f"modeldeck-{demo['id']}", "MY_API_KEY")
    assert f"kubectl create secret generic modeldeck-{demo['id']} -n lab --from-literal=MY_API_KEY=..." in r.text
    assert c.resources.limits == {"memory": str(256 * 1024 * 1024)} == c.resources.requests
    assert c.readiness_probe.http_get.path == "/health" and c.startup_probe.failure_threshold == 6  # 60 s
    assert c.security_context.run_as_non_root is True
    pod_sc = objs["Deployment"][0].spec.template.spec.security_context
    assert pod_sc.run_as_user == 65534 and pod_sc.run_as_non_root is True
    assert objs["Service"][0].spec.ports[0].port == 8000
    assert objs["Deployment"][0].metadata.annotations["modeldeck/served-name"] == f"t{RUN_ID}-k8s"


@pytest.mark.slow
def test_demo_runs_with_the_exported_security_context(api, engine, demo):
    """What the manifest asks of the image holds: the demo serves as nobody, every capability dropped."""
    objs = load(export(api, demo["id"]).text)
    c = container_of(objs)
    pod_sc = objs["Deployment"][0].spec.template.spec.security_context
    port = free_port()
    name = f"t{RUN_ID}-k8s-nonroot"
    container = engine.client.containers.run(
        c.image, c.args, name=name, detach=True, labels={RUN_LABEL: RUN_ID},
        user=f"{pod_sc.run_as_user}:{pod_sc.run_as_group}", cap_drop=c.security_context.capabilities.drop,
        security_opt=["no-new-privileges:true"], ports={f"{c.ports[0].container_port}/tcp": ("127.0.0.1", port)})
    try:
        def healthy():
            container.reload()
            assert container.status in ("created", "running"), container.logs().decode()[-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}{c.readiness_probe.http_get.path}", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, 60, interval=0.2, what="the demo running as non-root")
        assert container.exec_run(["id", "-u"]).output.decode().strip() == "65534"
    finally:
        container.remove(force=True)


@pytest.mark.slow
@pytest.mark.parametrize(("params", "field"), [
    ({"namespace": "Not_Valid"}, "namespace"), ({"storage_class": "bad class"}, "storage_class"),
    ({"cache_size": "fifty"}, "cache_size"), ({"cache_size": "0Gi"}, "cache_size"),
    ({"namespace": "x" * 64}, "namespace"),
])
def test_bad_query_values_are_422(api, demo, params, field):
    r = export(api, demo["id"], **params)
    assert r.status_code == 422, r.text
    assert field in json.dumps(r.json())


def test_unknown_deployment_is_404(api):
    r = export(api, f"t{RUN_ID}-no-such-deployment")
    assert r.status_code == 404 and r.json()["error"]["code"] == "deployment_not_found"



@pytest.mark.slow
def test_launched_llamacpp_exports_its_caches(engine, gguf_models, demo_base_image, llamacpp_image, tmp_path):
    """A runtime with a model cache and a model folder, read back from Docker (engine.spec_of), not from a plan."""
    settings = Settings(home=tmp_path / "home", token=TOKEN, model_dirs=[gguf_models],
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        dep_id, events = launch(url, TOKEN, {"recipe": "llama-cpp", "served_name": f"t{RUN_ID}-k8s-llama",
                                             "image_source": "local", "env": {"HF_TOKEN": SECRET},
                                             "model": str(gguf_models / "tiny" / "tiny-llama.gguf")}, timeout=180)
        try:
            assert events[-1]["phase"] == "ready", events[-5:]
            r = export(url, dep_id, cache_size="20Gi")
            assert r.status_code == 200, r.text
            assert SECRET not in r.text
            objs = load(r.text)
            c = container_of(objs)
            attrs = engine.client.api.inspect_container(f"modeldeck-{dep_id}")
            assert c.args == attrs["Config"]["Cmd"] and c.image == llamacpp_image
            assert f"The image {llamacpp_image} was built on this machine" in r.text
            claims = {p.metadata.name: p for p in objs["PersistentVolumeClaim"]}
            volumes = {v.name: v.persistent_volume_claim for v in objs["Deployment"][0].spec.template.spec.volumes}
            by_path = {m.mount_path: (m, claims[volumes[m.name].claim_name]) for m in c.volume_mounts}
            assert set(by_path) == {m["Destination"] for m in attrs["Mounts"]} == {"/models", "/root/.cache/huggingface"}
            assert by_path["/models"][0].read_only is True and not by_path["/root/.cache/huggingface"][0].read_only
            assert all(p.spec.resources.requests == {"storage": "20Gi"} for p in claims.values())
            assert c.liveness_probe.http_get.path == "/health" and c.ports[0].container_port == 8080
            assert c.startup_probe.failure_threshold == 120  # the recipe's 1200 s
            assert c.security_context.run_as_non_root is False and c.security_context.capabilities.drop == ["ALL"]
            env = {e.name: e for e in c.env}
            assert env["HF_TOKEN"].value_from.secret_key_ref.key == "HF_TOKEN"
            assert c.resources is None, "no GPU, no memory limit: nothing to limit"
        finally:
            httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)

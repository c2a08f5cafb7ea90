"""Export a deployment's ContainerSpec as Kubernetes manifests: Deployment, Service and a claim per model cache.

The compose export (backend/compose.py) recreates the container on this machine; this one moves
the same server to a cluster. Both start from the ContainerSpec the engine reads back
(``engine.spec_of``) or a launch plan, so the image, the entrypoint and the arguments are exactly
the ones ModelDeck runs. What a cluster cannot express the way Docker does (``--init``, ulimits,
a cache on this machine's disk, a locally built image, the calls launch makes after start) is said
in comments in the YAML rather than dropped silently. Nothing here talks to a cluster: applying the
manifests is the person's ``kubectl apply`` (docs/kubernetes.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from backend.catalog import Recipe, ServerSpec
from backend.compose import Quoted, dump_yaml
from backend.envnames import is_env_name
from backend.errors import ModelDeckError
from backend.labels import DeploymentLabels
from backend.launch_plan import fill_placeholders
from backend.spec import ContainerSpec, Mount

#: Kubernetes' DNS-1123 label (namespaces, container and volume names) and subdomain (claims, Secrets, storage
#: classes), and its resource quantity in the forms a size is written (apimachinery's resource.Quantity).
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUANTITY = re.compile(r"([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]")

#: Probes. The startup probe allows the recipe's whole start-up time (first starts download weights);
#: after it, readiness is checked often and liveness gently, so a slow answer under load is not a restart.
PROBE_PERIOD_S = 10
READINESS = {"periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5, "failureThreshold": 3}
LIVENESS = {"periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3}

#: The user a recipe's image can run its server as, for the images that can run as non-root. Every other
#: shipped image runs as root upstream and keeps its files under /root, so ``runAsNonRoot: false`` is
#: written for them (with privilege escalation off, every capability dropped and the runtime's seccomp
#: profile still on):
#: - vllm/vllm-openai: no USER in docker/Dockerfile; its documented cache is /root/.cache/huggingface.
#: - text-generation-inference: runs as root; since 3.x its Python lives under /root (huggingface/
#:   text-generation-inference issues 3082 "Running container rootless does not work anymore" and 3225).
#: - lmsysorg/sglang: no USER; the docs mount the cache at /root/.cache/huggingface.
#: - ollama/ollama: no USER; models in /root/.ollama.
#: - ghcr.io/ggml-org/llama.cpp:server(-cuda) and the local build (containers/llama-cpp/Dockerfile): no USER.
#: The demo (containers/demo/Dockerfile) only reads /app (world-readable, no bytecode written) and needs no
#: cache, so it runs as ``nobody``: tests/backend/test_kubernetes_export.py starts it that way for real.
NON_ROOT_USER: dict[str, int] = {"demo": 65534}

_DOCKER_SIZE = re.compile(r"([0-9]+)([bkmg]?)")


class InvalidExport(ModelDeckError):
    """An export option is not one Kubernetes accepts (the message names it and what is allowed)."""

    status = 422
    code = "invalid_export"


def _dns_label(text: str, limit: int = 63) -> str:
    """``text`` made a DNS-1035 label (what Service names must be): lower case, '-', a letter first.

    Names that had to be shortened end in a hash of the original, so two long ids stay distinct.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = f"m-{name}".rstrip("-")
    if len(name) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = f"{name[:limit - 9].rstrip('-')}-{digest}"
    return name


def _label_value(text: str) -> str:
    """A valid label value (63 characters, alphanumerics at both ends) for ``text``."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63].strip("-._")
    return value


def docker_size_to_quantity(size: str) -> str:
    """Docker's ``--shm-size`` form ("8g", "1024m", "65536k", "512") as a Kubernetes quantity.

    Docker's suffixes are binary (g = GiB), so they become Gi/Mi/Ki.
    """
    m = _DOCKER_SIZE.fullmatch(size.strip().lower())
    if not m:
        raise ValueError(f"{size!r} is not a Docker size")
    return m.group(1) + {"": "", "b": "", "k": "Ki", "m": "Mi", "g": "Gi"}[m.group(2)]


def check_options(namespace: str, storage_class: str | None, cache_size: str) -> None:
    """Refuse options Kubernetes would refuse at ``kubectl apply`` — here, with what to type instead.

    Raises:
        InvalidExport: naming the option, the value and the rule.
    """
    if not _DNS_LABEL.fullmatch(namespace):
        raise InvalidExport(f"namespace {namespace!r} is not a Kubernetes namespace name.",
                            hint="Use at most 63 lower-case letters, digits and '-', starting and ending with a "
                                 "letter or digit, e.g. 'default' or 'models'.",
                            details={"field": "namespace"})
    if storage_class and not _DNS_SUBDOMAIN.fullmatch(storage_class):
        raise InvalidExport(f"storage_class {storage_class!r} is not a StorageClass name.",
                            hint="Use the name `kubectl get storageclass` lists (lower-case letters, digits, "
                                 "'-' and '.'), or leave it empty for the cluster's default class.",
                            details={"field": "storage_class"})
    m = _QUANTITY.fullmatch(cache_size)
    if not m or float(m.group(1)) <= 0:
        raise InvalidExport(f"cache_size {cache_size!r} is not a Kubernetes storage size.",
                            hint="Give a positive quantity such as '50Gi', '500Gi' or '1Ti' (Ki, Mi, Gi, Ti, Pi; "
                                 "or k, M, G, T, P for powers of ten).",
                            details={"field": "cache_size"})


def _printable(text: str) -> str:
    """``text`` in printable ASCII, anything else backslash-escaped (a line break would end a comment and start
    YAML; a control character is not allowed in a YAML stream at all)."""
    return "".join(ch if " " <= ch <= "~" else ascii(ch)[1:-1] for ch in text)


def _comment(lines: list[str]) -> str:
    return "".join("# " + _printable(line) + "\n" for line in lines)


def _volume_name(kind: str, used: set[str]) -> str:
    name = _dns_label(kind, 50)
    base, n = name, 2
    while name in used:
        name, n = f"{base}-{n}", n + 1
    used.add(name)
    return name


def _cache_kind(mount: Mount, recipe: Recipe | None) -> str:
    """What a mount holds: the recipe's cache kind for its target, "models" for a read-only model folder."""
    for cache in recipe.caches if recipe is not None else []:
        if cache.target == mount.target:
            return f"{cache.kind}-cache"
    if mount.read_only:
        return "models"
    return mount.target.rstrip("/").rsplit("/", 1)[-1] or "data"


def render_kubernetes(spec: ContainerSpec, recipe: Recipe | None = None, *, namespace: str = "default",
                      storage_class: str | None = None, cache_size: str = "50Gi") -> str:
    """Render ``spec`` as multi-document Kubernetes YAML: a Deployment, a Service and a claim per cache.

    Args:
        spec: the container to export (read back from Docker, or a launch plan).
        recipe: the recipe it was launched from, for the start-up time, cache kinds and the calls
            launch makes once the server answers; None when the catalog no longer has it (defaults then).
        namespace: the namespace every object is written into.
        storage_class: the StorageClass of the claims; None or "" for the cluster's default.
        cache_size: the size each claim requests (a Kubernetes quantity).

    Returns:
        YAML text: documents separated by ``---``, every string double-quoted (so "0.02" or "yes"
        stay strings), comments saying what Kubernetes does differently and what to do first.
        Secrets appear only as ``secretKeyRef`` to a Secret the export does not contain.

    Raises:
        InvalidExport: an option Kubernetes would refuse (see ``check_options``).
        ValueError: a secret's name is not an environment variable name.
    """
    check_options(namespace, storage_class, cache_size)
    for name in spec.secret_env:
        if not is_env_name(name):
            raise ValueError(f"secret name {name!r} is not an environment variable name")
    meta = DeploymentLabels.decode(spec.labels, default_id=spec.name.removeprefix("modeldeck-"))
    dep_id = meta.id or "model"
    base = _dns_label(f"modeldeck-{dep_id}")
    secret_name = f"modeldeck-{dep_id}" if _DNS_SUBDOMAIN.fullmatch(f"modeldeck-{dep_id}") else base
    recipe_name = meta.recipe or (recipe.name if recipe is not None else "")
    labels = {"app.kubernetes.io/name": Quoted(_label_value(recipe_name) or "model-server"),
              "app.kubernetes.io/instance": Quoted(base),
              "app.kubernetes.io/component": Quoted("model-server"),
              "app.kubernetes.io/managed-by": Quoted("modeldeck")}
    selector = {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    annotations = {"modeldeck/deployment-id": Quoted(dep_id), "modeldeck/recipe": Quoted(recipe_name),
                   "modeldeck/model": Quoted(meta.model), "modeldeck/served-name": Quoted(meta.served_name),
                   "modeldeck/openai-base": Quoted(meta.openai_base)}

    def metadata(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": Quoted(name), "namespace": Quoted(namespace), "labels": dict(labels), **extra}

    notes: list[str] = []   # said above the Deployment
    docs: list[tuple[list[str], dict[str, Any]]] = []

    # -- model caches and model folders: one claim each --------------------------------------------
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    used: set[str] = set()
    for mount in spec.mounts:
        kind = _cache_kind(mount, recipe)
        vol = _volume_name(kind, used)
        claim = _dns_label(f"{base}-{vol}", 253)
        claim_spec: dict[str, Any] = {"accessModes": [Quoted("ReadWriteOnce")],
                                      "resources": {"requests": {"storage": Quoted(cache_size)}}}
        if storage_class:
            claim_spec["storageClassName"] = Quoted(storage_class)
        where = f"the volume {mount.source}" if mount.kind == "volume" else f"the folder {mount.source}"
        why = ([f"The model folder ModelDeck mounted read-only at {mount.target} ({where} on this machine).",
                "Copy the model files into this claim before the server starts (e.g. kubectl cp into a pod that",
                "mounts it); the server reads it read-only."] if kind == "models" else
               [f"The model cache at {mount.target} ({where} on this machine): empty on the cluster, so the",
                "first start downloads the weights into it. ReadWriteOnce: one pod at a time, hence Recreate."])
        docs.append((why, {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": metadata(claim), "spec": claim_spec}))
        volumes.append({"name": Quoted(vol), "persistentVolumeClaim": {"claimName": Quoted(claim),
                                                                      **({"readOnly": True} if mount.read_only else {})}})
        mounts.append({"name": Quoted(vol), "mountPath": Quoted(mount.target),
                       **({"readOnly": True} if mount.read_only else {})})
    if spec.shm_size:
        # Docker's --shm-size: a memory-backed emptyDir over /dev/shm (PyTorch and NCCL share tensors there).
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory",
                                                    "sizeLimit": Quoted(docker_size_to_quantity(spec.shm_size))}})
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})

    # -- the container ------------------------------------------------------------------------------
    container: dict[str, Any] = {"name": "server", "image": Quoted(spec.image), "imagePullPolicy": "IfNotPresent"}
    if spec.entrypoint is not None:
        container["command"] = [Quoted(a) for a in spec.entrypoint]
    if spec.command:
        container["args"] = [Quoted(a) for a in spec.command]
    container["ports"] = [{"name": "http", "containerPort": spec.internal_port, "protocol": "TCP"}]
    env: list[dict[str, Any]] = [{"name": Quoted(k), "value": Quoted(v)}
                                 for k, v in spec.environment.items() if k not in spec.secret_env]
    # optional: as under ModelDeck, a secret nobody set is simply not in the environment (HF_TOKEN is
    # needed only for gated models); one that is set reaches the server under the same name.
    env += [{"name": Quoted(name), "valueFrom": {"secretKeyRef": {"name": Quoted(secret_name), "key": Quoted(name),
                                                                  "optional": True}}}
            for name in spec.secret_env]
    if env:
        container["env"] = env

    gpu_count = 0
    if spec.gpu_ids == ("all",):
        gpu_count = 1
        notes.append("nvidia.com/gpu: 1 - the deployment used every GPU of its machine; a cluster has no \"all\": "
                     "raise the count to the GPUs the model needs (and --num-shard / --tensor-parallel-size with it).")
    elif spec.gpu_ids:
        gpu_count = len(spec.gpu_ids)
        notes.append(f"nvidia.com/gpu: {gpu_count} - ModelDeck used GPU(s) {', '.join(spec.gpu_ids)}; on the cluster "
                     "the device plugin picks which ones.")
    if gpu_count:
        notes.append("nvidia.com/gpu needs the NVIDIA device plugin or GPU operator on the cluster's GPU nodes.")
    limits: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if spec.mem_limit:
        limits["memory"] = requests["memory"] = Quoted(str(spec.mem_limit))
    if gpu_count:
        limits["nvidia.com/gpu"] = Quoted(str(gpu_count))
    if limits:
        container["resources"] = {"limits": limits, **({"requests": requests} if requests else {})}
    if mounts:
        container["volumeMounts"] = mounts

    # Probes: the health path the container was launched with, on its own port.
    startup_s = recipe.server.startup_timeout if recipe is not None \
        else ServerSpec.model_fields["startup_timeout"].default

    def probe() -> dict[str, Any]:  # a fresh dict each time: a shared one would be written as a YAML alias
        return {"httpGet": {"path": Quoted(meta.health_path), "port": "http"}}

    container["startupProbe"] = {**probe(), "periodSeconds": PROBE_PERIOD_S, "timeoutSeconds": 5,
                                 "failureThreshold": max(1, math.ceil(startup_s / PROBE_PERIOD_S))}
    container["readinessProbe"] = {**probe(), **READINESS}
    container["livenessProbe"] = {**probe(), **LIVENESS}

    user = NON_ROOT_USER.get(recipe_name)
    container["securityContext"] = {"allowPrivilegeEscalation": False, "privileged": False,
                                    "capabilities": {"drop": [Quoted("ALL")]},
                                    "runAsNonRoot": user is not None}
    pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if user is not None:
        pod_security.update(runAsNonRoot=True, runAsUser=user, runAsGroup=user)
        if mounts:
            pod_security["fsGroup"] = user
    else:
        notes.append(f"runAsNonRoot: false - the {recipe_name or 'server'} image runs as root upstream and keeps its "
                     "files under /root; privilege escalation is off and every capability is dropped.")

    pod: dict[str, Any] = {
        # The pause container becomes PID 1 and reaps, as Docker's --init does for ModelDeck's containers;
        # the server then gets SIGTERM like any process and shuts down cleanly.
        "shareProcessNamespace": True,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security,
        "containers": [container],
    }
    if volumes:
        pod["volumes"] = volumes
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(base, annotations=annotations),
        "spec": {"replicas": 1,
                 # Recreate: the cache claims are ReadWriteOnce, so the old pod must let go before the new starts.
                 "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": dict(labels), "annotations": dict(annotations)}, "spec": pod}},
    }

    if recipe is not None and recipe.image.build:
        notes.append(f"The image {spec.image} was built on this machine: push it to a registry the cluster can pull "
                     "from and change `image:`.")
    elif recipe is not None and spec.image not in (recipe.image.ref, recipe.image.gpu_ref):
        notes.append(f"The image {spec.image} was built on this machine (no registry answered): push it to a "
                     f"registry the cluster can pull from, or use {recipe.image.ref}.")
    if spec.ulimits:
        notes.append("Not expressible in a pod, set on the nodes' container runtime if needed: ulimits "
                     + ", ".join(f"{n}={v}" for n, v in spec.ulimits) + ".")
    if spec.ipc_mode == "shareable":
        notes.append("ipc: shareable is not expressible in a pod (a pod's containers share IPC anyway).")
    if recipe is not None and recipe.post_start:
        values = {"model": meta.model, "served_name": meta.served_name, "port": str(spec.internal_port),
                  "gpu_count": str(gpu_count)}
        notes.append("After the server answers, ModelDeck makes these calls (until then the pod is ready without "
                     "the model); make them yourself once, e.g. through "
                     f"`kubectl port-forward -n {namespace} svc/{base} {spec.internal_port}`:")
        for call in recipe.post_start:
            body = json.dumps(fill_placeholders(call.body, values), sort_keys=True)
            notes.append(f"  curl -X {call.method} http://127.0.0.1:{spec.internal_port}"
                         f"{fill_placeholders(call.path, values)} -H 'Content-Type: application/json' -d '{body}'")
    notes.append("Restarts: Kubernetes restarts the server whenever it exits or fails its liveness probe "
                 "(ModelDeck stops after a few failures).")
    docs.insert(0, (notes, deployment))

    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(base),
               "spec": {"type": "ClusterIP", "selector": selector,
                        "ports": [{"name": "http", "port": spec.internal_port, "targetPort": "http",
                                   "protocol": "TCP"}]}}
    docs.insert(1, ([f"The OpenAI API inside the cluster: http://{base}.{namespace}.svc:{spec.internal_port}"
                     f"{meta.openai_base}, model \"{meta.served_name}\"."], service))

    header = [f"Exported by ModelDeck: deployment {dep_id} ({recipe_name or 'unknown recipe'}, model {meta.model}) as "
              "Kubernetes manifests.",
              f"Apply with: kubectl apply -n {namespace} -f <this file>   (nothing here was applied to any cluster)"]
    if spec.secret_env:
        header += [f"Secrets are read from the Secret {secret_name}, which this file does not contain. Create it "
                   "first, e.g.:",
                   f"  kubectl create secret generic {secret_name} -n {namespace} "
                   + " ".join(f"--from-literal={n}=..." for n in spec.secret_env)]
    parts = [_comment(header)]
    for i, (comments, doc) in enumerate(docs):
        parts.append(("---\n" if i else "") + _comment(comments) + dump_yaml(doc))
    return "".join(parts)

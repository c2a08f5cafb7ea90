"""The Docker engine: the only module that imports docker; everything it answers is plain data."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import docker.types
import requests.exceptions

from backend.errors import (DeploymentConflict, DeploymentNotFound, EngineUnavailable, ImageUnavailable,
                            ModelDeckError, PortInUse)
from backend.labels import MANAGED_LABEL, DeploymentLabels
from backend.spec import SECURITY_OPT, ContainerSpec, Mount

SOCKET_CANDIDATES = (
    "/var/run/docker.sock",
    "{xdg}/docker.sock",
    "{home}/.docker/run/docker.sock",  # Docker Desktop
    "{xdg}/podman/podman.sock",  # rootless Podman
    "/run/podman/podman.sock",
)
#: On the short-lived containers that read and write cache volumes; never a deployment (no managed label).
HELPER_LABEL = "modeldeck.helper"
GPU_RUNTIME_HINT = ("Install the NVIDIA driver and the NVIDIA Container Toolkit, run "
                    "'sudo nvidia-ctk runtime configure --runtime=docker' and restart Docker; "
                    "or launch without a GPU (recipes marked GPU optional or none).")


@dataclass(frozen=True)
class EngineStatus:
    """What the engine says about itself; ``reachable`` False comes with a reason and a fix."""

    reachable: bool
    endpoint: str
    version: str | None = None
    api_version: str | None = None
    os: str | None = None
    kind: str | None = None  # "docker" or "podman"
    runtimes: tuple[str, ...] = ()
    gpu_runtime: bool = False
    cdi_devices: tuple[str, ...] = ()
    cpus: int | None = None
    memory_bytes: int | None = None
    reason: str | None = None
    hint: str | None = None
    data_root: str | None = None  # where the engine keeps images and volumes (on its host)


@dataclass(frozen=True)
class ContainerInfo:
    """A ModelDeck container as the engine sees it now (never its environment: it may hold secrets)."""

    id: str
    name: str
    image: str
    labels: dict[str, str]
    state: str  # created, running, restarting, paused, exited, dead
    exit_code: int | None
    oom_killed: bool
    error: str | None
    restart_count: int
    created: str
    started_at: str | None
    finished_at: str | None
    host_ip: str | None
    host_port: int | None
    pid: int | None
    restart_policy: str = ""  # "no" until a launch reached ready, then "on-failure"


@dataclass
class ProgressEvent:
    """One step of pulling or building an image."""

    phase: str  # "pulling" | "building"
    message: str
    layer: str | None = None
    current: int | None = None
    total: int | None = None
    extra: dict = field(default_factory=dict)


def _candidate_sockets() -> list[str]:
    xdg = os.environ.get("XDG_RUNTIME_DIR", f"/run/user/{os.getuid()}" if hasattr(os, "getuid") else "")
    home = str(Path.home())
    return [c.format(xdg=xdg, home=home) for c in SOCKET_CANDIDATES]


def _explain_connect_error(endpoint: str, exc: BaseException) -> EngineUnavailable:
    text = f"{exc!r} {exc}"
    if "PermissionError" in text or "Permission denied" in text:
        return EngineUnavailable(
            f"No permission to use the Docker socket at {endpoint}.",
            hint="Add yourself to the docker group ('sudo usermod -aG docker $USER'), then log out and in.")
    if "FileNotFoundError" in text or "No such file" in text:
        return EngineUnavailable(
            f"No Docker engine answers at {endpoint}: the socket does not exist.",
            hint="Install Docker (e.g. 'sudo apt install docker.io') and start it ('sudo systemctl start docker').")
    return EngineUnavailable(
        f"The Docker engine at {endpoint} does not answer ({type(exc).__name__}).",
        hint="Start Docker ('sudo systemctl start docker') or set DOCKER_HOST / MODELDECK_DOCKER_HOST.")


def _api_error_text(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


class Engine:
    """A handle on one Docker (or Podman) engine that survives the engine going away.

    The SDK client is made on first use and remade after a connection failure, so a
    backend started before Docker, or one whose Docker restarts, recovers on its own.
    Every call raises ``EngineUnavailable`` (with a fix) when the engine cannot be reached.
    """

    def __init__(self, docker_host: str | None = None, timeout: float = 30.0):
        self._explicit = docker_host
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        #: Why the last call could not reach the engine; None once a call got through. Readers of
        #: cached state (the deployments registry) learn from it that the engine went away
        #: without asking the engine themselves.
        self.last_error: EngineUnavailable | None = None

    # -- connection -----------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        if self._explicit:
            return self._explicit
        if os.environ.get("DOCKER_HOST"):
            return os.environ["DOCKER_HOST"]
        for path in _candidate_sockets():
            if os.path.exists(path):
                return f"unix://{path}"
        return "unix:///var/run/docker.sock"

    def _connect(self) -> docker.DockerClient:
        endpoint = self.endpoint
        try:
            if self._explicit is None and os.environ.get("DOCKER_HOST"):
                client = docker.from_env(timeout=int(self._timeout))  # honours DOCKER_TLS_VERIFY etc.
            else:
                client = docker.DockerClient(base_url=endpoint, timeout=int(self._timeout))
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
            raise _explain_connect_error(endpoint, exc) from None
        return client

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, connecting (again) if needed."""
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._connect()
                except EngineUnavailable as exc:
                    self.last_error = exc
                    raise
            return self._client

    def _call(self, fn, *args, **kwargs):
        """Run an SDK call, turning connection failures into EngineUnavailable."""
        try:
            result = fn(*args, **kwargs)
        except (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError) as exc:
            with self._lock:
                self._client = None
            self.last_error = _explain_connect_error(self.endpoint, exc)
            raise self.last_error from None
        except docker.errors.APIError:
            self.last_error = None  # it answered, with a refusal
            raise
        self.last_error = None
        return result

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def status(self) -> EngineStatus:
        """Reachability, version and GPU support of the engine. Never raises."""
        try:
            client = self.client
            info = self._call(client.info)
            version = self._call(client.version)
        except EngineUnavailable as exc:
            return EngineStatus(reachable=False, endpoint=self.endpoint, reason=exc.message, hint=exc.hint)
        except docker.errors.APIError as exc:
            return EngineStatus(reachable=False, endpoint=self.endpoint, reason=_api_error_text(exc))
        runtimes = tuple(sorted((info.get("Runtimes") or {}).keys()))
        cdi = tuple(d.get("ID", "") for d in (info.get("DiscoveredDevices") or [])
                    if d.get("Source") == "cdi")
        gpu = "nvidia" in runtimes or any(d.startswith("nvidia.com/gpu") for d in cdi)
        kind = "podman" if any("podman" in (c.get("Name") or "").lower()
                               for c in version.get("Components") or []) else "docker"
        return EngineStatus(
            reachable=True, endpoint=self.endpoint, version=version.get("Version"),
            api_version=version.get("ApiVersion"), os=info.get("OperatingSystem"), kind=kind,
            runtimes=runtimes, gpu_runtime=gpu, cdi_devices=cdi, cpus=info.get("NCPU"),
            memory_bytes=info.get("MemTotal"), data_root=info.get("DockerRootDir"),
            hint=None if gpu else GPU_RUNTIME_HINT)

    # -- images ---------------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        try:
            self._call(self.client.api.inspect_image, ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def pull(self, ref: str) -> Iterator[ProgressEvent]:
        """Pull ``ref``, yielding per-layer progress.

        Raises:
            ImageUnavailable: the registry refused or could not be reached.
        """
        repo, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
        try:
            for ev in self._call(self.client.api.pull, repo, tag=tag, stream=True, decode=True):
                if "error" in ev:
                    raise ImageUnavailable(f"Pulling {ref} failed: {ev['error']}",
                                           hint="Check the image name and your network or registry login.")
                detail = ev.get("progressDetail") or {}
                yield ProgressEvent(phase="pulling", message=ev.get("status", ""), layer=ev.get("id"),
                                    current=detail.get("current"), total=detail.get("total"))
        except docker.errors.APIError as exc:
            raise ImageUnavailable(f"Pulling {ref} failed: {_api_error_text(exc)}",
                                   hint="Check the image name, your network, and 'docker login' for private "
                                        "registries.") from None

    def build(self, context: Path, tag: str, buildargs: dict[str, str] | None = None,
              hint: str | None = None) -> Iterator[ProgressEvent]:
        """Build ``context`` as ``tag``, yielding one event per build step and output line.

        Args:
            hint: what to do when the build fails (default: about the demo's python3 base image).

        Raises:
            ImageUnavailable: with the last lines of the build output.
        """
        tail: list[str] = []
        step_re = re.compile(r"^Step (\d+)/(\d+) : (.*)")
        step, steps = 0, None
        try:
            stream = self._call(self.client.api.build, path=str(context), tag=tag, buildargs=buildargs or {},
                                rm=True, forcerm=True, decode=True, labels={"modeldeck.build": "true"})
            for ev in stream:
                if "error" in ev:
                    tail.append(ev["error"].strip())
                    raise ImageUnavailable(
                        f"Building {tag} failed: {ev['error'].strip()}",
                        hint=hint or ("The base image may be missing: set MODELDECK_DEMO_BASE_IMAGE to a local image "
                                      "that has python3, or run scripts/make-base-image."),
                        details={"log_tail": tail[-20:]})
                line = (ev.get("stream") or ev.get("status") or "").rstrip()
                if not line:
                    continue
                tail.append(line)
                m = step_re.match(line)
                if m:
                    step, steps = int(m.group(1)), int(m.group(2))
                yield ProgressEvent(phase="building", message=line, current=step, total=steps)
        except docker.errors.APIError as exc:
            raise ImageUnavailable(f"Building {tag} failed: {_api_error_text(exc)}",
                                   details={"log_tail": tail[-20:]}) from None

    # -- containers -----------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> str:
        """Create (not start) the container ``spec`` describes; return its id.

        Raises:
            DeploymentConflict: a container with this name exists already.
            ImageUnavailable: the image is not present.
        """
        api = self.client.api
        env = dict(spec.environment)
        for name in spec.secret_env:
            value = spec.secret_values.get(name) or os.environ.get(name)
            if value:
                env[name] = value
        mounts = [docker.types.Mount(target=m.target, source=m.source, type=m.kind, read_only=m.read_only)
                  for m in spec.mounts]
        device_requests = []
        if spec.gpu_ids:
            if spec.gpu_ids == ("all",):
                device_requests.append(docker.types.DeviceRequest(driver="nvidia", count=-1, capabilities=[["gpu"]]))
            else:
                device_requests.append(docker.types.DeviceRequest(driver="nvidia", device_ids=list(spec.gpu_ids),
                                                                  capabilities=[["gpu"]]))
        host_config = api.create_host_config(
            # Host port 0: Docker assigns a free one when the container starts (read back by
            # ``inspect``), so no other program can take it between choosing and binding.
            port_bindings={f"{spec.internal_port}/tcp": (spec.host_ip, spec.host_port or None)},
            mounts=mounts,
            device_requests=device_requests or None,
            shm_size=spec.shm_size,
            ipc_mode=spec.ipc_mode,
            ulimits=[docker.types.Ulimit(name=n, soft=v, hard=v) for n, v in spec.ulimits] or None,
            mem_limit=spec.mem_limit,
            security_opt=list(SECURITY_OPT),
            # No restarts while launching, so a crash keeps its exit code and logs for the
            # report; the launch turns on the spec's policy once the server is ready.
            restart_policy={"Name": "no"},
            init=True,  # reap zombies and forward signals for servers that run as PID 1
            log_config=docker.types.LogConfig(type="json-file", config={"max-size": "20m", "max-file": "3"}),
        )
        try:
            created = self._call(
                api.create_container, image=spec.image, command=list(spec.command) or None,
                entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
                environment=env, labels=spec.labels, name=spec.name, host_config=host_config,
                ports=[spec.internal_port], detach=True)
        except docker.errors.ImageNotFound:
            raise ImageUnavailable(f"Image {spec.image} is not present on the engine.") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise DeploymentConflict(f"A container named {spec.name} exists already.",
                                         hint="Remove that deployment first, or choose another served name.") from None
            raise ModelDeckError(f"Docker refused to create {spec.name}: {_api_error_text(exc)}") from None
        return created["Id"]

    def _managed(self, ref: str) -> dict:
        """Inspect ``ref`` and refuse anything without ModelDeck's label."""
        try:
            attrs = self._call(self.client.api.inspect_container, ref)
        except docker.errors.NotFound:
            raise DeploymentNotFound(f"No ModelDeck deployment '{ref}'.",
                                     hint="List deployments to see their ids.") from None
        if (attrs.get("Config", {}).get("Labels") or {}).get(MANAGED_LABEL) != "true":
            # Containers ModelDeck did not create are invisible to it, never touched.
            raise DeploymentNotFound(f"No ModelDeck deployment '{ref}'.",
                                     hint="ModelDeck only manages containers it created.")
        return attrs

    def inspect(self, ref: str) -> ContainerInfo:
        """The container ``ref`` (id or name), if ModelDeck manages it.

        Raises:
            DeploymentNotFound: no such container, or one ModelDeck did not create.
        """
        return _info(self._managed(ref))

    def start(self, ref: str) -> None:
        """Start a created or stopped container.

        Raises:
            PortInUse: its host port was taken meanwhile by another program.
        """
        attrs = self._managed(ref)
        try:
            self._call(self.client.api.start, attrs["Id"])
        except docker.errors.APIError as exc:
            text = _api_error_text(exc)
            if "port is already allocated" in text or "address already in use" in text:
                info = _info(attrs)
                raise PortInUse(f"Port {info.host_port} on 127.0.0.1 is already in use by another program.",
                                hint="Stop that program, or remove this deployment and launch it again "
                                     "with another port (or an automatic one).") from None
            if "error setting rlimit" in text:
                raise ModelDeckError(
                    f"Docker could not start {attrs['Name'].lstrip('/')}: this engine may not raise the limits the "
                    f"recipe asks for ({text})",
                    hint="Rootless Docker and Docker inside a container cannot raise memlock: remove that line "
                         "from the recipe's [resources] ulimits, or run the engine as root.") from None
            raise ModelDeckError(f"Docker could not start {attrs['Name'].lstrip('/')}: {text}") from None

    def enable_restarts(self, ref: str, max_retries: int) -> None:
        """Turn on the on-failure restart policy (after a launch reached ready)."""
        attrs = self._managed(ref)
        self._call(self.client.api.update_container, attrs["Id"],
                   restart_policy={"Name": "on-failure", "MaximumRetryCount": max_retries})

    def stop(self, ref: str, timeout: int = 10) -> None:
        attrs = self._managed(ref)
        self._call(self.client.api.stop, attrs["Id"], timeout=timeout)

    def restart(self, ref: str, timeout: int = 10) -> None:
        attrs = self._managed(ref)
        self._call(self.client.api.restart, attrs["Id"], timeout=timeout)

    def remove(self, ref: str) -> None:
        """Remove the container (stopping it first); its cache volumes stay."""
        attrs = self._managed(ref)
        try:
            self._call(self.client.api.remove_container, attrs["Id"], force=True)
        except docker.errors.NotFound:
            pass  # removed meanwhile: the wanted outcome

    def list(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        """Every ModelDeck container, running or not (optionally also matching ``labels``)."""
        filters = [f"{MANAGED_LABEL}=true"] + [f"{k}={v}" for k, v in (labels or {}).items()]
        rows = self._call(self.client.api.containers, all=True, filters={"label": filters})
        out = []
        for row in rows:
            try:
                out.append(_info(self._call(self.client.api.inspect_container, row["Id"])))
            except docker.errors.NotFound:
                continue  # removed between list and inspect
        return out

    def logs(self, ref: str, tail: int | str = 200, timestamps: bool = False) -> list[str]:
        """The last ``tail`` lines of the container's output (stdout and stderr)."""
        attrs = self._managed(ref)
        raw = self._call(self.client.api.logs, attrs["Id"], tail=tail, timestamps=timestamps)
        return raw.decode("utf-8", "replace").splitlines()

    def follow_logs(self, ref: str, tail: int | str = 200) -> "LogFollower":
        """A blocking iterator over new log lines; call ``close()`` to stop it from another thread."""
        attrs = self._managed(ref)
        stream = self._call(self.client.api.logs, attrs["Id"], stream=True, follow=True, tail=tail)
        return LogFollower(stream)

    def image_identity(self, ref: str) -> tuple[str, list[str]]:
        """What image a ModelDeck container runs: the image's id (``sha256:...``, the digest of its content,
        whatever tag now points elsewhere) and its registry digests (``repo@sha256:...``; none for an image
        built here).

        Raises:
            DeploymentNotFound: no such container, or one ModelDeck did not create.
        """
        image_id = self._managed(ref).get("Image") or ""
        try:
            attrs = self._call(self.client.api.inspect_image, image_id)
        except docker.errors.ImageNotFound:
            return image_id, []  # removed since the container was made: its id is all there is
        return attrs.get("Id") or image_id, list(attrs.get("RepoDigests") or ())

    def spec_of(self, ref: str) -> ContainerSpec:
        """Rebuild the ContainerSpec of an existing container (for the compose export).

        Secret values are never read back: variables named in the ``modeldeck.secrets``
        label are returned by name only.
        """
        attrs = self._managed(ref)
        cfg, hc = attrs["Config"], attrs["HostConfig"]
        labels = dict(cfg.get("Labels") or {})
        schema = DeploymentLabels.decode(labels)
        secrets = schema.secrets
        env = {}
        for item in cfg.get("Env") or []:
            k, _, v = item.partition("=")
            if k not in secrets and k in schema.env:
                env[k] = v
        (port_key, bindings), = (hc.get("PortBindings") or {"0/tcp": [{}]}).items()
        binding = (bindings or [{}])[0]
        gpu_ids: tuple[str, ...] = ()
        for req in hc.get("DeviceRequests") or []:
            gpu_ids = ("all",) if req.get("Count") == -1 else tuple(req.get("DeviceIDs") or ())
        mounts = tuple(Mount(source=m.get("Name") or m.get("Source"), target=m["Destination"],
                             kind="volume" if m.get("Type") == "volume" else "bind",
                             read_only=not m.get("RW", True))
                       for m in attrs.get("Mounts") or [])
        shm = hc.get("ShmSize")
        return ContainerSpec(
            name=attrs["Name"].lstrip("/"), image=cfg["Image"], command=tuple(cfg.get("Cmd") or ()),
            entrypoint=tuple(cfg["Entrypoint"]) if schema.custom_entrypoint else None,
            internal_port=int(port_key.split("/")[0]), host_port=int(binding.get("HostPort") or 0),
            host_ip=binding.get("HostIp") or "127.0.0.1", labels=labels, environment=env, secret_env=secrets,
            gpu_ids=gpu_ids, mounts=mounts,
            shm_size=f"{shm // (1024 * 1024)}m" if shm and shm != 64 * 1024 * 1024 else None,
            ipc_mode=hc.get("IpcMode") if hc.get("IpcMode") in ("private", "shareable") else None,
            ulimits=tuple(sorted((u["Name"], int(u["Hard"])) for u in hc.get("Ulimits") or [])),
            restart_max=(hc.get("RestartPolicy") or {}).get("MaximumRetryCount") or 3,
            mem_limit=hc.get("Memory") or None)


    # -- helper containers on cache volumes (downloads, the library) ----------------------

    def volume_exists(self, name: str) -> bool:
        """Whether the named volume exists (a cache volume is made by the first launch or download using it)."""
        try:
            self._call(self.client.api.inspect_volume, name)
            return True
        except docker.errors.NotFound:
            return False

    def _helper(self, image: str, volume: str, command: list[str] | None, labels: dict[str, str],
                target: str) -> str:
        mounts = [docker.types.Mount(target=target, source=volume, type="volume")]
        host_config = self.client.api.create_host_config(mounts=mounts, network_mode="none",
                                                         security_opt=list(SECURITY_OPT))
        try:
            created = self._call(self.client.api.create_container, image=image, command=command or ["true"],
                                 labels={HELPER_LABEL: "cache", **labels}, host_config=host_config,
                                 detach=True)
        except docker.errors.ImageNotFound:
            raise ImageUnavailable(f"Image {image} is not present on the engine; ModelDeck reaches cache "
                                   "volumes through a short-lived container of it.",
                                   hint="Run scripts/make-base-image, or set MODELDECK_DEMO_BASE_IMAGE to a local "
                                        "image that has python3.") from None
        return created["Id"]

    def run_in_volume(self, image: str, volume: str, command: list[str], *, labels: dict[str, str],
                      target: str = "/cache", timeout: float = 300) -> tuple[int, str, str]:
        """Run ``command`` in a short-lived container of ``image`` with ``volume`` at ``target``.

        The container has no network, is labelled as a helper (never a deployment) and is removed
        afterwards, pass or fail. This is how ModelDeck reads and prunes cache volumes without
        touching the engine's data folder (which Docker Desktop keeps inside its VM).

        Returns:
            The exit code, stdout and stderr.

        Raises:
            ImageUnavailable: ``image`` is not present.
        """
        cid = self._helper(image, volume, command, labels, target)
        try:
            self._call(self.client.api.start, cid)
            code = self._call(self.client.api.wait, cid, timeout=timeout).get("StatusCode", -1)
            out = self._call(self.client.api.logs, cid, stdout=True, stderr=False).decode("utf-8", "replace")
            err = self._call(self.client.api.logs, cid, stdout=False, stderr=True).decode("utf-8", "replace")
            return code, out, err
        finally:
            with contextlib.suppress(docker.errors.APIError, EngineUnavailable):
                self._call(self.client.api.remove_container, cid, force=True)

    def put_into_volume(self, image: str, volume: str, archive, *, labels: dict[str, str],
                        target: str = "/cache") -> None:
        """Unpack a tar ``archive`` (bytes, or an iterable of byte chunks: streamed) into ``volume``.

        Through a created, never started container of ``image`` and the engine's archive API, so
        multi-gigabyte files stream from the backend into the volume without a copy in between.

        Raises:
            ImageUnavailable: ``image`` is not present.
            ModelDeckError: the engine refused the archive (a full disk, for one).
        """
        cid = self._helper(image, volume, None, labels, target)
        try:
            self._call(self.client.api.put_archive, cid, target, archive)
        except docker.errors.APIError as exc:
            raise ModelDeckError(f"Docker could not write into volume {volume}: {_api_error_text(exc)}") from None
        finally:
            with contextlib.suppress(docker.errors.APIError, EngineUnavailable):
                self._call(self.client.api.remove_container, cid, force=True)

    def remove_helpers(self, labels: dict[str, str]) -> int:
        """Remove helper containers carrying ``labels`` (left behind by a backend killed mid-copy)."""
        filters = [f"{HELPER_LABEL}=cache"] + [f"{k}={v}" for k, v in labels.items()]
        rows = self._call(self.client.api.containers, all=True, filters={"label": filters})
        for row in rows:
            with contextlib.suppress(docker.errors.APIError):
                self._call(self.client.api.remove_container, row["Id"], force=True)
        return len(rows)


class LogFollower:
    """Iterates a container's live log lines; ``close()`` ends the iteration from any thread."""

    def __init__(self, stream):
        self._stream = stream
        self._buffer = b""

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._stream:
                self._buffer += chunk
                *lines, self._buffer = self._buffer.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
        except (requests.exceptions.RequestException, OSError, AttributeError):
            return  # closed from another thread, or the engine went away

    def close(self) -> None:
        try:
            self._stream.close()
        except Exception:  # noqa: BLE001 - closing a dead stream must never raise
            pass


def _host_binding(attrs: dict) -> tuple[str | None, int | None]:
    """The published (host ip, host port): the one bound now, else the one configured.

    A port Docker assigned exists only while the container runs (NetworkSettings); its
    configuration says "" and it gets a new one at each start. A requested port is in both.
    """
    for ports in (((attrs.get("NetworkSettings") or {}).get("Ports")) or {},
                  (attrs.get("HostConfig") or {}).get("PortBindings") or {}):
        for bindings in ports.values():
            for binding in bindings or ():
                port = int(binding.get("HostPort") or 0) or None
                if port is not None:
                    return binding.get("HostIp") or None, port
    return None, None


def _info(attrs: dict) -> ContainerInfo:
    state = attrs.get("State") or {}
    host_ip, host_port = _host_binding(attrs)
    status = state.get("Status") or "unknown"
    return ContainerInfo(
        id=attrs["Id"], name=attrs["Name"].lstrip("/"), image=(attrs.get("Config") or {}).get("Image", ""),
        labels=dict((attrs.get("Config") or {}).get("Labels") or {}), state=status,
        exit_code=state.get("ExitCode") if status in ("exited", "dead", "restarting") else None,
        oom_killed=bool(state.get("OOMKilled")), error=state.get("Error") or None,
        restart_count=int(attrs.get("RestartCount") or 0), created=attrs.get("Created", ""),
        started_at=_docker_time(state.get("StartedAt")), finished_at=_docker_time(state.get("FinishedAt")),
        host_ip=host_ip, host_port=host_port, pid=state.get("Pid") or None,
        restart_policy=((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "")


def _docker_time(value: str | None) -> str | None:
    return None if not value or value.startswith("0001-") else value

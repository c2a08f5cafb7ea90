"""The engine layer: status of a real engine, a missing one explained, unlabelled containers invisible."""

from __future__ import annotations

import pytest

from backend.engine import Engine
from backend.errors import DeploymentNotFound, EngineUnavailable, ModelDeckError
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.waiting import wait_until


def test_missing_engine_is_explained_with_a_fix(tmp_path):
    eng = Engine(f"unix://{tmp_path}/no-docker.sock")
    st = eng.status()
    assert not st.reachable
    assert "socket does not exist" in st.reason and "install" in st.hint.lower()
    with pytest.raises(EngineUnavailable) as err:
        eng.list()
    assert err.value.hint


def test_engine_that_refuses_connections_is_explained(tmp_path):
    import socket
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))  # bound but never listening: connections are refused
    try:
        st = Engine(f"unix://{path}").status()
    finally:
        s.close()
    assert not st.reachable and st.hint


@pytest.mark.docker
def test_status_of_the_real_engine(engine):
    st = engine.status()
    assert st.reachable and st.version and st.api_version and st.kind in ("docker", "podman")
    assert st.runtimes and isinstance(st.gpu_runtime, bool)  # which one depends on the machine: see below
    if not st.gpu_runtime:
        assert "NVIDIA Container Toolkit" in st.hint


class _Reports:
    """An SDK client that answers ``info()`` and ``version()`` with what an engine reported."""

    def __init__(self, info: dict, version: dict | None = None):
        self._info, self._version = info, version or {"Version": "27.1.1", "ApiVersion": "1.46"}

    def info(self) -> dict:
        return self._info

    def version(self) -> dict:
        return self._version


NVIDIA_RUNTIME = {"Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}}}
CDI_GPU = {"Runtimes": {"runc": {"path": "runc"}},
           "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=0"},
                                 {"Source": "cdi", "ID": "nvidia.com/gpu=all"}]}
CDI_OTHER = {"Runtimes": {"runc": {"path": "runc"}},
             "DiscoveredDevices": [{"Source": "cdi", "ID": "vendor.com/fpga=0"}]}
NOT_CDI = {"Runtimes": {"runc": {"path": "runc"}}, "DiscoveredDevices": [{"Source": "udev", "ID": "nvidia.com/gpu=0"}]}
PLAIN = {"Runtimes": {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}}, "DiscoveredDevices": None}


@pytest.mark.parametrize(("info", "runtimes", "cdi", "gpu"), [
    (NVIDIA_RUNTIME, ("nvidia", "runc"), (), True),
    (CDI_GPU, ("runc",), ("nvidia.com/gpu=0", "nvidia.com/gpu=all"), True),
    (CDI_OTHER, ("runc",), ("vendor.com/fpga=0",), False),
    (NOT_CDI, ("runc",), (), False),
    (PLAIN, ("io.containerd.runc.v2", "runc"), (), False),
    ({}, (), (), False),
], ids=["nvidia-runtime", "cdi-gpu", "cdi-other-device", "gpu-not-from-cdi", "runc-only", "nothing-reported"])
def test_gpu_support_read_from_what_the_engine_reports(monkeypatch, info, runtimes, cdi, gpu):
    monkeypatch.setattr(Engine, "client", property(lambda self: _Reports(info)))
    st = Engine("unix:///nonexistent.sock").status()
    assert (st.reachable, st.runtimes, st.cdi_devices, st.gpu_runtime) == (True, runtimes, cdi, gpu)
    assert (st.hint is None) is gpu and (gpu or "NVIDIA Container Toolkit" in st.hint)


def test_podman_is_told_apart_by_its_version_components(monkeypatch):
    podman = {"Version": "5.2.2", "ApiVersion": "1.41",
              "Components": [{"Name": "Podman Engine", "Version": "5.2.2"}]}
    monkeypatch.setattr(Engine, "client", property(lambda self: _Reports(PLAIN, podman)))
    st = Engine("unix:///nonexistent.sock").status()
    assert (st.kind, st.version, st.api_version) == ("podman", "5.2.2", "1.41")


@pytest.mark.docker
def test_unlabelled_containers_are_invisible_and_untouchable(engine, demo_base_image):
    c = engine.client.containers.run(demo_base_image, ["sleep", "30"], detach=True, labels={RUN_LABEL: RUN_ID})
    try:
        assert c.id not in {x.id for x in engine.list()}
        for action in (engine.stop, engine.start, engine.restart, engine.remove, engine.inspect, engine.logs):
            with pytest.raises(DeploymentNotFound):
                action(c.id)
        c.reload()
        assert c.status == "running"
    finally:
        c.remove(force=True)


@pytest.mark.docker
def test_created_container_runs_under_init_with_the_specs_limits(engine, demo_base_image):
    """What a launch creates: Docker's init, the recipe's ulimits (SGLang's), and spec_of reads them back."""
    from backend.spec import MANAGED_LABEL, ContainerSpec
    from tests.support.live_server import free_port

    spec = ContainerSpec(name=f"modeldeck-t{RUN_ID}-limits", image=demo_base_image,
                         command=("sh", "-c", "ulimit -l; ulimit -s; sleep 30"), entrypoint=(),
                         internal_port=8000, host_port=free_port(),
                         labels={MANAGED_LABEL: "true", RUN_LABEL: RUN_ID, "modeldeck.entrypoint": "custom"},
                         ulimits=(("memlock", -1), ("stack", 67108864)), shm_size="64m")
    cid = engine.create(spec)
    try:
        attrs = engine.client.api.inspect_container(cid)
        assert attrs["HostConfig"]["Init"] is True
        assert sorted((u["Name"], u["Soft"], u["Hard"]) for u in attrs["HostConfig"]["Ulimits"]) == [
            ("memlock", -1, -1), ("stack", 67108864, 67108864)]
        assert engine.spec_of(cid).ulimits == (("memlock", -1), ("stack", 67108864))
        try:
            engine.start(cid)
        except ModelDeckError as exc:
            # An engine without the right to raise memlock (rootless, or Docker in a container like
            # some CI machines): the refusal says so and what to do.
            assert "may not raise the limits" in exc.message and "memlock" in exc.hint
            return
        lines = wait_until(lambda: len(lines := engine.logs(cid)) >= 2 and lines, 10, interval=0.1,
                           what="the two ulimit lines in the container's log")
        assert lines[:2] == ["unlimited", str(67108864 // 1024)]  # ulimit -s counts KiB
    finally:
        engine.remove(cid)


@pytest.mark.docker
def test_a_raised_stack_limit_reaches_the_server(engine, demo_base_image):
    from backend.spec import MANAGED_LABEL, ContainerSpec
    from tests.support.live_server import free_port

    spec = ContainerSpec(name=f"modeldeck-t{RUN_ID}-stack", image=demo_base_image,
                         command=("sh", "-c", "ulimit -s; sleep 30"), entrypoint=(), internal_port=8000,
                         host_port=free_port(), labels={MANAGED_LABEL: "true", RUN_LABEL: RUN_ID},
                         ulimits=(("stack", 67108864),))
    cid = engine.create(spec)
    try:
        engine.start(cid)
        lines = wait_until(lambda: engine.logs(cid), 10, interval=0.1, what="the ulimit line in the container's log")
        assert lines[:1] == [str(67108864 // 1024)]  # ulimit -s counts KiB
    finally:
        engine.remove(cid)

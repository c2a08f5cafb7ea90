"""The engine layer: status of a real engine, a missing one explained, unlabelled containers invisible."""

from __future__ import annotations

import time

import pytest

from backend.engine import Engine
from backend.errors import DeploymentNotFound, EngineUnavailable, ModelDeckError
from tests.conftest import RUN_ID, RUN_LABEL


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
    assert st.gpu_runtime is ("nvidia" in st.runtimes or any(d.startswith("nvidia.com/gpu") for d in st.cdi_devices))
    if not st.gpu_runtime:
        assert "NVIDIA Container Toolkit" in st.hint


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
        deadline = time.monotonic() + 10
        while len(engine.logs(cid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.logs(cid)[:2] == ["unlimited", str(67108864 // 1024)]  # ulimit -s counts KiB
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
        deadline = time.monotonic() + 10
        while not engine.logs(cid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.logs(cid)[:1] == [str(67108864 // 1024)]  # ulimit -s counts KiB
    finally:
        engine.remove(cid)

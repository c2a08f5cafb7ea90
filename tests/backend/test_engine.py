"""The engine layer: status of a real engine, a missing one explained, unlabelled containers invisible."""

from __future__ import annotations

import pytest

from backend.engine import Engine
from backend.errors import DeploymentNotFound, EngineUnavailable
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

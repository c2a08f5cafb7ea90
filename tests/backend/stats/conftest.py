"""Fixtures for the stats tests: real containers from the local demo base image, removed pass or fail."""

from __future__ import annotations

import os
import uuid

import pytest

STATS_IMAGE = os.environ.get("MODELDECK_STATS_TEST_IMAGE", "modeldeck/demo-base:test")
TEST_LABEL = "modeldeck.test-run"
RUN_UUID = uuid.uuid4().hex


@pytest.fixture(scope="session")
def docker_client():
    """A Docker SDK client to the real engine; a skip without one, a failure when CI=true."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        msg = f"No Docker engine: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + " (CI=true: Docker tests must run)", pytrace=False)
        pytest.skip(msg)
    try:
        client.images.get(STATS_IMAGE)
    except Exception as exc:
        pytest.skip(f"image {STATS_IMAGE} is not present locally: {exc}")
    yield client
    # Anything a test left behind (a crash between run and the fixture's bookkeeping).
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_UUID}"}):
        c.remove(force=True)
    client.close()


@pytest.fixture()
def run_container(docker_client):
    """Start a labelled container running ``python3 -c <code>``; removed at teardown, pass or fail.

    Returns a function ``(code) -> (full_id, host_pid)``.
    """
    started = []

    def run(code: str) -> tuple[str, int]:
        c = docker_client.containers.run(
            STATS_IMAGE, ["python3", "-c", code], detach=True,
            labels={TEST_LABEL: RUN_UUID})
        started.append(c)
        c.reload()
        assert c.status == "running", c.logs()
        return c.id, int(c.attrs["State"]["Pid"])

    yield run
    for c in started:
        try:
            c.remove(force=True)
        except Exception:
            pass


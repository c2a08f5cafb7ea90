"""Fixtures for the stats tests: real containers from the demo's base image, removed pass or fail."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import skip_or_fail

TEST_LABEL = "modeldeck.test-run"
RUN_UUID = uuid.uuid4().hex


@pytest.fixture(scope="session")
def stats_image(engine, demo_base_image) -> str:
    """An image with python3 for the measured containers: the demo's base image.

    The test set-up makes or pulls it; missing, it is a failure in CI, a skip elsewhere.
    """
    image = os.environ.get("MODELDECK_STATS_TEST_IMAGE") or demo_base_image
    if not engine.image_exists(image):
        skip_or_fail(f"image {image} is not present (scripts/test makes it; or set MODELDECK_DEMO_BASE_IMAGE)")
    return image


@pytest.fixture(scope="session")
def docker_client(engine, stats_image):
    """A Docker SDK client to the real engine (the shared ``engine`` fixture: a failure in CI without one)."""
    import docker

    client = docker.DockerClient(base_url=engine.endpoint)
    yield client
    # Anything a test left behind (a crash between run and the fixture's bookkeeping).
    for c in client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_UUID}"}):
        c.remove(force=True)
    client.close()


@pytest.fixture()
def run_container(docker_client, stats_image):
    """Start a labelled container running ``python3 -c <code>``; removed at teardown, pass or fail.

    Returns a function ``(code) -> (full_id, host_pid)``.
    """
    started = []

    def run(code: str) -> tuple[str, int]:
        c = docker_client.containers.run(
            stats_image, ["python3", "-c", code], detach=True,
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


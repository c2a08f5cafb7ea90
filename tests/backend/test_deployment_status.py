"""A deployment's status from its container's facts and its launch: every branch, without Docker."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from backend.deployment_status import ContainerFacts, derive, launch_abandoned
from backend.engine import ContainerInfo
from backend.labels import DeploymentLabels
from backend.launches import LaunchProgress

NOW = datetime(2025, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
LABELS = DeploymentLabels(id="demo", recipe="demo", model="demo-tiny", served_name="demo", config_hash="abc123",
                          gpus=("0", "1"), internal_port=8000, openai_base="/v1").encode()


def container(state: str = "running", *, exit_code: int | None = None, oom: bool = False,
              started_minutes_ago: float = 1.0, restart_policy: str = "on-failure", host_port: int | None = 32768,
              labels: dict[str, str] | None = None) -> ContainerInfo:
    started = (NOW - timedelta(minutes=started_minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.123456789Z")
    return ContainerInfo(
        id="c0ffee", name="modeldeck-demo", image="modeldeck/demo:1", labels=LABELS if labels is None else labels,
        state=state, exit_code=exit_code, oom_killed=oom, error=None, restart_count=0,
        created="2025-05-01T11:00:00Z", started_at=started, finished_at=None, host_ip="127.0.0.1",
        host_port=host_port, pid=42, restart_policy=restart_policy)


def launch(*phases: tuple[str, str], done: bool = False) -> LaunchProgress:
    lp = LaunchProgress("demo", "abc123", recipe="demo", model="demo-tiny", served_name="demo",
                        image="modeldeck/demo:1")
    for phase, message in phases:
        lp.emit(phase, message)
    if done and not lp.done:
        lp.emit("ready", "Ready")
    return lp


def status(c: ContainerInfo | None, lp: LaunchProgress | None = None, **facts) -> tuple[str, str]:
    d = derive("demo", ContainerFacts(c, **facts) if c is not None else None, lp, NOW)
    return d.status, d.message


def test_ready_shows_everything_the_labels_and_container_say():
    d = derive("demo", ContainerFacts(container(), ready=True), None, NOW)
    assert (d.status, d.message, d.ready, d.state) == ("ready", "answering", True, "running")
    assert d.endpoint == "http://127.0.0.1:32768/v1" and d.host_port == 32768
    assert (d.recipe, d.model, d.served_name, d.config_hash, d.gpus) == ("demo", "demo-tiny", "demo", "abc123",
                                                                          ["0", "1"])
    assert d.container_id == "c0ffee" and d.name == "modeldeck-demo" and d.image == "modeldeck/demo:1"


def test_running_but_not_answering_is_loading():
    assert status(container()) == ("loading", "running; waiting for the server to answer")


def test_an_abandoned_launch_that_overran_its_start_up_time_is_failed():
    c = container(restart_policy="no", started_minutes_ago=11)
    s, message = status(c, startup_timeout_s=600)
    assert s == "failed" and "interrupted" in message
    # Within its start-up time it is still loading; restarts on (the launch finished) never count.
    assert status(container(restart_policy="no", started_minutes_ago=9), startup_timeout_s=600)[0] == "loading"
    assert status(container(restart_policy="on-failure", started_minutes_ago=11), startup_timeout_s=600)[0] == "loading"


def test_abandoned_needs_a_readable_start_and_no_launch_in_flight():
    c = container(restart_policy="no", started_minutes_ago=11)
    assert launch_abandoned(c, None, 600, NOW)
    assert not launch_abandoned(c, launch(("loading", "waiting")), 600, NOW), "a launch of it runs here"
    assert launch_abandoned(c, launch(("loading", "waiting"), done=True), 600, NOW), "that launch has ended"
    assert not launch_abandoned(dataclasses.replace(c, started_at="not a time"), None, 600, NOW)
    assert not launch_abandoned(dataclasses.replace(c, started_at=None), None, 600, NOW)


def test_restarting_says_the_crash_exit_code():
    assert status(container("restarting", exit_code=1)) == ("restarting", "crashed (exit code 1); Docker is restarting it")


def test_killed_for_memory_is_failed_whatever_the_exit_code():
    assert status(container("exited", exit_code=137, oom=True)) == ("failed", "killed: out of memory")


def test_stopped_while_the_engine_was_down_says_so():
    s, message = status(container("exited", exit_code=143), stopped_in_outage=True)
    assert s == "stopped" and message.startswith("stopped while the Docker engine was down (exit code 143)")


@pytest.mark.parametrize(("code", "message"), [(0, "stopped"), (130, "stopped (exit code 130)"),
                                               (137, "stopped (exit code 137)"), (143, "stopped (exit code 143)")])
def test_stop_exit_codes_are_stopped_and_a_kill_shows_its_code(code, message):
    assert status(container("exited", exit_code=code)) == ("stopped", message)
    assert status(container("dead", exit_code=code)) == ("stopped", message)


def test_any_other_exit_is_failed():
    assert status(container("exited", exit_code=2)) == ("failed", "exited with code 2")


def test_a_failed_launch_says_why_instead_of_the_exit_code():
    lp = launch(("creating", "Creating"), ("failed", "The model server exited with code 2 before it was ready."))
    assert status(container("exited", exit_code=143), lp) == (
        "failed", "The model server exited with code 2 before it was ready.")
    assert status(container("created", host_port=None), lp) == (
        "failed", "The model server exited with code 2 before it was ready.")


def test_created_and_never_started_is_an_interrupted_launch():
    s, message = status(container("created", host_port=None))
    assert s == "failed" and message.startswith("the launch was interrupted before the server started")


def test_paused_and_unknown_states():
    assert status(container("paused")) == ("paused", "paused")
    assert status(container("removing")) == ("unknown", "removing")


def test_a_launch_in_flight_shows_its_last_step_over_the_container_state():
    lp = launch(("queued", "Launching"), ("creating", "Creating"), ("loading", "Waiting for /health"))
    assert status(container(), lp, ready=False) == ("loading", "Waiting for /health")
    assert status(container("exited", exit_code=2), lp) == ("loading", "Waiting for /health")
    # "queued" is shown as "creating".
    assert status(container("created"), launch(("queued", "Launching"))) == ("creating", "Launching")


def test_a_launch_without_a_container_yet():
    d = derive("demo", None, launch(("queued", "Launching demo"), ("pulling", "Pulling image x")), NOW)
    assert (d.status, d.message, d.state, d.container_id, d.ready) == ("pulling", "Pulling image x", "none", None,
                                                                       False)
    assert (d.name, d.recipe, d.model, d.image, d.config_hash) == ("modeldeck-demo", "demo", "demo-tiny",
                                                                   "modeldeck/demo:1", "abc123")
    assert derive("demo", None, launch(), NOW).status == "creating", "no event yet"
    assert derive("demo", None, launch(("queued", "Launching")), NOW).status == "creating"


def test_a_launch_that_failed_before_its_container():
    d = derive("demo", None, launch(("pulling", "Pulling"), ("failed", "Pulling x failed: denied")), NOW)
    assert (d.status, d.message) == ("failed", "Pulling x failed: denied")


def test_no_host_port_means_no_endpoint_and_older_labels_still_read():
    d = derive("demo", ContainerFacts(container("exited", exit_code=0, host_port=None)), None, NOW)
    assert d.host_port is None and d.endpoint is None
    old = {"modeldeck.managed": "true", "modeldeck.id": "demo", "modeldeck.served_name": "Demo"}
    d = derive("demo", ContainerFacts(container(labels=old), ready=True), None, NOW)
    assert d.served_name == "Demo" and d.endpoint == "http://127.0.0.1:32768/v1" and d.gpus == []

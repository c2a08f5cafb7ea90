"""Shared fixtures: a real Docker engine, a per-run container label with cleanup, the demo image."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.x_display import x_display_problem

IN_CI = os.environ.get("CI") == "true"


def skip_or_fail(why: str) -> NoReturn:
    """A part of the test machine is missing: a failure in CI (``CI=true``), a skip elsewhere.

    CI installs everything the suite needs (scripts/test), so there a missing part is a broken
    set-up, never a reason to run less.
    """
    if IN_CI:
        pytest.fail(f"{why} (CI=true: this must run here)", pytrace=False)
    pytest.skip(why)


def _choose_qt_platform() -> str | None:
    """GUI tests run on a real X server (xcb, scripts/test starts Xvfb); returns why not, or None.

    Decided before Qt loads: on xcb with no X server Qt aborts the whole run, so without one the
    tests fall back to offscreen (where a person runs pytest without a display), and in CI every
    GUI test fails instead (the _real_display fixture).
    """
    asked = os.environ.get("QT_QPA_PLATFORM", "")
    if asked and not asked.startswith("xcb"):
        return f"QT_QPA_PLATFORM={asked} was asked for, not xcb"
    problem = x_display_problem()
    os.environ["QT_QPA_PLATFORM"] = "offscreen" if problem else "xcb"
    return problem


DISPLAY_PROBLEM = _choose_qt_platform()

from backend.base_image import PUBLIC_BASE_IMAGE, pick_base_image  # noqa: E402
from backend.engine import Engine  # noqa: E402
from backend.errors import EngineUnavailable  # noqa: E402
from backend.settings import REPO_ROOT, Settings  # noqa: E402

RUN_ID = uuid.uuid4().hex[:8]
RUN_LABEL = "modeldeck.test-run"


def pytest_report_header(config):
    qt = (f"Qt on xcb, X display {os.environ['DISPLAY']}" if DISPLAY_PROBLEM is None
          else f"Qt {os.environ['QT_QPA_PLATFORM']}: {DISPLAY_PROBLEM}"
          + (" (CI=true: every GUI test fails)" if IN_CI else ""))
    return [f"modeldeck test run {RUN_ID} (containers labelled {RUN_LABEL}={RUN_ID}); CI={IN_CI}", qt]


@pytest.fixture(autouse=True)
def _real_display(request):
    """In CI, a GUI test (marked gui, or using qtbot/qapp) without a real X display is a failure."""
    if DISPLAY_PROBLEM and IN_CI and (request.node.get_closest_marker("gui")
                                      or {"qtbot", "qapp"} & set(request.fixturenames)):
        pytest.fail(f"CI=true and GUI tests must run on a real X display: {DISPLAY_PROBLEM} "
                    "(scripts/test starts Xvfb; apt-get install xvfb)", pytrace=False)


@pytest.fixture(scope="session")
def run_id() -> str:
    """Short id of this test run; containers and names made by tests carry it."""
    return RUN_ID


@pytest.fixture(scope="session")
def engine() -> Engine:
    """The real Docker engine. Without one: a failure in CI, a skip elsewhere.

    At teardown every container labelled with this run's label is removed, pass or fail.
    """
    eng = Engine()
    status = eng.status()
    if not status.reachable:
        skip_or_fail(f"No Docker engine: {status.reason} {status.hint or ''}")
    yield eng
    client = eng.client
    for c in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
        c.remove(force=True)
    eng.close()




@functools.cache
def _base_image() -> str:
    if os.environ.get("MODELDECK_DEMO_BASE_IMAGE"):
        return os.environ["MODELDECK_DEMO_BASE_IMAGE"]
    try:  # the backend's own choice (backend/base_image.py): what is here, else the public one
        return pick_base_image(None, Engine().image_exists)
    except EngineUnavailable:
        return PUBLIC_BASE_IMAGE


@pytest.fixture(scope="session")
def demo_base_image() -> str:
    """The demo's base image: the variable's, else the default if present, else the locally made one."""
    return _base_image()


@pytest.fixture()
def settings(tmp_path, demo_base_image) -> Settings:
    """Settings for one test: its own home folder, containers labelled with the run id."""
    return Settings(home=tmp_path / "home", demo_base_image=demo_base_image,
                    extra_labels={RUN_LABEL: RUN_ID}, token="test-token")


@pytest.fixture(scope="session")
def llamacpp_image(engine) -> str:
    """The locally built llama-server image; building it is scripts/test's job (5-10 minutes, once)."""
    from backend.local_images import load_local_build

    tag = load_local_build(Settings().catalog_dir, "llama-cpp").tag
    if not engine.image_exists(tag):
        skip_or_fail(f"llama.cpp's local image {tag} is not built: run scripts/test once, or "
                     "'.venv/bin/python -m backend.local_images llama-cpp'")
    return tag


@pytest.fixture(scope="session")
def gguf_models(tmp_path_factory) -> Path:
    """A model folder holding the tiny real GGUF of scripts/make-tiny-gguf at ``tiny/tiny-llama.gguf``.

    Made once per run and shared (read-only) by every llama.cpp test: give it to the backend as a
    model folder (``model_dirs``) and launch ``<folder>/tiny/tiny-llama.gguf``.
    """
    folder = tmp_path_factory.mktemp("gguf-models")
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "make-tiny-gguf"), str(folder / "tiny")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == folder / "tiny" / "tiny-llama.gguf"
    return folder


@pytest.fixture(scope="session")
def demo_image(engine, demo_base_image) -> str:
    """The demo model image, built once per run from containers/demo/ (what the first launch does)."""
    from backend.catalog import load_catalog
    from backend.launch_plan import build_tag

    settings = Settings(demo_base_image=demo_base_image)
    recipe = load_catalog(settings.catalog_dir).get("demo")
    tag = build_tag(recipe, settings.catalog_dir / "demo", demo_base_image)
    if not engine.image_exists(tag):
        for _ in engine.build(settings.catalog_dir / "demo", tag, {"BASE_IMAGE": demo_base_image}):
            pass
    return tag


@pytest.fixture()
def hub_standin(gguf_models):
    """The Hugging Face Hub stand-in (tests/support/hub_standin.py) serving the recorded repositories
    around the tiny GGUF, started on a free loopback port; give its ``url`` as ``HF_ENDPOINT``."""
    from tests.support.hub_standin import HubStandin, default_repos, tiny_gguf_bytes

    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models))) as hub:
        yield hub


def _start_node(**kw):
    """A started ``RemoteNode`` (tests/support/remote_node.py); a failure in CI, a skip elsewhere, if it cannot be."""
    from tests.support.remote_node import NodeUnavailable, RemoteNode, reap_stale

    reap_stale()   # nodes a killed run left behind
    node = RemoteNode(**kw)
    try:
        return node.start()
    except NodeUnavailable as exc:
        skip_or_fail(f"No simulated second machine: {exc}")


@pytest.fixture(scope="session")
def remote_node(engine, demo_image, demo_base_image):
    """A second machine (tests/support/remote_node.py): its own network namespace and link, sshd, containerd,
    dockerd (the demo image copied in; ``load_image(tag)`` for more) and modeldeck-backend on its 127.0.0.1:8765.

    Made on first use, shared by the session, torn down at its end (and at interpreter exit). A test that
    cuts the link, rotates the host key or stops the backend puts it back (``reset()``) before it ends.
    """
    images = (demo_image, demo_base_image) if engine.image_exists(demo_base_image) else (demo_image,)
    node = _start_node(images=images, demo_base_image=demo_base_image)
    yield node
    node.teardown()


@pytest.fixture(scope="session")
def bare_ssh_host():
    """A second machine with sshd only (no engine, no ModelDeck, no token file): same attributes as
    ``remote_node``, ``docker_host`` None."""
    node = _start_node(with_modeldeck=False)
    yield node
    node.teardown()


@pytest.fixture(scope="session")
def remote_llamacpp_image(remote_node, llamacpp_image) -> str:
    """llama.cpp's local image, copied into ``remote_node``'s engine once per run (about 35 s); its tag."""
    remote_node.load_image(llamacpp_image)
    return llamacpp_image

"""A backend started without the scripts finds the base image by itself (backend/base_image.py), on the real engine."""

from __future__ import annotations

import httpx
import pytest

from backend.app import create_app
from backend.base_image import LOCAL_BASE_IMAGE, PUBLIC_BASE_IMAGE, pick_base_image
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import demo_body, launch
from tests.support.live_server import serve

pytestmark = [pytest.mark.docker]
TOKEN = "base-image-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def temp_tags(engine, demo_base_image):
    """Tags of this test's own on an image that is here; only these tags are removed after."""
    made: list[str] = []
    image = engine.client.images.get(demo_base_image)

    def tag(name: str) -> str:
        repo, version = name.rsplit(":", 1)
        image.tag(repo, version)
        made.append(name)
        return name

    yield tag
    for name in made:
        engine.client.images.remove(name, noprune=True)  # the tag only: the image keeps its own


def test_settings_leave_the_choice_to_launch_time_unless_told(monkeypatch):
    monkeypatch.delenv("MODELDECK_DEMO_BASE_IMAGE", raising=False)
    assert Settings.from_env().demo_base_image is None
    assert Settings.from_env({"MODELDECK_DEMO_BASE_IMAGE": ""}).demo_base_image is None
    assert Settings.from_env({"MODELDECK_DEMO_BASE_IMAGE": "my/base:1"}).demo_base_image == "my/base:1"


def test_order_of_choice_follows_what_the_engine_has(engine, temp_tags):
    public = f"modeldeck-test/public-{RUN_ID}:slim"
    local = f"modeldeck-test/local-{RUN_ID}:bookworm"

    def pick(configured=None):
        return pick_base_image(configured, engine.image_exists, public=public, local=local)

    assert pick() == public, "with neither here, the public image is the one to pull"
    temp_tags(local)
    assert pick() == local, "the locally made image, when the public one is not here"
    temp_tags(public)
    assert pick() == public, "the public image when it is here"
    assert pick("my/own:base") == "my/own:base", "MODELDECK_DEMO_BASE_IMAGE always wins"


@pytest.fixture(scope="module")
def unset_api(engine, demo_image, tmp_path_factory):
    """A backend as the menu entry or systemd starts it: no MODELDECK_DEMO_BASE_IMAGE."""
    settings = Settings(home=tmp_path_factory.mktemp("base-home"), token=TOKEN, extra_labels={RUN_LABEL: RUN_ID})
    assert settings.demo_base_image is None
    with serve(create_app(settings, engine=engine)) as url:
        yield url


def test_demo_launches_on_the_base_image_that_is_here_without_being_told(unset_api, engine, demo_image):
    # This machine has python:3.12-slim or the image scripts/make-base-image made (the suite's
    # set-up sees to it); the backend, told nothing, picks the same one the suite built on.
    here = [ref for ref in (PUBLIC_BASE_IMAGE, LOCAL_BASE_IMAGE) if engine.image_exists(ref)]
    assert here, f"neither {PUBLIC_BASE_IMAGE} nor {LOCAL_BASE_IMAGE} is here: scripts/test makes the latter"
    _, events = launch(unset_api, TOKEN, demo_body(f"t{RUN_ID}-base"), timeout=180)
    assert events[-1]["phase"] == "ready", events[-3:]
    dep = httpx.get(f"{unset_api}/api/deployments", headers=AUTH).json()
    dep = next(d for d in (dep["deployments"] if isinstance(dep, dict) else dep) if d["served_name"] == f"t{RUN_ID}-base")
    assert dep["image"] == demo_image, f"built on another base than {here[0]}: {dep['image']}"
    assert not any(e["phase"] == "pulling" for e in events), "nothing to pull: the base image is here"


def test_missing_base_image_is_a_clear_error_that_names_the_script(engine, tmp_path):
    absent = f"modeldeck-test/absent-base-{RUN_ID}:none"
    assert not engine.image_exists(absent)
    settings = Settings(home=tmp_path / "home", token=TOKEN, demo_base_image=absent, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as api:
        _, events = launch(api, TOKEN, demo_body(f"t{RUN_ID}-nobase"), timeout=180)
    last = events[-1]
    assert last["phase"] == "failed", events[-3:]
    assert absent in last["message"] and "could not be pulled" in last["message"], last
    hint = last["details"]["hint"]
    assert "MODELDECK_DEMO_BASE_IMAGE" in hint and absent in hint, hint


def test_hint_without_a_setting_says_to_run_make_base_image():
    from backend.base_image import missing_base_hint

    hint = missing_base_hint(PUBLIC_BASE_IMAGE, None)
    assert "scripts/make-base-image" in hint and LOCAL_BASE_IMAGE in hint

"""Property-based tests generated from the OpenAPI document: no control-API operation answers 500."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.hub_standin import HubStandin, default_repos, tiny_gguf_bytes
from tests.support.live_server import serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "fuzz-token"
# Streams that never end by themselves are exercised by test_api.py, not fuzzed.
ENDLESS = {"/api/stats/stream"}

schema = schemathesis.openapi.from_dict(create_app(Settings(token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def fuzz_api(engine, tmp_path_factory, gguf_models):
    """A real backend whose catalog is empty, so generated launches can never start a container.

    Its Hub is the stand-in (tests/support/hub_standin.py): an unreachable Hub is rightly a 502. Its model
    caches are folders of its own, so generated downloads and deletes never touch the engine's shared cache
    volumes (which other tests and a person's deployments use).
    """
    empty = tmp_path_factory.mktemp("empty-catalog")
    caches = tmp_path_factory.mktemp("fuzz-caches")
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models))) as hub:
        settings = Settings(home=tmp_path_factory.mktemp("fuzz-home"), token=TOKEN, catalog_dir=empty,
                            extra_labels={RUN_LABEL: RUN_ID}, hf_endpoint=hub.url,
                            cache_dirs={kind: caches / kind for kind in ("huggingface", "ollama")})
        with serve(create_app(settings, engine=engine)) as url:
            yield url


@schema.include(path_regex="^/api/").exclude(path=list(ENDLESS)).parametrize()
@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_control_api_never_answers_500(case, fuzz_api):
    response = case.call(base_url=fuzz_api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])

"""Property-based tests generated from the OpenAPI document: no control-API operation answers 500."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis

from backend.app import create_app
from backend.settings import Settings
from tests.support.fuzz import fuzz_backend, no_server_fault

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "fuzz-token"
# Streams that never end by themselves are exercised by test_api.py, not fuzzed.
ENDLESS = {"/api/stats/stream"}

schema = schemathesis.openapi.from_dict(create_app(Settings(token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def fuzz_api(engine, tmp_path_factory, gguf_models):
    """A real backend that generated input cannot harm (tests/support/fuzz.py says how)."""
    with fuzz_backend(engine, tmp_path_factory, gguf_models, TOKEN, "fuzz") as url:
        yield url


@schema.include(path_regex="^/api/").exclude(path=list(ENDLESS)).parametrize()
@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_control_api_never_answers_500(case, fuzz_api):
    response = case.call(base_url=fuzz_api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    case.validate_response(response, checks=[no_server_fault])

"""Schemathesis at 1,000 cases per operation over the whole API: zero 5xx, every answer true to its own schema.

The count comes from MODELDECK_FUZZ_EXAMPLES (default 1000); docs/reliability.md has the time it takes.
"""

from __future__ import annotations

import os

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error, response_schema_conformance

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "deep-fuzz-token"
EXAMPLES = int(os.environ.get("MODELDECK_FUZZ_EXAMPLES", "1000"))
ENDLESS = {"/api/stats/stream"}  # never ends by itself; test_api.py reads it

schema = schemathesis.openapi.from_dict(create_app(Settings(token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def deep_fuzz_api(engine, tmp_path_factory):
    """A real backend with an empty catalog: generated launches can never start a container."""
    settings = Settings(home=tmp_path_factory.mktemp("deep-fuzz-home"), token=TOKEN,
                        catalog_dir=tmp_path_factory.mktemp("empty-catalog"), extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url


@schema.exclude(path=list(ENDLESS)).parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                     derandomize=True, database=None)
def test_every_operation_at_1000_cases(case, deep_fuzz_api):
    response = case.call(base_url=deep_fuzz_api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

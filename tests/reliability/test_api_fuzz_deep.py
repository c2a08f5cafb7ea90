"""Schemathesis at 1,000 cases per operation over the whole API: zero 5xx, every answer true to its own schema.

The count comes from MODELDECK_FUZZ_EXAMPLES (default 1000); docs/reliability.md has the time it takes.
"""

from __future__ import annotations

import os

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import response_schema_conformance

from backend.app import create_app
from backend.settings import Settings
from tests.support.fuzz import fuzz_backend, no_server_fault

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "deep-fuzz-token"
EXAMPLES = int(os.environ.get("MODELDECK_FUZZ_EXAMPLES", "1000"))
ENDLESS = {"/api/stats/stream"}  # never ends by itself; test_api.py reads it

schema = schemathesis.openapi.from_dict(create_app(Settings(token=TOKEN)).openapi())


@pytest.fixture(scope="module")
def deep_fuzz_api(engine, tmp_path_factory, gguf_models):
    """A real backend that generated input cannot harm (tests/support/fuzz.py says how)."""
    with fuzz_backend(engine, tmp_path_factory, gguf_models, TOKEN, "deep-fuzz") as url:
        yield url


#: Operations that wait on something outside the backend at every case (the Hub stand-in, ssh, a helper
#: container, a node): each case costs 50-120 ms instead of a few, so they get a tenth of the cases, which
#: still covers every field of their schemas many times over. docs/reliability.md has the times.
OUTSIDE = r"^/api/(hub|downloads|nodes|placement|library)"


def _call(case, url: str) -> None:
    response = case.call(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    case.validate_response(response, checks=[no_server_fault, response_schema_conformance])


@schema.exclude(path=list(ENDLESS)).exclude(path_regex=OUTSIDE).parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                     derandomize=True, database=None)
def test_every_operation_at_1000_cases(case, deep_fuzz_api):
    _call(case, deep_fuzz_api)


@schema.include(path_regex=OUTSIDE).parametrize()
@hypothesis.settings(max_examples=max(1, EXAMPLES // 10), deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck), derandomize=True, database=None)
def test_operations_that_reach_outside_at_100_cases(case, deep_fuzz_api):
    _call(case, deep_fuzz_api)

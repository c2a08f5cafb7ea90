"""The backend the API fuzz tests aim at: real, on a free loopback port, with nothing generated input can harm.

Its catalog is empty, so generated launches can never start a container; its Hub is the stand-in
(tests/support/hub_standin.py), because an unreachable Hub is rightly a 502, which the no-5xx check
counts as a failure; its model caches are folders of its own, so generated downloads and deletes never
touch the engine's shared cache volumes (which other tests and a person's deployments use).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import schemathesis
from schemathesis.core.failures import ServerError

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.hub_standin import HubStandin, default_repos, tiny_gguf_bytes
from tests.support.live_server import serve


@contextmanager
def fuzz_backend(engine, tmp_path_factory: pytest.TempPathFactory, gguf_models, token: str,
                 name: str) -> Iterator[str]:
    """Serve such a backend; yields its base URL."""
    caches = tmp_path_factory.mktemp(f"{name}-caches")
    with HubStandin(default_repos(tiny_gguf_bytes(gguf_models))) as hub:
        settings = Settings(home=tmp_path_factory.mktemp(f"{name}-home"), token=token,
                            catalog_dir=tmp_path_factory.mktemp(f"{name}-empty-catalog"),
                            extra_labels={RUN_LABEL: RUN_ID}, hf_endpoint=hub.url,
                            cache_dirs={kind: caches / kind for kind in ("huggingface", "ollama")})
        with serve(create_app(settings, engine=engine)) as url:
            yield url


#: The 5xx answers that are right: ModelDeck saying that a machine outside it (a node given in the request,
#: the Hub) could not be reached or refused it. A generated ``POST /api/nodes`` names hosts such as
#: "input", which rightly give 502 ``node_unreachable``; anything else at 5xx is a fault.
OUTSIDE_CODES = frozenset({"node_unreachable", "node_auth_failed", "node_not_modeldeck", "hub_unreachable"})


@schemathesis.check
def no_server_fault(ctx, response, case) -> bool | None:
    """No 5xx, except 502/503/504 that carry ModelDeck's own error naming an outside machine."""
    if response.status_code < 500:
        return None
    try:
        code = response.json()["error"]["code"]
    except Exception:  # not ModelDeck's error shape: a fault whatever it says
        code = None
    if response.status_code in (502, 503, 504) and code in OUTSIDE_CODES:
        return None
    raise ServerError(operation=case.operation.label, status_code=response.status_code)

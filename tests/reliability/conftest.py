"""Fixtures of the reliability suite: a factory of killable backend processes, cleaned up pass or fail."""

from __future__ import annotations

import pytest

from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.backend_process import BackendProcess


@pytest.fixture()
def backends(tmp_path, demo_base_image, engine):
    """Make ``BackendProcess``es; at teardown stop them and remove the containers this test made.

    Containers are found by the run label and the test's name prefix (``t<run>-<prefix>``),
    so a test's leftovers go at once instead of at the end of the session.
    """
    made: list[BackendProcess] = []
    prefixes: list[str] = []

    def make(name: str = "home", *, prefix: str | None = None, **kw) -> BackendProcess:
        b = BackendProcess(tmp_path / name, demo_base_image=demo_base_image, **kw)
        made.append(b)
        if prefix:
            prefixes.append(prefix)
        return b

    yield make
    for b in made:
        b.stop()
    for c in engine.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
        if any(c.labels.get("modeldeck.id", "").startswith(p) for p in prefixes):
            c.remove(force=True)

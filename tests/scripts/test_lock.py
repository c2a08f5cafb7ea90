"""requirements/*.txt (written by scripts/lock) hold every dependency pyproject.toml names, pinned and hashed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def locked(name: str) -> dict[str, str]:
    """Package name -> pinned version in requirements/<name>.txt; asserts every pin carries hashes."""
    pins: dict[str, str] = {}
    entry = None
    for line in (ROOT / "requirements" / f"{name}.txt").read_text().splitlines():
        if m := PIN.match(line):
            entry = canonicalize_name(m.group(1))
            pins[entry] = m.group(2)
        elif line.strip().startswith("--hash=sha256:") and entry:
            pins.setdefault(f"{entry} hashed", "yes")
    unhashed = [p for p in pins if " " not in p and f"{p} hashed" not in pins]
    assert not unhashed, f"pins without --hash in requirements/{name}.txt: {unhashed}"
    return {p: v for p, v in pins.items() if " " not in p}


def wanted(extra: str | None) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    reqs += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    return reqs


@pytest.mark.parametrize(("lock", "extra"), [("app", None), ("test", "test")])
def test_lock_holds_every_dependency_of_pyproject_in_range(lock, extra):
    pins = locked(lock)
    stale = []
    for req in wanted(extra):
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            stale.append(f"{req} (locked: {version})")
    assert not stale, (f"requirements/{lock}.txt does not match pyproject.toml for {stale}: "
                       f"run scripts/lock and commit requirements/")


def test_app_lock_is_the_test_lock_at_the_same_versions():
    app, test = locked("app"), locked("test")
    differ = {name: (v, test.get(name)) for name, v in app.items() if test.get(name) != v}
    assert not differ, f"the app set must be what the tests ran: {differ}; run scripts/lock"

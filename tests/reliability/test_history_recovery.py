"""An unreadable or corrupt history database at start: moved aside, a fresh one used, and the API says so."""

from __future__ import annotations

import sqlite3

import pytest

from tests.reliability.support import figure

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CORRUPTIONS = {
    "garbage": b"this is not a database\n" * 200,
    # A real SQLite header, then noise: opens, fails the integrity check.
    "torn": b"SQLite format 3\x00" + bytes(range(256)) * 64,
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_history_is_moved_aside_and_reported(backends, kind):
    backend = backends(f"home-{kind}")
    backend.home.mkdir(parents=True)
    db = backend.home / "history.sqlite3"
    db.write_bytes(CORRUPTIONS[kind])
    figure(f"corrupt history ({kind}): backend start (s)", f"{backend.start():.2f}")

    engine = backend.get("/api/engine").json()
    moved = engine["history_recovered_from"]
    assert moved and moved != str(db), engine
    assert open(moved, "rb").read() == CORRUPTIONS[kind], "the old file is kept, untouched, for the person"
    assert backend.get("/api/history").json() == []
    assert backend.delete("/api/history").status_code in (200, 204)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "moved aside" in backend.log()

    # Next start: the fresh database is fine, nothing to report any more.
    backend.stop()
    backend.start()
    assert backend.get("/api/engine").json()["history_recovered_from"] is None

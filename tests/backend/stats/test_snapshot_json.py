"""Tests of the stats routes' snapshot JSON cache: one per app, never shared between apps in a process."""

from __future__ import annotations

from fastapi.testclient import TestClient

from backend.app import create_app
from backend.settings import Settings
from backend.stats import ContainerRef, StatsSampler, StatsSnapshot

from .helpers import FakeNvml, fake_gpu

TOKEN = "snapshot-json-token"


class _Fixed:
    """A sampler stand-in whose latest snapshot is fixed."""

    def __init__(self, snapshot: StatsSnapshot):
        self.snapshot = snapshot

    def latest(self) -> StatsSnapshot:
        return self.snapshot


def _none() -> list[ContainerRef]:
    return []


def _client(tmp_path, name: str, snapshot: StatsSnapshot) -> TestClient:
    # No lifespan (no Docker): the state the stats route reads is set by hand.
    app = create_app(Settings(home=tmp_path / name, token=TOKEN))
    app.state.stats = _Fixed(snapshot)
    return TestClient(app, base_url="http://127.0.0.1", headers={"Authorization": f"Bearer {TOKEN}"})


def test_two_apps_keep_their_own_snapshot_json(tmp_path, monkeypatch):
    sampler = StatsSampler(_none, nvml=FakeNvml([fake_gpu(0)]))
    first, second = sampler.sample_once(), sampler.sample_once()
    assert first is not second
    serialised = []
    original = StatsSnapshot.model_dump_json

    def counting(self, **kwargs):
        serialised.append(self)
        return original(self, **kwargs)

    monkeypatch.setattr(StatsSnapshot, "model_dump_json", counting)
    a, b = _client(tmp_path, "a", first), _client(tmp_path, "b", second)
    for client, snapshot in ((a, first), (b, second), (a, first), (b, second)):
        r = client.get("/api/stats")
        assert r.status_code == 200
        assert r.content == original(snapshot).encode()
    # A cache shared by both apps would have thrown each one's JSON away on the other's request.
    assert serialised == [first, second]
    assert a.app.state.snapshot_json is not b.app.state.snapshot_json


def test_a_new_snapshot_is_serialised_again(tmp_path):
    sampler = StatsSampler(_none, nvml=FakeNvml([fake_gpu(0)]))
    client = _client(tmp_path, "a", sampler.sample_once())
    assert client.get("/api/stats").json()["seq"] == 1
    client.app.state.stats.snapshot = sampler.sample_once()
    assert client.get("/api/stats").json()["seq"] == 2

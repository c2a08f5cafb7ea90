"""Models on demand in words, without a window: countdowns, idle time-outs, memory limits, events (desktop/lifecycle.py)."""

from __future__ import annotations

import time

import pytest

from desktop.lifecycle import (MAX_TTL_MINUTES, TTL_DEFAULT, TTL_MINUTES, TTL_NEVER, EventLog, duration_text,
                               event_text, last_events_text, mem_limit_value, memory_need_text, model_label,
                               on_demand_note, parse_iso, policy_text, ttl_choice, ttl_text, ttl_value,
                               unload_countdown)
from desktop.widgets.deployment_table import DeploymentRows

NOW = parse_iso("2026-12-02T12:00:00Z")


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def test_iso_times_with_z_offsets_and_naive_are_utc():
    assert parse_iso("2026-12-02T12:00:00Z") == parse_iso("2026-12-02T13:00:00+01:00") == NOW
    assert parse_iso("2026-12-02T12:00:00") == NOW  # naive: UTC, as the backend writes
    assert parse_iso("2026-12-02T12:00:00.250000Z") == NOW + 0.25
    assert parse_iso(None) is parse_iso("") is parse_iso("yesterday") is None


def test_durations_read_like_a_countdown():
    assert [duration_text(s) for s in (0, 0.2, 45, 60, 61, 239, 240, 3600, 5400, 86400, 90000)] == [
        "0 s", "1 s", "45 s", "1 min", "2 min", "4 min", "4 min", "1 h", "1 h 30 min", "1 d", "1 d 1 h"]
    assert ttl_text(None) == ttl_text(0) == "never"
    assert ttl_text(300) == "5 min" and ttl_text(90) == "1 min 30 s" and ttl_text(7200) == "2 h"


def test_countdown_from_unload_at():
    dep = {"ready": True, "unload_at": _iso(NOW + 235)}
    assert unload_countdown(dep, NOW) == "unloads in 4 min"
    assert unload_countdown(dep, NOW + 200) == "unloads in 35 s"
    assert unload_countdown(dep, NOW + 240) == "unloads now"
    assert unload_countdown({"ready": True, "unload_at": None}, NOW) is None


def test_status_notes_for_on_demand_deployments():
    assert on_demand_note({"loads_on_request": True, "status": "stopped"}) == "unloaded (loads on request)"
    assert on_demand_note({"ready": True, "pinned": True, "unload_at": None}) == "pinned"
    assert on_demand_note({"ready": True, "in_flight": 2, "unload_at": None}) == "2 requests in flight"
    assert on_demand_note({"ready": True, "unload_at": _iso(NOW + 60)}, NOW) == "unloads in 1 min"
    assert on_demand_note({"ready": True}) == ""


def test_table_status_says_unloaded_and_counts_down():
    base = {"recipe": "demo", "model": "demo-tiny", "gpus": [], "container_id": "c", "on_demand": True,
            "idle_ttl_s": 300.0, "effective_idle_ttl_s": 300.0, "pinned": False}
    cold = {**base, "id": "d1", "served_name": "cold", "status": "stopped", "state": "exited", "ready": False,
            "loads_on_request": True}
    warm = {**base, "id": "d2", "served_name": "warm", "status": "ready", "state": "running", "ready": True,
            "loads_on_request": False, "unload_at": _iso(NOW + 170)}
    rows = DeploymentRows()
    rows.set_deployments([cold, warm], now=NOW)
    assert rows.find("d1").status_text() == "Unloaded (loads on request)"
    assert rows.find("d2").status_text() == "Ready · unloads in 3 min"
    rows.set_deployments([cold, warm], now=NOW + 150)  # the next refresh counts down
    assert rows.find("d2").status_text() == "Ready · unloads in 20 s"


def test_policy_and_last_events_for_tooltips():
    dep = {"on_demand": True, "idle_ttl_s": None, "effective_idle_ttl_s": 600.0, "pinned": False,
           "last_load": {"seq": 3, "at": "2026-12-02T12:00:00Z", "kind": "load", "trigger": "request",
                         "served_name": "demo", "deployment_id": "demo", "duration_s": 2.14,
                         "reason": "a /v1/chat/completions request for 'demo'"},
           "last_unload": {"seq": 4, "at": "2026-12-02T12:10:00Z", "kind": "unload", "trigger": "ttl",
                           "served_name": "demo", "deployment_id": "demo", "reason": "idle for 600 s (idle_ttl_s 600)"},
           "last_eviction": None}
    assert policy_text(dep) == "loads on request · unloads when idle for 10 min (the backend's default)"
    assert policy_text({**dep, "pinned": True}) == "loads on request · pinned: never unloaded by ModelDeck"
    assert policy_text({"on_demand": False, "idle_ttl_s": 0}) == "loads only when started by hand · never unloads when idle"
    lines = last_events_text(dep)
    assert len(lines) == 2
    assert lines[0].startswith("Last load at ") and lines[0].endswith(
        "Loaded in 2.1 s: a /v1/chat/completions request for 'demo'")
    assert lines[1].endswith("Unloaded: idle for 600 s (idle_ttl_s 600)")


def test_event_sentences():
    evict = {"kind": "evict", "served_name": "small", "for_deployment": "big",
             "reason": "made room for 'big' on GPU 0: needs 4.1 GiB, 1.2 GiB free"}
    assert event_text(evict) == "small evicted for big: made room for 'big' on GPU 0: needs 4.1 GiB, 1.2 GiB free"
    assert event_text({"kind": "load_failed", "served_name": "x", "duration_s": 30.0, "reason": "exit code 1"}) == \
        "x failed to load after 30.0 s: exit code 1"


def test_idle_time_out_choices_round_trip():
    assert ttl_choice(None) == (TTL_DEFAULT, 15) and ttl_value(TTL_DEFAULT, 15) is None
    assert ttl_choice(0) == (TTL_NEVER, 15) and ttl_value(TTL_NEVER, 15) == 0
    assert ttl_choice(1800) == (TTL_MINUTES, 30) and ttl_value(TTL_MINUTES, 30) == 1800
    with pytest.raises(ValueError, match="1 to 43,200 minutes"):
        ttl_value(TTL_MINUTES, MAX_TTL_MINUTES + 1)


def test_memory_limits_in_dockers_notation():
    assert mem_limit_value("") == (None, None)
    assert mem_limit_value("2g") == ("2g", None) and mem_limit_value(" 512M ") == ("512m", None)
    assert mem_limit_value("2GiB") == ("2g", None) and mem_limit_value("1.5g") == (1610612736, None)
    assert mem_limit_value("1073741824") == (1073741824, None)
    value, problem = mem_limit_value("lots")
    assert value is None and "e.g. 512m or 2g" in problem
    assert "at least 6 MiB" in mem_limit_value("1k")[1]


def test_playground_labels_mark_models_that_are_not_loaded():
    assert model_label({"id": "demo", "state": "ready"}) == model_label({"id": "demo"}) == "demo"
    assert model_label({"id": "demo", "state": "unloaded"}) == "demo (unloaded — loads on request)"
    assert model_label({"id": "demo", "state": "loading"}) == "demo (loading…)"


def test_event_log_keeps_order_drops_repeats_and_bounds_itself():
    log = EventLog(limit=3)

    def ev(seq: int, kind: str = "load", dep: str = "a") -> dict:
        return {"seq": seq, "at": _iso(NOW + seq), "kind": kind, "deployment_id": dep, "served_name": dep,
                "trigger": "request", "reason": ""}

    assert [e.seq for e in log.add({"events": [ev(1), ev(2, "unload")], "last_seq": 2})] == [1, 2]
    assert log.last_seq == 2 and log.version == 1
    assert log.add({"events": [ev(2, "unload")], "last_seq": 2}) == [] and log.version == 1  # overlap: no repeat
    log.add({"events": [ev(3, dep="b"), ev(4, "evict")], "last_seq": 4})
    assert [e.seq for e in log.events] == [2, 3, 4]  # the oldest went
    assert [e.seq for e in log.between(NOW, NOW + 10, "a")] == [2, 4]
    assert [e.seq for e in log.nearest(NOW + 3.2, 1.0)] == [3, 4]
    assert [e.seq for e in log.newest(2)] == [4, 3]
    assert log.add({"events": [], "last_seq": 9}) == [] and log.last_seq == 9  # the backend's cursor moves on
    assert log.add("not an answer") == [] and log.add({"events": [{"seq": "x"}, {"seq": 10, "at": "bad"}]}) == []


def test_memory_need_says_how_much_where_and_why():
    host = {"memory": {"need_bytes": 512 * 2**20, "where": "host", "gpus": [], "basis": "mem_limit 0.5 GiB"}}
    assert memory_need_text(host) == "Counted as needing 512.0 MiB of host memory (mem_limit 0.5 GiB)"
    gpu = {"memory": {"need_bytes": 4 * 2**30, "where": "gpu", "gpus": ["0"], "basis": "measured"}}
    assert memory_need_text(gpu) == "Counted as needing 4.0 GiB of GPU 0 (measured)"
    unknown = {"memory": {"need_bytes": None, "where": "gpu", "gpus": ["all"], "basis": "no estimate"}}
    assert memory_need_text(unknown) == "Counted as needing an unknown amount of its GPUs (no estimate)"
    assert memory_need_text({}) is None

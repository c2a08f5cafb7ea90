"""The table states issue 13's goals and its "met" column follows them: bench/report.py on results shaped as a run's.

Pure functions on made-up figures (no server): the verdict of each goal on either side of its
limit, the event-delay goal computed from nginx's figure of the same run, and the desktop's
"each of three runs".
"""

from __future__ import annotations

import copy

import pytest

from bench import report


def _streams(p95: float = 3.0, p99: float = 5.0, ttft50: float = 5.0, ttft99: float = 10.0, **extra) -> dict:
    return {"streams": 256, "completed": 256, "failed": 0, "events": 1000, "merged": 0, "lost": 0,
            "ttft_p50_ms": ttft50, "ttft_p99_ms": ttft99, "transit_p50_ms": 1.0, "transit_p95_ms": p95,
            "transit_p99_ms": p99, **extra}


def _target(latency=(0.15, 0.35), rps=30_000.0, ttft64=(6.0, 13.0), event_p99=0.6, many_p95=3.0,
            relay=(20_400.0, 40.0), rps_get=50_000.0) -> dict:
    return {
        "latency": {"p50_ms": latency[0], "p99_ms": latency[1], "n": 3000, "errors": 0},
        "throughput": {"rps": rps, "tool": "wrk"},
        "ttft_1": _streams(ttft50=0.2, ttft99=0.5),
        "ttft_64": _streams(ttft50=ttft64[0], ttft99=ttft64[1]),
        "interchunk": _streams(p99=event_p99, slices=6),
        "many_streams": _streams(p95=many_p95, offered_events_per_s=20_480.0, events_per_s=relay[0],
                                 rate_window_s=4.9, wall_s=5.0, cpu_pct={"target": relay[1], "upstream": 25.0},
                                 processes={"target": 1, "upstream": 1}, client_cpu_pct=35.0),
        "rps_models": {"rps": rps_get, "tool": "wrk"},
        "rps_stats": {"rps": rps_get, "tool": "wrk"},
    }


def _run() -> dict:
    """A run where ModelDeck meets every goal by a margin: direct, ModelDeck and nginx columns."""
    return {
        "direct": _target(),
        "ModelDeck": _target(latency=(0.35, 1.2), rps=20_000.0, ttft64=(10.0, 25.0), event_p99=0.7,
                             many_p95=6.0, relay=(20_300.0, 60.0), rps_get=25_000.0),
        "nginx": _target(latency=(0.2, 0.4), event_p99=0.65),
        "rss": {"idle_mb": 80.0, "after_mb": 84.0, "requests": 10_000, "errors": 0},
        "sampler": {"sampler_cpu_pct": 0.3, "dockerd_cpu_pct_delta": 0.1, "containers": 10},
        "desktop": {"worst_stall_ms": 40.0, "worst_stall_runs_ms": [30.0, 40.0, 35.0]},
    }


def _row(results: dict, key: str) -> dict:
    return next(row for row in report.figures(results) if row["key"] == key)


def test_the_goal_texts_are_issue_13s() -> None:
    goals = {row["key"]: row["goal"] for row in report.figures(_run())}
    assert goals["latency"] == "added p50 ≤ 0.3 ms, p99 ≤ 1 ms"
    assert goals["throughput"] == "≥ 0.5× direct"
    assert goals["ttft_64"] == "added p50 ≤ 5 ms, p99 ≤ 15 ms"
    assert goals["interchunk"].startswith("added p99 ≤ nginx's + 0.1 ms")
    assert goals["fidelity"] == "zero"
    assert goals["many_streams"] == "all complete; p95 ≤ 10 ms"
    assert goals["many_streams_relay"] == "≥ 20,000 events/s; backend < 100% of one core"
    assert goals["rps_models"] == goals["rps_stats"] == "≥ 20,000"
    assert goals["sampler"] == "≤ 0.5% of one core"
    assert goals["desktop_worst_stall_ms"] == "≤ 50 ms in each of 3 runs"
    assert goals["rss"] == "growth ≤ 10%"


def test_every_goal_is_met_by_a_run_within_them() -> None:
    verdicts = {row["key"]: row["verdict"] for row in report.figures(_run())}
    for key in ("latency", "throughput", "ttft_64", "interchunk", "fidelity", "many_streams", "many_streams_relay",
                "rps_models", "rps_stats", "sampler", "rss", "desktop_worst_stall_ms"):
        assert verdicts[key] == "met", (key, verdicts[key])


@pytest.mark.parametrize(("key", "change"), [
    ("latency", lambda r: r["ModelDeck"]["latency"].update(p50_ms=0.46)),  # added p50 0.31 ms
    ("latency", lambda r: r["ModelDeck"]["latency"].update(p99_ms=1.36)),  # added p99 1.01 ms
    ("throughput", lambda r: r["ModelDeck"]["throughput"].update(rps=14_999.0)),  # 0.49999× direct's 30,000
    ("ttft_64", lambda r: r["ModelDeck"]["ttft_64"].update(ttft_p50_ms=11.1)),  # added p50 5.1 ms
    ("ttft_64", lambda r: r["ModelDeck"]["ttft_64"].update(ttft_p99_ms=28.1)),  # added p99 15.1 ms
    ("many_streams", lambda r: r["ModelDeck"]["many_streams"].update(transit_p95_ms=10.1)),
    ("many_streams", lambda r: r["ModelDeck"]["many_streams"].update(completed=255)),
    ("many_streams_relay", lambda r: r["ModelDeck"]["many_streams"].update(events_per_s=19_999.0)),
    ("many_streams_relay", lambda r: r["ModelDeck"]["many_streams"]["cpu_pct"].update(target=100.0)),
    ("rps_models", lambda r: r["ModelDeck"]["rps_models"].update(rps=19_999.0)),
    ("rps_stats", lambda r: r["ModelDeck"]["rps_stats"].update(rps=19_999.0)),
    ("sampler", lambda r: r["sampler"].update(sampler_cpu_pct=0.51)),
    ("rss", lambda r: r["rss"].update(after_mb=88.1)),  # +10.1%
    ("fidelity", lambda r: r["ModelDeck"]["many_streams"].update(lost=1)),
])
def test_a_figure_just_past_its_goal_is_missed(key, change) -> None:
    results = copy.deepcopy(_run())
    change(results)
    assert _row(results, key)["verdict"] == "**missed**"


def test_the_event_delay_goal_is_nginxs_added_p99_plus_a_tenth_of_a_ms() -> None:
    results = _run()  # direct p99 0.6, nginx 0.65 (+0.05): ModelDeck may add up to 0.15 ms
    row = _row(results, "interchunk")
    assert "≤ +0.150 ms" in row["goal"]
    results["ModelDeck"]["interchunk"]["transit_p99_ms"] = 0.74  # +0.14
    assert _row(results, "interchunk")["verdict"] == "met"
    results["ModelDeck"]["interchunk"]["transit_p99_ms"] = 0.76  # +0.16
    assert _row(results, "interchunk")["verdict"] == "**missed**"
    results["nginx"]["interchunk"]["transit_p99_ms"] = 0.70  # nginx +0.10: now up to +0.20 is allowed
    assert _row(results, "interchunk")["verdict"] == "met"


def test_without_nginx_the_event_delay_goal_has_no_verdict() -> None:
    results = _run()
    del results["nginx"]
    row = _row(results, "interchunk")
    assert row["verdict"] == "—"
    assert "nginx not measured" in row["goal"]


def test_the_desktop_stall_goal_needs_each_of_three_runs() -> None:
    results = _run()
    results["desktop"] = {"worst_stall_ms": 60.0, "worst_stall_runs_ms": [30.0, 60.0, 20.0]}
    row = _row(results, "desktop_worst_stall_ms")
    assert row["verdict"] == "**missed**"
    assert "30.0, 60.0, 20.0" in row["cells"]["ModelDeck"]
    results["desktop"] = {"worst_stall_ms": 30.0, "worst_stall_runs_ms": [30.0]}  # quick mode: one run
    assert _row(results, "desktop_worst_stall_ms")["verdict"] == "—"
    results["desktop"] = {"worst_stall_ms": 70.0, "worst_stall_runs_ms": [70.0]}  # one run over is a miss already
    assert _row(results, "desktop_worst_stall_ms")["verdict"] == "**missed**"


def test_the_relay_row_names_the_backends_processes_and_the_cpu_beside_it() -> None:
    results = _run()
    results["ModelDeck"]["many_streams"]["processes"]["target"] = 3
    row = _row(results, "many_streams_relay")
    assert row["cells"]["ModelDeck"] == "20,300 events/s; CPU 60% of a core (3 processes)"
    assert "ModelDeck: upstream 25%, client 35%" in row["vs"]
    assert row["value"] == (20_300.0, 60.0)


def test_a_failed_figure_reads_as_not_measured_not_as_met() -> None:
    results = _run()
    results["ModelDeck"]["many_streams"] = {"error": "TimeoutError: "}
    for key in ("many_streams", "many_streams_relay"):
        row = _row(results, key)
        assert (row["value"], row["verdict"]) == (None, "—"), row

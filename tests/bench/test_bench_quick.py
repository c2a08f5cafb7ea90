"""`python -m bench --quick` as a test: every figure of the issue is produced and no streamed event is merged or lost.

Never timings: speed is measured by the benchmark itself (docs/benchmarks.md), not here.
nginx and wrk are optional: without nginx its column is absent; without wrk the
requests/s figures come from the Python client (the test says which it used).
"""

from __future__ import annotations

import asyncio
import shutil

import pytest

from backend.app import create_app
from backend.settings import Settings
from bench import report
from bench.__main__ import run
from tests.conftest import RUN_ID, RUN_LABEL, skip_or_fail
from tests.support.live_server import serve
from tests.support.deployments import launch_ready

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.gui]

STREAMED = ("ttft_1", "ttft_64", "interchunk", "many_streams")


@pytest.fixture(scope="module")
def bystander(engine, demo_image, demo_base_image, tmp_path_factory):
    """A deployment the benchmark did not create, running beside it (as a person's script's would be).

    Yields its container and (id, StartedAt) from before the run; removed after.
    """
    settings = Settings(home=tmp_path_factory.mktemp("bystander-home"), token="bystander",
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        d = launch_ready(url, "bystander", {"recipe": "demo", "model": "demo-tiny",
                                            "served_name": f"t{RUN_ID}-bystander"})
    container = engine.client.containers.get(d["container_id"])
    yield container, (container.id, container.attrs["State"]["StartedAt"])
    container.remove(force=True)


@pytest.fixture(scope="module")
def quick(engine, demo_base_image, bystander) -> tuple[dict, list[str]]:
    """One quick run (LiteLLM left out: its start-up alone takes longer than the run)."""
    return asyncio.run(run(quick=True, with_litellm=False, sleep_image=demo_base_image, log=lambda _m: None))


def test_a_deployment_the_bench_did_not_create_is_left_running(quick, bystander) -> None:
    container, (container_id, started_at) = bystander
    container.reload()
    assert container.status == "running", f"the benchmark stopped a deployment it did not create: {container.status}"
    assert (container.id, container.attrs["State"]["StartedAt"]) == (container_id, started_at), \
        "the benchmark restarted or replaced a deployment it did not create"


def test_every_figure_is_produced(quick) -> None:
    results, _notes = quick
    missing = [row["figure"] for row in report.figures(results) if row["value"] is None]
    assert not missing, f"figures not produced: {missing}; results: {results}"


@pytest.mark.parametrize("target", ["direct", "ModelDeck"])
def test_streamed_events_are_neither_merged_nor_lost(quick, target) -> None:
    results, _notes = quick
    for figure in STREAMED:
        r = results[target][figure]
        assert "error" not in r, r
        assert r["events"] > 0, (figure, r)
        assert (r["merged"], r["lost"], r["failed"]) == (0, 0, 0), (figure, r)
        assert r["completed"] == r["streams"], (figure, r)


def test_256_streams_at_80_tok_s_report_events_per_s_and_cpu(quick) -> None:
    """Issue 13's load: the rate offered, the rate relayed, and the CPU of the backend (and of what shares its cores)."""
    results, _notes = quick
    m = results["ModelDeck"]["many_streams"]
    assert (m["streams"], m["offered_events_per_s"]) == (256, 20_480), m
    assert m["events_per_s"] > 0 and m["rate_window_s"] > 0, m
    assert m["cpu_pct"]["target"] > 0, f"no CPU time read for the backend from /proc/<pid>/stat: {m}"
    assert m["cpu_pct"]["upstream"] > 0 and m["client_cpu_pct"] > 0, m
    assert m["processes"]["target"] >= 1, m
    assert "upstream" not in results["direct"]["many_streams"]["cpu_pct"], "direct's target is the upstream itself"


def test_latency_and_event_delay_were_measured_with_the_targets_taking_turns(quick) -> None:
    results, _notes = quick
    for target in ("direct", "ModelDeck"):
        assert results[target]["latency"]["n"] == 40 and results[target]["latency"]["errors"] == 0, results[target]
        assert results[target]["latency"]["slices"] == 2, results[target]["latency"]
        assert results[target]["interchunk"]["slices"] == 1, results[target]["interchunk"]


def test_nginx_column_when_installed(quick) -> None:
    from bench.targets import nginx_binary
    if nginx_binary() is None:
        skip_or_fail("nginx is not installed (apt-get install nginx-light; scripts/test does): its column is left out")
    results, _notes = quick
    for figure in STREAMED:
        assert results["nginx"][figure]["merged"] == results["nginx"][figure]["lost"] == 0


def test_requests_per_s_tool(quick) -> None:
    results, _notes = quick
    tool = results["ModelDeck"]["rps_models"]["tool"]
    assert tool == ("wrk" if shutil.which("wrk") else "python client")
    assert results["ModelDeck"]["rps_stats"]["errors"] == 0
    assert results["ModelDeck"]["throughput"]["errors"] == 0


def test_markdown_has_a_row_per_figure(quick) -> None:
    results, notes = quick
    text = report.markdown(results, {"CPU": "test"}, notes)
    assert text.count("\n| ") >= len(report.figures(results)) + 1


def test_suite_runner_overhead_runs_every_case(quick) -> None:
    """The runner side completed every run without an errored cell, and the client side got every stream whole."""
    results, _notes = quick
    so = results["suite_overhead"]
    assert "error" not in so, so
    assert so["problems"] == [], so
    assert len(so["runner_s"]) == len(so["client_s"]) == 3, so
    assert min(so["client_s"]) >= so["ideal_s"] * 0.9, f"the upstream's pacing was not applied: {so}"


def test_cold_start_overhead_measures_the_demo_in_pairs(quick) -> None:
    """Issue 14's row: the demo was loaded on request through ModelDeck and started directly, twice each."""
    results, _notes = quick
    demo = results["cold_start"]["runtimes"]["demo"]
    assert "error" not in demo, demo
    assert len(demo["cold_ms"]) == len(demo["direct_ready_ms"]) == 2, demo
    assert min(demo["direct_ready_ms"]) > 0 and min(demo["cold_ms"]) > 0, demo
    assert demo["direct_first_byte_ms"][0] >= demo["direct_ready_ms"][0], demo


def test_library_listing_reads_the_sparse_gguf_header_only(quick) -> None:
    """Issue 15's row: the sparse GGUF is listed with its size and header metadata, and its data stayed a hole."""
    results, _notes = quick
    ll = results["library_listing"]
    assert "error" not in ll, ll
    assert ll["problems"] == [], ll
    assert len(ll["times_s"]) == ll["runs"] == 3, ll
    assert ll["on_disk_bytes"] < ll["file_bytes"] // 100, f"the GGUF was not sparse: {ll}"

"""Suite runs through a real backend against real demo containers: 400 cells with figures, checks, cancel,
ratings, export, rerun (same answers for the same seeds; a changed image digest said)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.checks import evaluate_all
from backend.settings import REPO_ROOT, Settings
from backend.suites import Check
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch_ready, wait_served
from tests.support.live_server import serve
from tests.support.sse import sse_events
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "suite-runs-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"DEMO_TOKEN_DELAY": "0.002"}
SLOW = {"DEMO_TOKEN_DELAY": "0.05"}
ANIMALS = ["fox", "crow", "owl", "wolf", "lion", "mouse", "hare", "tortoise", "ant", "grasshopper"]
PARAMS = [{"label": "cold", "temperature": 0.2, "max_tokens": 12, "seed": 7},
          {"label": "warm", "temperature": 1.0, "max_tokens": 12, "seed": 11}]


def _settings(home: Path, demo_base_image: str, catalog_dir: Path | None = None) -> Settings:
    return Settings(home=home, token=TOKEN, demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID},
                    **({"catalog_dir": catalog_dir} if catalog_dir else {}))


def _launch(url: str, served: str, env: dict[str, str]) -> str:
    dep = launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served, "env": env})
    wait_served(url, TOKEN, served)
    return dep["id"]


def _suite(url: str, cases: list[dict], **more) -> str:
    r = httpx.post(f"{url}/api/suites", headers=AUTH, timeout=30,
                   json={"name": f"t{RUN_ID} suite", "cases": cases, **more})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _start(url: str, suite_id: str, body: dict) -> dict:
    r = httpx.post(f"{url}/api/suites/{suite_id}/runs", headers=AUTH, json=body, timeout=60)
    assert r.status_code == 202, r.text
    return r.json()


def _run(url: str, run_id: str) -> dict:
    r = httpx.get(f"{url}/api/runs/{run_id}", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _follow(url: str, run_id: str, timeout: float = 300) -> tuple[list[dict], dict]:
    """(the cell events, the end summary) of a run, read from its event stream."""
    cells, end = [], None
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", headers=AUTH, timeout=timeout) as s:
        assert s.status_code == 200
        for name, data in sse_events(s):
            if name == "cell":
                cells.append(json.loads(data))
            elif name == "end":
                end = json.loads(data)
                break
    assert end is not None
    return cells, end


def _requests(url: str, served: str) -> int:
    models = httpx.get(f"{url}/api/stats", headers=AUTH, timeout=10).json()["requests"]["models"]
    return (models.get(served) or {}).get("requests", 0)


def _demo_health(url: str, dep_id: str) -> dict:
    port = httpx.get(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=10).json()["host_port"]
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()


@pytest.fixture(scope="module")
def deck(engine, demo_image, demo_base_image, tmp_path_factory):
    """(url, [served names]) of a real backend with two fast demos and a slow one."""
    names = [f"t{RUN_ID}-suite-a", f"t{RUN_ID}-suite-b", f"t{RUN_ID}-suite-slow"]
    with serve(create_app(_settings(tmp_path_factory.mktemp("suite-runs-home"), demo_base_image), engine=engine)) as url:
        ids = [_launch(url, names[0], FAST), _launch(url, names[1], FAST), _launch(url, names[2], SLOW)]
        yield url, names, ids
        for dep_id in ids:
            httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


@pytest.fixture(scope="module")
def big_run(deck):
    """A 100-case suite × 2 deployments × 2 parameter sets, run to the end: (url, names, run_id, cell events, end)."""
    url, names, _ = deck
    cases = [{"prompt": "Tell me about the {{animal}} and the {{other}}.",
              "variables": {"animal": ANIMALS[i % 10], "other": ANIMALS[(i // 10) % 5]}} for i in range(100)]
    suite_id = _suite(url, cases, checks=[{"kind": "max_length", "value": 100000}])
    before = [_requests(url, n) for n in names[:2]]
    summary = _start(url, suite_id, {"deployments": names[:2], "parameter_sets": PARAMS, "concurrency": 4})
    assert (summary["total"], summary["status"]) == (400, "queued")
    cells, end = _follow(url, summary["id"])
    # The proxy records a request after its last byte went out, a moment after the runner read it.
    def counted() -> list[int] | None:
        d = [_requests(url, n) - b for n, b in zip(names[:2], before)]
        return d if min(d) >= 200 else None

    sent = wait_until(counted, 10, what="200 requests per deployment in /api/stats")
    return url, names, summary["id"], cells, end, sent


def test_400_cells_complete_with_figures(big_run) -> None:
    url, names, run_id, events, end, sent = big_run
    assert (end["status"], end["total"], end["done"], end["errors"]) == ("completed", 400, 400, 0)
    assert len(events) == 400 and len({c["id"] for c in events}) == 400
    # Exactly one request per cell went through /v1 to each deployment (200 cells each).
    assert sent == [200, 200]
    run = _run(url, run_id)
    assert [c["key"] for c in run["columns"]] == [f"{n}|{p['label']}" for n in names[:2] for p in PARAMS]
    assert len(run["cases"]) == 100 and run["cases"][0]["preview"] == "Tell me about the fox and the fox."
    cells = run["cells"]
    assert len(cells) == 400 and {c["status"] for c in cells} == {"done"}
    for c in cells:
        assert c["text"].strip(), c
        assert 0 < c["ttft_s"] <= c["duration_s"], c
        assert c["prompt_tokens"] > 0 and 0 < c["completion_tokens"] <= 12, c
        assert c["tokens_per_s"] > 0 and c["finish_reason"] in ("stop", "length"), c
        assert c["passed"] is True and [k["kind"] for k in c["checks"]] == ["max_length"]
    # The streamed events are the stored cells.
    assert sorted(events, key=lambda c: c["id"]) == sorted(cells, key=lambda c: c["id"])
    for key, s in run["summary"].items():
        assert (s["cells"], s["done"], s["errors"], s["checks_total"], s["checks_passed"]) == (100, 100, 0, 100, 100), key
        assert s["pass_rate"] == 1.0
        assert 0 < s["ttft_p50"] <= s["ttft_p95"] and 0 < s["latency_p50"] <= s["latency_p95"]
        assert s["tokens_per_s_median"] > 0 and s["total_s"] > 0
    prov = run["provenance"]
    assert prov["modeldeck_version"] and prov["repetitions"] == 1 and prov["seeds"] == {"cold": 7, "warm": 11}
    for n in names[:2]:
        d = prov["deployments"][n]
        assert d["recipe"] == "demo" and d["model"] == "demo-tiny" and d["image_digest"].startswith("sha256:")
        assert "--served-name" in d["args"] and n in d["args"]
    # The same seed answers the same prompt the same way, in every column that shares it.
    by = {(c["case_id"], c["column"]): c["text"] for c in cells}
    for column in run["columns"]:  # cases 51..100 repeat the prompts of 1..50
        assert all(by[(f"case-{i}", column["key"])] == by[(f"case-{i + 50}", column["key"])] for i in range(1, 51))


def test_export_csv_jsonl_md(big_run) -> None:
    url, names, run_id, *_ = big_run
    cells = {c["id"]: c for c in _run(url, run_id)["cells"]}
    r = httpx.get(f"{url}/api/runs/{run_id}/export", params={"format": "csv"}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="{run_id}.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 400
    for row in rows:
        c = cells[int(row["cell_id"])]
        assert row["text"] == c["text"] and float(row["ttft_s"]) == c["ttft_s"]
        assert int(row["completion_tokens"]) == c["completion_tokens"] and f"{row['deployment']}|{row['parameter_set']}" == c["column"]
    lines = httpx.get(f"{url}/api/runs/{run_id}/export", params={"format": "jsonl"}, headers=AUTH,
                      timeout=60).text.splitlines()
    assert len(lines) == 400
    first = json.loads(lines[0])
    assert first["text"] == cells[first["cell_id"]]["text"] and first["parameters"]["seed"] in (7, 11)
    md = httpx.get(f"{url}/api/runs/{run_id}/export", params={"format": "md"}, headers=AUTH, timeout=60)
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.count("\n| case-") == 400 and "## Columns" in md.text and "100% (100/100)" in md.text
    bad = httpx.get(f"{url}/api/runs/{run_id}/export", params={"format": "xlsx"}, headers=AUTH, timeout=10)
    assert bad.status_code == 422 and "format" in bad.json()["error"]["message"]


def test_rating_and_note_are_kept(big_run) -> None:
    url, _, run_id, *_ = big_run
    cell = _run(url, run_id)["cells"][5]
    r = httpx.patch(f"{url}/api/runs/{run_id}/cells/{cell['id']}", headers=AUTH, json={"rating": 4, "note": "terse"})
    assert r.status_code == 200 and (r.json()["rating"], r.json()["note"]) == (4, "terse")
    stored = next(c for c in _run(url, run_id)["cells"] if c["id"] == cell["id"])
    assert (stored["rating"], stored["note"], stored["text"]) == (4, "terse", cell["text"])
    assert httpx.patch(f"{url}/api/runs/{run_id}/cells/{cell['id']}", headers=AUTH, json={"rating": 6}).status_code == 422
    missing = httpx.patch(f"{url}/api/runs/{run_id}/cells/999999999", headers=AUTH, json={"rating": 1})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "cell_not_found"
    assert httpx.get(f"{url}/api/runs/run-nope", headers=AUTH).json()["error"]["code"] == "run_not_found"
    rows = httpx.get(f"{url}/api/runs/{run_id}/export?format=jsonl", headers=AUTH, timeout=60).text.splitlines()
    assert {(j["rating"], j["note"]) for j in map(json.loads, rows) if j["cell_id"] == cell["id"]} == {(4, "terse")}


def test_rerun_repeats_the_seeded_answers(big_run) -> None:
    url, names, run_id, *_ = big_run
    r = httpx.post(f"{url}/api/runs/{run_id}/rerun", headers=AUTH, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["differences"] == []
    again = r.json()["run"]
    assert again["rerun_of"] == run_id and again["total"] == 400
    _, end = _follow(url, again["id"])
    assert end["status"] == "completed" and end["errors"] == 0
    texts = lambda rid: {(c["case_id"], c["column"]): c["text"] for c in _run(url, rid)["cells"]}  # noqa: E731
    assert texts(again["id"]) == texts(run_id)
    assert [s["id"] for s in httpx.get(f"{url}/api/runs", headers=AUTH).json()][:2] == [again["id"], run_id]


def test_checks_are_evaluated_in_cells(deck) -> None:
    url, names, _ = deck
    # Each kind with a check the demo's prose passes and one it fails.
    checks = [{"kind": "contains", "value": " "}, {"kind": "contains", "value": "zq-never"},
              {"kind": "not_contains", "value": "zq-never"}, {"kind": "not_contains", "value": " "},
              {"kind": "regex", "value": r"\w+"}, {"kind": "regex", "value": r"^\d{9}$"},
              {"kind": "equals", "value": "zq-never"}, {"kind": "json"},
              {"kind": "json_schema", "value": {"type": "object"}}, {"kind": "max_length", "value": 100000},
              {"kind": "max_length", "value": 1}]
    expected = [True, False, True, False, True, False, False, False, False, True, False]
    suite_id = _suite(url, [{"prompt": "Tell me about the fox.", "checks": checks[:6]},
                            {"prompt": "What did the crow say?", "checks": checks[6:],
                             "expected": "something"}])
    summary = _start(url, suite_id, {"deployments": [names[0]], "parameter_sets": [{"label": "p", "max_tokens": 8,
                                                                                     "seed": 3}]})
    _, end = _follow(url, summary["id"])
    assert end["status"] == "completed"
    run = _run(url, summary["id"])
    got = []
    for cell, own in zip(run["cells"], (checks[:6], checks[6:])):
        assert [r["passed"] for r in cell["checks"]] == [r.passed for r in evaluate_all(
            [Check.model_validate(c) for c in own], cell["text"])]
        assert cell["passed"] is False and all(r["detail"] for r in cell["checks"])
        got += [r["passed"] for r in cell["checks"]]
    assert got == expected
    s = run["summary"][f"{names[0]}|p"]
    assert (s["checks_total"], s["checks_passed"]) == (11, 4) and s["pass_rate"] == pytest.approx(4 / 11)


def test_cancel_stops_requests_and_cancels_the_rest(deck) -> None:
    url, names, ids = deck
    slow, slow_id = names[2], ids[2]
    suite_id = _suite(url, [{"prompt": f"Tell me about the {a}."} for a in ANIMALS * 5])
    before = _demo_health(url, slow_id)["total_generations"]
    summary = _start(url, suite_id, {"deployments": [slow], "parameter_sets": [{"label": "p", "max_tokens": 20}],
                                     "concurrency": 2})
    run_id = summary["id"]
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", headers=AUTH, timeout=120) as s:
        done = 0
        for name, _ in sse_events(s):
            done += name == "cell"
            if done >= 3:
                break
    # Its suite cannot be deleted while it runs.
    assert httpx.delete(f"{url}/api/suites/{suite_id}", headers=AUTH, timeout=10).status_code == 409
    r = httpx.post(f"{url}/api/runs/{run_id}/cancel", headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    run = _run(url, run_id)
    statuses = [c["status"] for c in run["cells"]]
    finished = statuses.count("done")
    assert finished >= 3 and statuses.count("cancelled") == 50 - finished and "pending" not in statuses
    # The requests in flight were closed (the demo counts them cancelled), and no request followed.
    health = wait_until(lambda: (h := _demo_health(url, slow_id))["active_generations"] == 0 and h, 30,
                        what="the slow demo to have no generation running")
    sent = health["total_generations"] - before
    assert finished <= sent <= finished + 2
    one = httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=60,
                     json={"model": slow, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert one.status_code == 200
    assert _demo_health(url, slow_id)["total_generations"] - before == sent + 1
    # The end was sent to a late follower too, and cancelling again changes nothing.
    _, end = _follow(url, run_id, timeout=10)
    assert end["status"] == "cancelled"
    assert httpx.post(f"{url}/api/runs/{run_id}/cancel", headers=AUTH).json()["done"] == 50
    assert httpx.delete(f"{url}/api/runs/{run_id}", headers=AUTH).status_code == 204
    assert httpx.get(f"{url}/api/runs/{run_id}", headers=AUTH).status_code == 404
    assert httpx.delete(f"{url}/api/suites/{suite_id}", headers=AUTH, timeout=10).status_code == 204


def test_a_run_on_a_missing_deployment_records_the_error(deck) -> None:
    url, names, _ = deck
    suite_id = _suite(url, [{"prompt": "hello"}])
    summary = _start(url, suite_id, {"deployments": [names[0], f"t{RUN_ID}-nobody"]})
    _, end = _follow(url, summary["id"])
    assert (end["status"], end["done"], end["errors"]) == ("completed", 2, 1)
    run = _run(url, summary["id"])
    bad = next(c for c in run["cells"] if c["column"].startswith(f"t{RUN_ID}-nobody"))
    assert bad["status"] == "error" and bad["error"].startswith("HTTP 404:") and "does not exist" in bad["error"]
    assert run["provenance"]["deployments"][f"t{RUN_ID}-nobody"]["missing"] is True
    # A malformed run request is refused before anything runs.
    r = httpx.post(f"{url}/api/suites/{suite_id}/runs", headers=AUTH, json={"deployments": [names[0], names[0]]})
    assert r.status_code == 422 and "named twice" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/api/suites/nope-suite/runs", headers=AUTH, json={"deployments": [names[0]]})
    assert r.status_code == 404


@pytest.fixture()
def retag_backend(engine, demo_image, demo_base_image, tmp_path):
    """(url, catalog image ref) of a backend whose demo recipe runs a tagged image instead of building one."""
    ref = f"modeldeck-suite-test/demo:t{RUN_ID}"
    engine.client.images.get(demo_image).tag(ref)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    recipe = (REPO_ROOT / "containers" / "demo.toml").read_text()
    assert 'build = "demo"' in recipe
    (catalog / "demo.toml").write_text(recipe.replace('build = "demo"', f'ref = "{ref}"'))
    shutil.copytree(REPO_ROOT / "containers" / "demo", catalog / "demo", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        with serve(create_app(_settings(tmp_path / "home", demo_base_image, catalog), engine=engine)) as url:
            yield url, ref
    finally:
        try:
            engine.client.images.remove(ref, force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


def test_rerun_says_the_image_digest_changed(engine, retag_backend) -> None:
    url, ref = retag_backend
    served = f"t{RUN_ID}-suite-retag"
    dep_id = _launch(url, served, FAST)
    try:
        suite_id = _suite(url, [{"prompt": "Tell me about the owl."}])
        first = _start(url, suite_id, {"deployments": [served]})
        _follow(url, first["id"])
        old = _run(url, first["id"])["provenance"]["deployments"][served]["image_digest"]
        # A new image under the same tag (what a `docker pull` of a moved tag does), and the deployment
        # launched again from it under the same name.
        image, _ = engine.client.images.build(
            fileobj=io.BytesIO(f"FROM {ref}\nLABEL {RUN_LABEL}={RUN_ID} modeldeck.test.rebuilt=1\n".encode()),
            tag=ref, rm=True)
        assert image.id != old
        assert httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60).status_code == 204
        dep_id = _launch(url, served, FAST)
        r = httpx.post(f"{url}/api/runs/{first['id']}/rerun", headers=AUTH, timeout=60)
        assert r.status_code == 202, r.text
        assert r.json()["differences"] == [f"{served}: image digest {old} → {image.id}"]
        _, end = _follow(url, r.json()["run"]["id"])
        assert end["status"] == "completed" and end["errors"] == 0
        assert _run(url, end["id"])["provenance"]["deployments"][served]["image_digest"] == image.id
    finally:
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)

"""A suite run on a real runtime ModelDeck did not write: llama.cpp's llama-server with a local GGUF.

The figures are llama-server's own (its usage counts), and the run's provenance names the GGUF by the
sha256 of the file, so a changed model file is a changed revision.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch
from tests.support.live_server import serve
from tests.support.sse import sse_events

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "suite-llamacpp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def gguf(gguf_models) -> Path:
    return gguf_models / "tiny" / "tiny-llama.gguf"


@pytest.fixture(scope="module")
def llama(engine, gguf, demo_base_image, llamacpp_image, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("suite-llama-home"), token=TOKEN, model_dirs=[gguf.parent.parent],
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    served = f"t{RUN_ID}-suite-llama"
    with serve(create_app(settings, engine=engine)) as url:
        dep_id, events = launch(url, TOKEN, {"recipe": "llama-cpp", "served_name": served, "image_source": "local",
                                             "model": str(gguf)}, timeout=180)
        assert events[-1]["phase"] == "ready", events[-5:]
        yield url, served
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


def test_a_suite_on_llama_cpp_has_its_figures_and_the_gguf_revision(llama, gguf) -> None:
    url, served = llama
    r = httpx.post(f"{url}/api/suites", headers=AUTH, timeout=30, json={
        "name": "llama", "system_prompt": "Answer briefly.", "checks": [{"kind": "max_length", "value": 100000}],
        "cases": [{"prompt": "Say something about {{thing}}.", "variables": {"thing": t}}
                  for t in ("rain", "stone", "river", "bread", "light", "salt")]})
    assert r.status_code == 201, r.text
    params = [{"label": "greedy", "temperature": 0, "max_tokens": 8, "seed": 1},
              {"label": "hot", "temperature": 1.0, "top_p": 0.9, "max_tokens": 8, "seed": 2}]
    r = httpx.post(f"{url}/api/suites/{r.json()['id']}/runs", headers=AUTH, timeout=120,
                   json={"deployments": [served], "parameter_sets": params, "concurrency": 2})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", headers=AUTH, timeout=300) as s:
        ends = [data for name, data in sse_events(s) if name == "end"]
    assert ends
    run = httpx.get(f"{url}/api/runs/{run_id}", headers=AUTH, timeout=30).json()
    assert (run["run"]["status"], run["run"]["done"], run["run"]["errors"]) == ("completed", 12, 0), \
        [c["error"] for c in run["cells"] if c["error"]]
    for c in run["cells"]:
        assert c["status"] == "done" and c["passed"] is True, c
        assert c["prompt_tokens"] > 0 and 0 < c["completion_tokens"] <= 8, c
        assert c["ttft_s"] is not None and c["duration_s"] >= c["ttft_s"] and c["tokens_per_s"] > 0, c
        assert c["finish_reason"] in ("length", "stop"), c
    for key in (f"{served}|greedy", f"{served}|hot"):
        s = run["summary"][key]
        assert s["done"] == 6 and s["pass_rate"] == 1.0 and s["tokens_per_s_median"] > 0
    prov = run["provenance"]["deployments"][served]
    assert prov["recipe"] == "llama-cpp" and prov["model"] == str(gguf)
    assert prov["revision"] == "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert prov["image_digest"].startswith("sha256:")
    assert prov["args"][prov["args"].index("--alias") + 1] == served  # the recipe's command, as the container runs it

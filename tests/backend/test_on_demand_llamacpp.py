"""Models on demand with a runtime ModelDeck did not write: llama.cpp's llama-server (the local image, the tiny
real GGUF of scripts/make-tiny-gguf) unloaded and loaded again by one request."""

from __future__ import annotations

import time

import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch
from tests.support.live_server import serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "on-demand-llamacpp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_llama_server_cold_start_on_request(engine, gguf_models, demo_base_image, llamacpp_image, tmp_path):
    settings = Settings(home=tmp_path / "home", token=TOKEN, model_dirs=[gguf_models],
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    served = f"od{RUN_ID}-llama"
    with serve(create_app(settings, engine=engine)) as url:
        dep_id, events = launch(url, TOKEN, {"recipe": "llama-cpp", "served_name": served, "image_source": "local",
                                             "model": str(gguf_models / "tiny" / "tiny-llama.gguf")}, timeout=180)
        assert events[-1]["phase"] == "ready", events[-5:]
        stopped = httpx.post(f"{url}/api/deployments/{dep_id}/stop", headers=AUTH, timeout=60).json()
        assert stopped["status"] == "stopped" and stopped["loads_on_request"], stopped
        models = httpx.get(f"{url}/v1/models", headers=AUTH, timeout=10).json()["data"]
        assert {"id": served, "state": "unloaded"}.items() <= next(m for m in models if m["id"] == served).items()

        since = time.time()
        r = httpx.post(f"{url}/v1/completions", headers=AUTH, timeout=120,
                       json={"model": served, "prompt": "Hello", "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 4
        starts = engine.client.events(since=int(since) - 1, until=int(time.time()) + 1, decode=True,
                                      filters={"container": stopped["container_id"], "event": "start"})
        assert sum(1 for e in starts if e["timeNano"] >= since * 1e9) == 1
        d = httpx.get(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=10).json()
        assert d["ready"] and d["last_load"]["trigger"] == "request" and "/v1/completions" in d["last_load"]["reason"]
        assert 0 < d["last_load"]["duration_s"] < 120
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)

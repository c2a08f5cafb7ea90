"""The Playground compares the demo and a real runtime side by side: llama.cpp with a real GGUF (CPU)."""

from __future__ import annotations


import httpx
import pytest

from backend.app import create_app
from backend.settings import Settings
from desktop.client import BackendClient
from desktop.pages.playground import PlaygroundPage
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.live_server import serve
from tests.support.deployments import launch_ready, wait_served

pytestmark = [pytest.mark.gui, pytest.mark.docker, pytest.mark.slow, pytest.mark.qt_log_ignore("propagateSizeHints")]
TOKEN = "desk-llama-token"
H = {"Authorization": f"Bearer {TOKEN}"}
SCREENSHOT = "/tmp/modeldeck-playground-demo-vs-llamacpp.png"


@pytest.fixture(scope="module")
def backend(engine, demo_image, demo_base_image, llamacpp_image, gguf_models, tmp_path_factory):
    """A real backend allowed to mount a folder holding the tiny GGUF; (url, model path)."""
    models = gguf_models
    settings = Settings(home=tmp_path_factory.mktemp("desk-llama-home"), token=TOKEN, model_dirs=[models],
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    with serve(create_app(settings, engine=engine)) as url:
        yield url, str(models / "tiny" / "tiny-llama.gguf")


@pytest.fixture(scope="module")
def models(backend):
    """Served names of a ready demo and a ready llama.cpp deployment (the recipe as shipped)."""
    url, gguf = backend
    demo, llama = f"t{RUN_ID}-desk-demo", f"t{RUN_ID}-desk-llama"
    ids = [launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": demo,
                                     "env": {"DEMO_TOKEN_DELAY": "0.02"}}, timeout=180)["id"],
           launch_ready(url, TOKEN, {"recipe": "llama-cpp", "model": gguf, "served_name": llama}, timeout=180)["id"]]
    for name in (demo, llama):
        wait_served(url, TOKEN, name)
    yield demo, llama
    for dep_id in ids:
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=H, timeout=60)


def test_playground_compares_the_demo_and_llama_cpp_side_by_side(qtbot, backend, models):
    url, _ = backend
    demo, llama = models
    client = BackendClient(url, TOKEN)
    page = PlaygroundPage(client)
    qtbot.addWidget(page)
    page.resize(1400, 800)
    page.show()
    try:
        qtbot.waitUntil(lambda: demo in page._models and llama in page._models, timeout=15000)
        page.compare_check.setChecked(True)
        left, right = page.columns[0], page.columns[1]
        assert left.isVisible() and right.isVisible()
        left.select_model(demo)
        right.select_model(llama)
        page.max_tokens_spin.setValue(48)
        page.prompt_edit.setPlainText("Compare yourselves")
        with qtbot.waitSignal(page.send_finished, timeout=60000):
            page.send()
        page.grab().save(SCREENSHOT)
        for column, name in ((left, demo), (right, llama)):
            reply = column.transcript.turns[-1]
            assert reply.role == "assistant" and reply.model == name and reply.content
            assert reply.metrics.completion_tokens > 0 and reply.metrics.tokens_per_s > 0
            assert "tok/s" in column.metrics_label.text()
        # llama-server counted its own tokens (the usage the stream carries): the reply stopped at the limit.
        llama_reply = right.transcript.turns[-1]
        assert llama_reply.metrics.from_usage and llama_reply.metrics.completion_tokens <= 48
        # llama.cpp's real decode speed, from its own timings in the last chunk (the demo sends none).
        assert llama_reply.metrics.rate_from_server and "tok/s (server)" in right.metrics_label.text()
        assert not left.transcript.turns[-1].metrics.rate_from_server
        print(f"\ndemo: {left.metrics_label.text()}\nllama.cpp: {right.metrics_label.text()}")
    finally:
        page.shutdown()
        assert not page.streams()
        client.deleteLater()

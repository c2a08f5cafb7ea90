"""POST /v1/responses passed through to a runtime ModelDeck did not write: llama.cpp's llama-server.

The image is the local llama-server build (the session fixture ``llamacpp_image``) and the model
the tiny real GGUF of scripts/make-tiny-gguf (random weights: the words are gibberish, the token
counts are llama-server's own). llama-server translates the Responses API itself
(tools/server/server-chat.cpp, server_chat_convert_responses_to_chatcmpl), so what the client gets
is llama.cpp's answer, untouched by ModelDeck.
"""

from __future__ import annotations


import httpx
import openai
import pytest

from backend.app import create_app
from backend.settings import Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TOKEN = "responses-llamacpp-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def llama(engine, gguf_models, demo_base_image, llamacpp_image, tmp_path_factory):
    """(backend url, served name): the shipped catalog, the tiny GGUF launched on the local llama.cpp image."""
    settings = Settings(home=tmp_path_factory.mktemp("resp-llama-home"), token=TOKEN, model_dirs=[gguf_models],
                        demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID})
    served = f"t{RUN_ID}-resp-llama"
    with serve(create_app(settings, engine=engine)) as url:
        dep_id, events = launch(url, TOKEN, {"recipe": "llama-cpp", "served_name": served, "image_source": "local",
                                             "model": str(gguf_models / "tiny" / "tiny-llama.gguf")}, timeout=180)
        assert events[-1]["phase"] == "ready", events[-5:]
        yield url, served
        httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


def _completion_tokens(url: str, served: str) -> int:
    models = httpx.get(f"{url}/api/stats", headers=AUTH, timeout=10).json()["requests"]["models"]
    return models[served]["completion_tokens"] if served in models else 0


def test_llama_server_answers_the_responses_api_through_v1(llama) -> None:
    url, served = llama
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=60)
    before = _completion_tokens(url, served)

    reply = client.responses.create(model=served, input="Hello there", max_output_tokens=8)
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.status == "completed"
    assert reply.model == served and reply.output_text
    assert reply.usage.output_tokens == 8  # llama-server's max_tokens, from max_output_tokens

    events = list(client.responses.create(model=served, stream=True, max_output_tokens=6,
                                          input=[{"role": "user",
                                                  "content": [{"type": "input_text", "text": "Hello there"}]}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert deltas and final.output_text == "".join(deltas) and final.usage.output_tokens == 6

    # Both were measured with llama-server's own token counts (usage.output_tokens).
    wait_until(lambda: _completion_tokens(url, served) - before == 8 + 6, 10, what="14 more tokens in /api/stats")

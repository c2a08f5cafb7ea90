"""POST /v1/responses through a real backend to the real demo container, with the official openai client."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import openai
import pytest

from backend.app import create_app
from backend.settings import REPO_ROOT, Settings
from tests.conftest import RUN_ID, RUN_LABEL
from tests.support.deployments import launch_ready, wait_served
from tests.support.live_server import serve
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker]
TOKEN = "responses-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"DEMO_TOKEN_DELAY": "0.005"}


def _backend(engine, home: Path, demo_base_image: str, catalog_dir: Path | None = None):
    settings = Settings(home=home, token=TOKEN, demo_base_image=demo_base_image, extra_labels={RUN_LABEL: RUN_ID},
                        **({"catalog_dir": catalog_dir} if catalog_dir else {}))
    return serve(create_app(settings, engine=engine))


def _launch_demo(url: str, served: str) -> str:
    """Launch the demo as ``served`` and wait until /v1 routes it; its deployment id."""
    dep = launch_ready(url, TOKEN, {"recipe": "demo", "model": "demo-tiny", "served_name": served, "env": FAST})
    wait_served(url, TOKEN, served)
    return dep["id"]


def _remove(url: str, dep_id: str) -> None:
    httpx.delete(f"{url}/api/deployments/{dep_id}", headers=AUTH, timeout=60)


@pytest.fixture(scope="module")
def backend(engine, demo_image, demo_base_image, tmp_path_factory):
    """(url, served name) of a real backend with the demo launched through it (its recipe serves Responses)."""
    served = f"t{RUN_ID}-resp"
    with _backend(engine, tmp_path_factory.mktemp("resp-home"), demo_base_image) as url:
        dep_id = _launch_demo(url, served)
        yield url, served
        _remove(url, dep_id)


@pytest.fixture(scope="module")
def plain_backend(engine, demo_image, demo_base_image, tmp_path_factory):
    """(url, served name) of a real backend whose catalog's demo recipe does not declare the Responses API.

    The catalog is a copy of containers/ with `native_apis` taken out of demo.toml; the demo folder is
    copied byte for byte, so the image (tagged by the folder's hash) is the one already built.
    """
    catalog = tmp_path_factory.mktemp("plain-catalog")
    source = REPO_ROOT / "containers"
    recipe = (source / "demo.toml").read_text()
    assert 'native_apis = ["openai_responses"]' in recipe  # else this test proves nothing
    (catalog / "demo.toml").write_text(recipe.replace('native_apis = ["openai_responses"]', ""))
    shutil.copytree(source / "demo", catalog / "demo", ignore=shutil.ignore_patterns("__pycache__"))
    served = f"t{RUN_ID}-resp-plain"
    with _backend(engine, tmp_path_factory.mktemp("plain-home"), demo_base_image, catalog) as url:
        dep_id = _launch_demo(url, served)
        yield url, served
        _remove(url, dep_id)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0, timeout=60)


def _model_stats(url: str, served: str) -> dict | None:
    return httpx.get(f"{url}/api/stats", headers=AUTH, timeout=10).json()["requests"]["models"].get(served)


def test_create_answers_output_text_and_is_measured(backend) -> None:
    url, served = backend
    before = _model_stats(url, served) or {"requests": 0, "completion_tokens": 0}
    reply = _client(url).responses.create(model=served, input="Tell me about the fox and the crow.",
                                          instructions="Answer briefly.", max_output_tokens=400)
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.model == served and reply.status in ("completed", "incomplete")
    assert reply.output_text.strip(), reply
    assert reply.output[0].type == "message" and reply.output[0].role == "assistant"
    assert reply.usage.output_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + reply.usage.output_tokens
    # The proxy recorded it like any /v1 request, with the Responses API's token names read.
    stats = wait_until(lambda: (s := _model_stats(url, served)) and s["requests"] > before["requests"] and s,
                       10, what="the request in /api/stats")
    assert stats["completion_tokens"] - before["completion_tokens"] == reply.usage.output_tokens


def test_stream_passes_the_events_through(backend) -> None:
    url, served = backend
    client = _client(url)
    before = _model_stats(url, served) or {"requests": 0, "completion_tokens": 0}
    events = list(client.responses.create(
        model=served, stream=True, max_output_tokens=400,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What did the crow say?"}]}]))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # one event per token, as the demo sent them
    final = events[-1].response
    assert final.output_text == "".join(deltas) and final.usage.output_tokens == len(deltas)
    stats = wait_until(lambda: (s := _model_stats(url, served)) and s["requests"] > before["requests"] and s,
                       10, what="the stream in /api/stats")
    assert stats["completion_tokens"] - before["completion_tokens"] == len(deltas)

    # The client's own stream helper accumulates the same events into its final response.
    with client.responses.stream(model=served, input="The fox", max_output_tokens=1000) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        done = stream.get_final_response()
    assert done.status == "completed" and done.output_text == "".join(texts) and texts


def test_runtime_without_the_api_is_an_openai_404_naming_it(plain_backend) -> None:
    url, served = plain_backend
    client = _client(url)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=served, input="Hello")
    error = caught.value.body
    assert error["code"] == "unsupported_api" and error["type"] == "invalid_request_error"
    assert "runs on the runtime 'demo'" in error["message"]
    assert "/v1/chat/completions" in error["message"]
    # The same deployment still answers chat completions: only the API is refused.
    chat = client.chat.completions.create(model=served, messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=3)
    assert chat.choices[0].message.content


def test_unknown_model_is_the_same_404_as_chat_completions(backend) -> None:
    url, _ = backend
    body = {"model": f"t{RUN_ID}-nobody", "input": "Hi", "messages": [{"role": "user", "content": "Hi"}]}
    responses = httpx.post(f"{url}/v1/responses", headers=AUTH, json=body, timeout=10)
    chat = httpx.post(f"{url}/v1/chat/completions", headers=AUTH, json=body, timeout=10)
    assert responses.status_code == chat.status_code == 404

    def without_list(error: dict) -> dict:
        # The list of served models is read at each request: other deployments on this engine
        # may come and go between the two.
        return {**error, "message": re.sub(r"Available models: .*?\. ", "Available models: ... ", error["message"])}

    assert without_list(responses.json()["error"]) == without_list(chat.json()["error"])
    assert "Available models: " in responses.json()["error"]["message"]
    assert responses.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        _client(url).responses.create(model=body["model"], input="Hi")


def test_history_keeps_the_responses_text_whole_and_streamed(backend) -> None:
    url, served = backend
    headers = {**AUTH, "X-ModelDeck-History": "1"}
    body = {"model": served, "input": "The fox and the crow", "max_output_tokens": 400}
    whole = httpx.post(f"{url}/v1/responses", headers=headers, json=body, timeout=60)
    assert whole.status_code == 200, whole.text
    entry = httpx.get(f"{url}/api/history/{whole.headers['X-ModelDeck-History-Id']}", headers=AUTH).json()
    answer = whole.json()
    assert entry["output"] == answer["output"][0]["content"][0]["text"] and entry["output"]
    assert entry["finish_reason"] == answer["status"] and entry["endpoint"] == "responses"
    assert entry["prompt"] == "The fox and the crow"
    assert entry["completion_tokens"] == answer["usage"]["output_tokens"]

    with httpx.stream("POST", f"{url}/v1/responses", headers=headers, json={**body, "stream": True},
                      timeout=60) as reply:
        lines = list(reply.iter_lines())
    deltas = [json.loads(line[6:])["delta"] for line in lines
              if line.startswith("data: ") and '"response.output_text.delta"' in line]
    history_id = next(line for line in lines if line.startswith(": modeldeck-history-id ")).split()[-1]
    entry = httpx.get(f"{url}/api/history/{history_id}", headers=AUTH).json()
    assert deltas and entry["output"] == "".join(deltas)
    assert entry["finish_reason"] in ("completed", "incomplete") and entry["completion_tokens"] == len(deltas)


def test_catalog_says_which_runtimes_serve_it(backend, plain_backend) -> None:
    # Agents choose a runtime from GET /api/catalog: it says what each one answers natively.
    def native(url: str) -> dict[str, list[str]]:
        recipes = httpx.get(f"{url}/api/catalog", headers=AUTH, timeout=10).json()["recipes"]
        return {r["name"]: r["native_apis"] for r in recipes}

    assert native(backend[0])["demo"] == ["openai_responses"]
    assert native(plain_backend[0])["demo"] == []
    assert "anthropic_messages" in native(backend[0])["llama-cpp"]

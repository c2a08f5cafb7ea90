"""The demo server's Responses API (POST /v1/responses): shapes checked against the openai client's own types."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter


RESPONSES = "/v1/responses"
EVENT = TypeAdapter(ResponseStreamEvent)
ORDER_HEAD = ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
ORDER_TAIL = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def named_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event name, decoded data) of each Server-Sent Event, in order."""
    out, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[len("data: "):])))
            name = None
    return out


def test_whole_response_validates_as_the_clients_response_type(http: httpx.Client) -> None:
    reply = http.post(RESPONSES, json={"model": "demo", "input": "Tell me about the fox.", "instructions": "Be brief.",
                                       "max_output_tokens": 500, "temperature": 0.5, "top_p": 0.9, "seed": 3})
    assert reply.status_code == 200, reply.text
    # Strict validation, not the client's lenient construct(): every required field is there and typed.
    response = Response.model_validate(reply.json())
    assert response.id.startswith("resp_") and response.object == "response" and response.model == "demo"
    assert response.status == "completed" and response.incomplete_details is None
    assert response.instructions == "Be brief." and response.temperature == 0.5 and response.top_p == 0.9
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.id.startswith("msg_")
    [part] = message.content
    assert part.type == "output_text" and part.annotations == [] and part.text.strip()
    usage = response.usage
    assert usage.output_tokens > 0 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_max_output_tokens_makes_it_incomplete(http: httpx.Client) -> None:
    reply = http.post(RESPONSES, json={"model": "demo", "input": "The crow", "max_output_tokens": 3})
    response = Response.model_validate(reply.json())
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.usage.output_tokens == 3


def test_stream_sends_the_responses_events_in_order(http: httpx.Client) -> None:
    body = {"model": "demo", "stream": True, "max_output_tokens": 500,
            "input": [{"role": "developer", "content": "Be kind."},
                      {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "The fox"}]}]}
    with http.stream("POST", RESPONSES, json=body) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"] == "text/event-stream"
        raw = named_events(reply)
    events = [EVENT.validate_python(data) for _, data in raw]
    assert all(name == data["type"] for name, data in raw)  # the SSE event name is the type
    kinds = [e.type for e in events]
    assert kinds[:4] == ORDER_HEAD and kinds[-4:] == [*ORDER_TAIL, "response.completed"], kinds
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    item_id = events[2].item.id
    assert all(e.item_id == item_id for e in events if hasattr(e, "item_id"))
    assert events[-4].text == "".join(deltas) == final.output_text
    assert final.status == "completed" and final.usage.output_tokens == len(deltas)


def test_official_client_reads_it_whole_and_streamed(openai_client: openai.OpenAI) -> None:
    reply = openai_client.responses.create(model="demo", input="Tell me about the crow.", max_output_tokens=500)
    assert reply.output_text.strip() and reply.status == "completed"
    with openai_client.responses.stream(model="demo", input="The hare", max_output_tokens=500) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas and final.output_text == "".join(deltas)


def test_stream_cut_short_ends_incomplete(http: httpx.Client) -> None:
    with http.stream("POST", RESPONSES, json={"model": "demo", "input": "x", "stream": True,
                                              "max_output_tokens": 2}) as reply:
        raw = named_events(reply)
    final = EVENT.validate_python(raw[-1][1])
    assert final.type == "response.incomplete" and final.response.incomplete_details.reason == "max_output_tokens"
    assert final.response.usage.output_tokens == 2


@pytest.mark.parametrize(("body", "param"), [
    ({"input": 5}, "input"),
    ({"input": []}, "input"),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}, "input"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input"),
    ({"input": [{"role": "robot", "content": "hi"}]}, "input"),
    ({"input": "hi", "instructions": 3}, "instructions"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "tools": [{"type": "function", "name": "f"}]}, "tools"),
])
def test_bad_request_is_a_400_naming_the_field(http: httpx.Client, body: dict, param: str) -> None:
    reply = http.post(RESPONSES, json={"model": "demo", **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_unknown_model_is_a_404(http: httpx.Client, openai_client: openai.OpenAI) -> None:
    reply = http.post(RESPONSES, json={"model": "gpt-9", "input": "hi"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.create(model="gpt-9", input="hi")


def test_get_is_not_allowed_on_responses(http: httpx.Client) -> None:
    assert http.get(RESPONSES).status_code == 405

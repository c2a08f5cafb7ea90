"""Turns a playground request into a shell ``curl`` command or a Python ``openai`` script to copy."""

from __future__ import annotations

import json
import pprint

from desktop.playground.request import CHAT_PATH

TOKEN_VAR = "MODELDECK_TOKEN"  # the real token never goes to the clipboard
_CLIENT_KEYS = ("model", "messages")


def as_curl(base_url: str, body: dict) -> str:
    """A ``curl`` command that sends ``body`` to the chat endpoint, the token read from ``$MODELDECK_TOKEN``."""
    payload = json.dumps(body, ensure_ascii=False, indent=2)
    quoted = "'" + payload.replace("'", "'\\''") + "'"
    stream_flag = " -N" if body.get("stream") else ""
    return (f"curl{stream_flag} {base_url.rstrip('/')}{CHAT_PATH} \\\n"
            f"  -H \"Authorization: Bearer ${TOKEN_VAR}\" \\\n"
            f"  -H \"Content-Type: application/json\" \\\n"
            f"  -d {quoted}\n")


def as_python(base_url: str, body: dict) -> str:
    """A runnable script using the official ``openai`` client, the token read from the environment."""
    lines = [
        "import os",
        "",
        "from openai import OpenAI",
        "",
        f"client = OpenAI(base_url={base_url.rstrip('/') + '/v1'!r}, api_key=os.environ[{TOKEN_VAR!r}])",
    ]
    streaming = bool(body.get("stream"))
    lines.append(("stream = " if streaming else "reply = ") + "client.chat.completions.create(")
    for key, value in body.items():
        if key == "stream_options" and not streaming:
            continue
        text = pprint.pformat(value, indent=1, width=88, sort_dicts=False)
        text = text.replace("\n", "\n    ")
        lines.append(f"    {key}={text},")
    lines.append(")")
    if streaming:
        lines += [
            "for chunk in stream:",
            "    if chunk.choices and chunk.choices[0].delta.content:",
            "        print(chunk.choices[0].delta.content, end=\"\", flush=True)",
            "print()",
        ]
    else:
        lines.append("print(reply.choices[0].message.content)")
    return "\n".join(lines) + "\n"

"""Tests of the OpenAPI document: operation ids are the tool names agents call, so they follow one convention."""

from __future__ import annotations

import re
from collections import Counter

from backend.app import create_app
from backend.settings import Settings

CAMEL_CASE = re.compile(r"[a-z][A-Za-z0-9]*")


def test_every_operation_id_is_camel_case_and_unique(tmp_path):
    spec = create_app(Settings(home=tmp_path, token="openapi-test")).openapi()
    ops = [(f"{method.upper()} {path}", op.get("operationId"))
           for path, methods in spec["paths"].items() for method, op in methods.items()]
    assert len(ops) > 30, "the document lost routes"
    wrong = [(where, op_id) for where, op_id in ops if not op_id or not CAMEL_CASE.fullmatch(op_id)]
    assert not wrong, f"operation ids must match {CAMEL_CASE.pattern}: {wrong}"
    repeated = [op_id for op_id, n in Counter(op_id for _, op_id in ops).items() if n > 1]
    assert not repeated, f"operation ids must be unique: {repeated}"
    # OpenAI's own ids under /v1, so agents that know OpenAI's API find the same tools.
    v1 = {op_id for where, op_id in ops if " /v1/" in where}
    assert v1 == {"listModels", "retrieveModel", "createChatCompletion", "createCompletion", "createEmbedding",
                  "createResponse", "createMessage", "countMessageTokens"}

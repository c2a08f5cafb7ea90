"""A suite's cases as the editor's table shows them: one row of text cells per case, and back to the API's JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

#: The editor's columns, in order.
CASE_FIELDS = ("id", "prompt", "variables", "system_prompt", "expected", "checks")
CHECK_KINDS = ("contains", "not_contains", "regex", "equals", "json", "json_schema", "max_length")


@dataclass
class CaseRow:
    """One case as text: ``prompt`` holds a template, or the messages as a JSON array when ``[``-led."""

    id: str = ""
    prompt: str = ""
    variables: str = ""
    system_prompt: str = ""
    expected: str = ""
    checks: str = ""
    extra: dict = field(default_factory=dict)  # fields this editor does not show, kept as they came

    def cell(self, name: str) -> str:
        return getattr(self, name)

    def set_cell(self, name: str, text: str) -> None:
        setattr(self, name, text)


def case_to_row(case: dict) -> CaseRow:
    """The editor's text form of one Case JSON (as GET /api/suites/{id} gives it)."""
    messages = case.get("messages")
    prompt = json.dumps(messages, ensure_ascii=False) if messages else (case.get("prompt") or "")
    variables = case.get("variables") or {}
    checks = compact_checks(case.get("checks") or [])
    known = {"id", "prompt", "messages", "variables", "system_prompt", "expected", "checks"}
    return CaseRow(id=case.get("id") or "", prompt=prompt,
                   variables=json.dumps(variables, ensure_ascii=False) if variables else "",
                   system_prompt=case.get("system_prompt") or "", expected=case.get("expected") or "",
                   checks=checks_text(checks),
                   extra={k: v for k, v in case.items() if k not in known})


def compact_checks(checks: list[dict]) -> list[dict]:
    """Checks without the fields that hold their defaults (``ignore_case`` false, ``value`` null), for reading."""
    return [{k: v for k, v in c.items() if not ((k == "ignore_case" and v is False) or (k == "value" and v is None))}
            for c in checks]


def checks_text(checks: list[dict]) -> str:
    """A checks cell's text: '' for none, else the compact JSON list."""
    return json.dumps(compact_checks(checks), ensure_ascii=False) if checks else ""


def parse_checks(text: str, where: str) -> list[dict]:
    """A checks cell: a JSON array of {"kind", "value", "ignore_case"}; '' is none.

    Raises:
        ValueError: not JSON, not a list of objects, or an unknown kind (the message names ``where``).
    """
    if not text.strip():
        return []
    try:
        checks = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: checks are not JSON ({exc.msg}); write a list such as "
                         '[{"kind": "contains", "value": "Paris"}]') from None
    if isinstance(checks, dict):
        checks = [checks]
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise ValueError(f"{where}: checks must be a JSON list of objects with a kind and a value")
    for c in checks:
        if c.get("kind") not in CHECK_KINDS:
            raise ValueError(f"{where}: unknown check kind {c.get('kind')!r}; use one of {', '.join(CHECK_KINDS)}")
    return checks


def row_to_case(row: CaseRow, index: int) -> dict:
    """The Case JSON for PUT/POST from one editor row (``index`` counts from 1, for messages).

    Raises:
        ValueError: a cell that cannot be read, in words that say which row and what to write.
    """
    where = f"case {index}" + (f" ({row.id})" if row.id else "")
    case: dict = dict(row.extra)
    if row.id.strip():
        case["id"] = row.id.strip()
    prompt = row.prompt
    if prompt.lstrip().startswith("["):
        try:
            messages = json.loads(prompt)
        except ValueError as exc:
            raise ValueError(f"{where}: the messages are not JSON ({exc.msg}); write a prompt, or a list "
                             'such as [{"role": "user", "content": "Hi"}]') from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError(f"{where}: messages must be a JSON list of {{role, content}} objects")
        case["messages"], case["prompt"] = messages, None
    else:
        if not prompt.strip():
            raise ValueError(f"{where}: the prompt is empty; write a prompt or remove the case")
        case["prompt"], case["messages"] = prompt, None
    if row.variables.strip():
        try:
            variables = json.loads(row.variables)
        except ValueError as exc:
            raise ValueError(f"{where}: variables are not JSON ({exc.msg}); write an object such as "
                             '{"city": "Paris"}') from None
        if not isinstance(variables, dict):
            raise ValueError(f"{where}: variables must be a JSON object of names to text")
        case["variables"] = {str(k): str(v) for k, v in variables.items()}
    else:
        case["variables"] = {}
    case["system_prompt"] = row.system_prompt or None
    case["expected"] = row.expected or None
    case["checks"] = parse_checks(row.checks, where)
    return case


def suite_body(name: str, description: str, system_prompt: str, checks_text: str, rows: list[CaseRow]) -> dict:
    """The Suite JSON for POST /api/suites or PUT /api/suites/{id}.

    Raises:
        ValueError: no name, no case, or a cell that cannot be read.
    """
    if not name.strip():
        raise ValueError("The suite has no name; give it one.")
    if not rows:
        raise ValueError("The suite has no case; add one with Add case.")
    return {"name": name.strip(), "description": description, "system_prompt": system_prompt or None,
            "checks": parse_checks(checks_text, "suite checks"),
            "cases": [row_to_case(row, i) for i, row in enumerate(rows, 1)]}


def import_format(filename: str) -> str:
    """'jsonl' or 'csv' for a file to import, by its extension.

    Raises:
        ValueError: any other extension.
    """
    lower = filename.lower()
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if lower.endswith((".csv", ".tsv")):
        return "csv"
    raise ValueError(f"{filename}: import reads .jsonl (one case per line) or .csv files")

"""Evaluating a suite's checks against an answer: each check gives passed or failed and why."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema
from pydantic import BaseModel

from backend.suites import Check

DETAIL_CHARS = 200
# A whole answer that is one Markdown code block (```json ... ``` or ``` ... ```).
_FENCE = re.compile(r"\A```[A-Za-z0-9_+-]*[ \t]*\r?\n(.*?)\r?\n?```\Z", re.DOTALL)


class CheckResult(BaseModel):
    """The outcome of one check on one answer: ``detail`` says what was found."""

    kind: str
    passed: bool
    detail: str


def _short(text: str, chars: int = 60) -> str:
    return repr(text if len(text) <= chars else text[: chars - 1] + "…")


def strip_fence(text: str) -> str:
    """``text`` without surrounding white space and, when it is one Markdown code block, without the fence."""
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if ignore_case else 0)


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(schema_json))


def _parse_json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(strip_fence(text)), None
    except ValueError as exc:  # JSONDecodeError, and RecursionError-free ValueErrors
        return None, f"not valid JSON: {exc}"


def evaluate(check: Check, text: str) -> CheckResult:
    """Run one check on an answer.

    Args:
        check: a validated check (its regex compiles, its schema is valid).
        text: the answer.

    Returns:
        The result; ``detail`` says what matched or what was missing, in a line.
    """
    kind, value = check.kind, check.value
    passed: bool
    if kind in ("contains", "not_contains", "equals"):
        assert isinstance(value, str)
        hay, needle = (text.casefold(), value.casefold()) if check.ignore_case else (text, value)
        if kind == "equals":
            passed = hay.strip() == needle.strip()
            detail = "the answer equals the expected text" if passed else \
                f"the answer {_short(text.strip())} is not {_short(value.strip())}"
        else:
            found = needle in hay
            passed = found if kind == "contains" else not found
            detail = f"{_short(value)} {'found' if found else 'not found'} in the answer"
    elif kind == "regex":
        assert isinstance(value, str)
        match = _regex(value, check.ignore_case).search(text)
        passed = match is not None
        detail = f"/{value}/ matched {_short(match.group(0))}" if match else f"/{value}/ did not match"
    elif kind == "json":
        _, error = _parse_json(text)
        passed = error is None
        detail = "the answer is valid JSON" if passed else f"the answer is {error}"
    elif kind == "json_schema":
        assert isinstance(value, dict)
        parsed, error = _parse_json(text)
        if error is not None:
            passed, detail = False, f"the answer is {error}"
        else:
            validator = _validator(json.dumps(value, sort_keys=True))
            try:
                problem = jsonschema.exceptions.best_match(validator.iter_errors(parsed))
            except Exception as exc:  # noqa: BLE001 - an unresolvable $ref, a pattern Python cannot compile
                problem, error = None, f"the schema cannot be applied: {type(exc).__name__}: {exc}"
            passed = problem is None and error is None
            if error is not None:
                detail = error
            elif problem is None:
                detail = "the answer matches the schema"
            else:
                where = "/".join(str(p) for p in problem.absolute_path) or "the top level"
                detail = f"at {where}: {problem.message}"
    elif kind == "max_length":
        assert isinstance(value, int)
        passed = len(text) <= value
        detail = f"{len(text)} characters ({'at most' if passed else 'more than'} {value})"
    else:  # pragma: no cover - Check's kind is a closed Literal
        raise ValueError(f"unknown check kind {kind!r}")
    if len(detail) > DETAIL_CHARS:
        detail = detail[: DETAIL_CHARS - 1] + "…"
    return CheckResult(kind=kind, passed=passed, detail=detail)


def evaluate_all(checks: list[Check], text: str) -> list[CheckResult]:
    """Run every check on an answer, in order."""
    return [evaluate(check, text) for check in checks]


def all_passed(results: list[CheckResult]) -> bool | None:
    """True when every check passed, False when one failed, None when there were none."""
    return all(r.passed for r in results) if results else None

"""Tests of backend.checks: every kind of check with an answer that passes and one that fails."""

from __future__ import annotations

import pytest

from backend.checks import all_passed, evaluate, evaluate_all, strip_fence
from backend.suites import Check

PERSON = {"type": "object", "required": ["name", "age"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}}

# (check, an answer that passes, an answer that fails, a word the failing detail contains)
CASES = [
    (Check(kind="contains", value="Paris"), "The capital is Paris.", "The capital is Lyon.", "not found"),
    (Check(kind="contains", value="paris", ignore_case=True), "PARIS it is", "Rome", "not found"),
    (Check(kind="not_contains", value="sorry"), "Here you go.", "I'm sorry, I can't.", "found"),
    (Check(kind="not_contains", value="SORRY", ignore_case=True), "Fine.", "so Sorry", "found"),
    (Check(kind="regex", value=r"\b\d{4}-\d{2}-\d{2}\b"), "on 2024-03-01 it was", "on March 1st", "did not match"),
    (Check(kind="regex", value="^yes", ignore_case=True), "Yes, indeed", "Well, yes", "did not match"),
    (Check(kind="equals", value="42"), "  42\n", "42.", "is not"),
    (Check(kind="equals", value="Blue", ignore_case=True), "blue", "blue-ish", "is not"),
    (Check(kind="json"), '{"a": [1, 2]}', '{"a": [1, 2}', "not valid JSON"),
    (Check(kind="json"), '```json\n{"a": 1}\n```', "Sure! {\"a\": 1}", "not valid JSON"),
    (Check(kind="json_schema", value=PERSON), '{"name": "Ada", "age": 36}', '{"name": "Ada", "age": -1}',
     "minimum"),
    (Check(kind="json_schema", value=PERSON), '```\n{"name": "Ada", "age": 3}\n```', '{"name": "Ada"}',
     "'age' is a required property"),
    (Check(kind="json_schema", value=PERSON), '{"name": "Ada", "age": 1}', "not json at all", "not valid JSON"),
    (Check(kind="max_length", value=5), "short", "longer", "more than 5"),
    (Check(kind="max_length", value=0), "", " ", "more than 0"),
]


@pytest.mark.parametrize(("check", "good", "bad", "why"), CASES,
                         ids=[f"{c.kind}-{n}" for n, (c, *_) in enumerate(CASES)])
def test_each_kind_passes_and_fails(check, good, bad, why):
    passed = evaluate(check, good)
    assert passed.passed is True and passed.kind == check.kind and passed.detail
    failed = evaluate(check, bad)
    assert failed.passed is False and failed.kind == check.kind
    assert why in failed.detail


def test_every_kind_is_covered():
    assert {c.kind for c, *_ in CASES} == {"contains", "not_contains", "regex", "equals", "json", "json_schema",
                                          "max_length"}


def test_regex_searches_anywhere_and_reports_the_match():
    result = evaluate(Check(kind="regex", value=r"answer: (\w+)"), "So the answer: blue, I think")
    assert result.passed and "'answer: blue'" in result.detail


def test_case_sensitivity_is_the_default():
    assert not evaluate(Check(kind="contains", value="Paris"), "paris").passed
    assert not evaluate(Check(kind="equals", value="Blue"), "blue").passed


def test_max_length_counts_characters_not_bytes():
    assert evaluate(Check(kind="max_length", value=3), "äöü").passed
    assert not evaluate(Check(kind="max_length", value=2), "äöü").passed


def test_strip_fence():
    assert strip_fence('  ```json\n{"a": 1}\n```  ') == '{"a": 1}'
    assert strip_fence("```\n[1]\n```") == "[1]"
    assert strip_fence("no fence") == "no fence"
    # Prose around a fenced block is not stripped: the answer as a whole is not JSON.
    assert strip_fence("Here:\n```json\n{}\n```") == "Here:\n```json\n{}\n```"


def test_schema_that_cannot_be_applied_fails_instead_of_raising():
    # A schema that slipped past validation (read from an older store): the answer fails, the run goes on.
    check = Check.model_construct(kind="json_schema", value={"$ref": "#/$defs/missing"}, ignore_case=False)
    result = evaluate(check, '"abc"')
    assert result.passed is False and "cannot be applied" in result.detail


def test_long_details_are_shortened():
    result = evaluate(Check(kind="equals", value="x" * 1000), "y" * 1000)
    assert not result.passed and len(result.detail) <= 200


def test_evaluate_all_keeps_order_and_all_passed():
    checks = [Check(kind="contains", value="a"), Check(kind="max_length", value=2), Check(kind="json")]
    results = evaluate_all(checks, "abc")
    assert [(r.kind, r.passed) for r in results] == [("contains", True), ("max_length", False), ("json", False)]
    assert all_passed(results) is False
    assert all_passed(evaluate_all(checks[:1], "a")) is True
    assert all_passed([]) is None

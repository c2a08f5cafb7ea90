"""Tests of backend.suites (the models, template rendering, the SQLite store) and backend.suite_files
(JSONL and CSV import and export)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading

import pytest
from pydantic import ValidationError

from backend.suite_files import read_cases, read_suite_file, write_cases, write_suite_file
from backend.suites import (MAX_CASES, Case, Check, InvalidSuite, InvalidSuiteFile, Suite, SuiteConflict,
                            SuiteNotFound, SuitesUnavailable, SuiteStore, render_template, template_names)


def suite(**overrides) -> Suite:
    data = {"name": "Capitals", "cases": [{"prompt": "Capital of {{country}}?", "variables": {"country": "France"}}]}
    data.update(overrides)
    return Suite.model_validate(data)


def refusal(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        Suite.model_validate({"name": "s", **data})
    return str(info.value)


# Text that CSV and JSON both have to escape: separators, quotes, line breaks, non-ASCII, braces.
TRICKY = 'Zürich, "Genève"\nand 東京 — {braces} \\ back\\slash\r\nend \u2028 sep\x85 \x1c\t'
RICH_CASES = [
    {"id": "plain", "prompt": "Say hi"},
    {"prompt": "Translate {{text}} into {{ lang }}, please", "variables": {"text": TRICKY, "lang": "Français"},
     "expected": 'a "quoted", multi\nline answer', "system_prompt": "Be exact, terse; no \"fluff\".",
     "checks": [{"kind": "contains", "value": "Zürich", "ignore_case": True},
                {"kind": "regex", "value": r"^\w+,\s\"?"},
                {"kind": "json_schema", "value": {"type": "object", "required": ["a,b"],
                                                  "properties": {"a,b": {"const": "x\"y\n"}}}},
                {"kind": "max_length", "value": 400}, {"kind": "json"}]},
    {"id": "chat, with comma", "messages": [{"role": "system", "content": "You are 🤖"},
                                            {"role": "user", "content": "line1\nline2, \"q\""},
                                            {"role": "assistant", "content": ""},
                                            {"role": "user", "content": "again?"}],
     "checks": [{"kind": "not_contains", "value": "sorry"}]},
    {"prompt": "Only {{text}}", "variables": {"text": ""}},  # an empty variable the prompt uses
    {"prompt": "no variables used", "variables": {"unused": "still here"}, "expected": "ok"},
]


# --------------------------------------------------------------------------- models


def test_render_fills_the_template_and_puts_the_system_prompt_first():
    s = suite(system_prompt="Answer in one word.")
    assert s.cases[0].render(s) == [{"role": "system", "content": "Answer in one word."},
                                    {"role": "user", "content": "Capital of France?"}]


def test_case_system_prompt_overrides_the_suites():
    s = suite(system_prompt="suite", cases=[{"prompt": "a", "system_prompt": "case"}, {"prompt": "b"}])
    assert s.cases[0].render(s)[0] == {"role": "system", "content": "case"}
    assert s.cases[1].render(s)[0] == {"role": "system", "content": "suite"}
    assert suite(cases=[{"prompt": "a"}]).cases[0].render(suite()) == [{"role": "user", "content": "a"}]


def test_messages_are_sent_as_given_and_keep_their_own_system_message():
    messages = [{"role": "system", "content": "own"}, {"role": "user", "content": "{{not_a_template}}"}]
    s = suite(system_prompt="suite", cases=[{"messages": messages}, {"messages": messages[1:]}])
    assert s.cases[0].render(s) == messages
    assert s.cases[1].render(s) == [{"role": "system", "content": "suite"}, messages[1]]


def test_template_syntax():
    assert template_names("{{a}} {{ b }} {{a}} {{ not a name }} {x} {{1x}}") == ["a", "b"]
    assert render_template("{{a}}-{{ b }}-{{ not a name }}-{json: 1}", {"a": "1", "b": "{{a}}"}) == \
        "1-{{a}}-{{ not a name }}-{json: 1}"  # a value is never rendered again
    with pytest.raises(KeyError):
        render_template("{{missing}}", {})


def test_unknown_variable_is_refused_naming_the_case_and_the_variable():
    message = refusal({"cases": [{"prompt": "ok"}, {"id": "q2", "prompt": "Hello {{name}} of {{town}}",
                                                    "variables": {"name": "Ada"}}]})
    assert "case 'q2' (number 2)" in message and "prompt: unknown template variable town" in message


@pytest.mark.parametrize(("check", "words"), [
    ({"kind": "regex", "value": "([a-z]"}, ["checks.0", "invalid regular expression"]),
    ({"kind": "regex", "value": "a{99999999999}"}, ["invalid regular expression"]),
    ({"kind": "json_schema", "value": {"type": "strin"}}, ["invalid JSON Schema"]),
    ({"kind": "json_schema", "value": {"pattern": "("}}, ["invalid JSON Schema"]),
    ({"kind": "json_schema", "value": {"$ref": "https://example.com/schema.json"}}, ["does not fetch schemas"]),
    ({"kind": "json_schema", "value": "not an object"}, ["JSON Schema object"]),
    ({"kind": "max_length", "value": -1}, ["whole number"]),
    ({"kind": "max_length", "value": "10"}, ["whole number"]),
    ({"kind": "contains"}, ["needs a string value"]),
    ({"kind": "json", "value": "x"}, ["takes no value"]),
    ({"kind": "startswith", "value": "x"}, ["kind"]),
])
def test_bad_checks_are_refused_naming_the_case_and_the_field(check, words):
    message = refusal({"cases": [{"id": "c1", "prompt": "p", "checks": [check]}]})
    assert "case 'c1' (number 1)" in message
    for word in words:
        assert word in message


def test_bad_suite_wide_check_is_refused():
    assert "invalid regular expression" in refusal({"checks": [{"kind": "regex", "value": "("}],
                                                    "cases": [{"prompt": "p"}]})


@pytest.mark.parametrize(("case", "words"), [
    ({}, ["either a prompt or messages"]),
    ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, ["exactly one"]),
    ({"prompt": "   "}, ["prompt: is empty"]),
    ({"messages": []}, ["messages: is empty"]),
    ({"messages": [{"role": "tool", "content": "x"}]}, ["messages.0.role"]),
    ({"prompt": "a", "colour": "red"}, ["unknown key 'colour'"]),
    ({"prompt": "a", "variables": {"prompt": "x"}}, ["reserved name"]),
    ({"prompt": "a", "variables": {"two words": "x"}}, ["not a valid name"]),
])
def test_malformed_cases_are_refused(case, words):
    message = refusal({"cases": [case]})
    for word in words:
        assert word in message


def test_case_ids_default_to_their_position_and_must_be_unique():
    s = suite(cases=[{"prompt": "a"}, {"id": "case-1", "prompt": "b"}, {"prompt": "c"}])
    assert [c.id for c in s.cases] == ["case-1-2", "case-1", "case-3"]
    assert "used twice" in refusal({"cases": [{"id": "x", "prompt": "a"}, {"id": "x", "prompt": "b"}]})


def test_suite_ids_and_names_are_checked():
    assert "not a valid suite id" in refusal({"id": "../etc", "cases": [{"prompt": "a"}]})
    with pytest.raises(ValidationError):
        Suite.model_validate({"name": "", "cases": [{"prompt": "a"}]})
    with pytest.raises(ValidationError):
        Suite.model_validate({"name": "n", "cases": []})


def test_a_suite_holds_at_most_ten_thousand_cases():
    cases = [{"prompt": f"q {n}"} for n in range(MAX_CASES)]
    assert len(Suite.model_validate({"name": "big", "cases": cases}).cases) == MAX_CASES
    assert f"at most {MAX_CASES}" in refusal({"cases": [*cases, {"prompt": "one more"}]})


def test_all_checks_and_preview():
    s = suite(checks=[{"kind": "max_length", "value": 10}],
              cases=[{"prompt": "A  long\n{{x}}", "variables": {"x": "y" * 200}, "checks": [{"kind": "json"}]},
                     {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                                   {"role": "user", "content": "last"}]}])
    assert [c.kind for c in s.cases[0].all_checks(s)] == ["max_length", "json"]
    preview = s.cases[0].preview()
    assert preview.startswith("A long yyy") and len(preview) == 120 and preview.endswith("…")
    assert s.cases[1].preview() == "last"


# --------------------------------------------------------------------------- store


@pytest.fixture()
def store(tmp_path):
    s = SuiteStore(tmp_path / "home" / "suites.db")
    yield s
    s.close()


def test_create_get_list_replace_delete(store):
    created = store.create(suite(name="My first suite!", description="d", checks=[{"kind": "json"}]))
    assert created.id.startswith("my-first-suite-") and created.created_at == created.updated_at
    assert created.created_at.endswith("Z")
    got = store.get(created.id)
    assert got == created
    assert [(s.id, s.name, s.cases) for s in store.list()] == [(created.id, "My first suite!", 1)]

    changed = suite(name="Renamed", cases=[{"prompt": "a"}, {"prompt": "b"}])
    replaced = store.replace(created.id, changed)
    assert replaced.id == created.id and replaced.created_at == created.created_at
    assert replaced.updated_at >= created.updated_at
    assert [c.prompt for c in store.get(created.id).cases] == ["a", "b"]
    assert store.get(created.id).checks == []
    assert store.list()[0].cases == 2

    store.delete(created.id)
    assert store.list() == []
    with pytest.raises(SuiteNotFound):
        store.get(created.id)
    with pytest.raises(SuiteNotFound):
        store.delete(created.id)
    with pytest.raises(SuiteNotFound):
        store.replace(created.id, changed)


def test_a_given_id_is_kept_and_cannot_be_taken_twice(store):
    assert store.create(suite(id="fixed.id_1")).id == "fixed.id_1"
    with pytest.raises(SuiteConflict) as info:
        store.create(suite(id="fixed.id_1"))
    assert info.value.hint
    names = {store.create(suite(name="same")).id for _ in range(5)}
    assert len(names) == 5


def test_list_is_most_recently_changed_first(store):
    a = store.create(suite(name="a"))
    b = store.create(suite(name="b"))
    store.replace(a.id, suite(name="a2"))
    assert [s.id for s in store.list()][:2] == [a.id, b.id]


def test_rich_cases_survive_the_store_exactly(store, tmp_path):
    created = store.create(suite(cases=RICH_CASES, system_prompt="sys"))
    store.close()
    again = SuiteStore(tmp_path / "home" / "suites.db")
    try:
        assert again.get(created.id) == created
    finally:
        again.close()


def test_a_failed_write_changes_nothing(store):
    kept = store.create(suite(name="kept"))
    with pytest.raises(InvalidSuite):
        store.create(suite(name="broken", cases=[{"prompt": "fine"}, {"prompt": "bad \ud800 surrogate"}]))
    with pytest.raises(InvalidSuite):
        store.replace(kept.id, suite(name="broken", cases=[{"prompt": "bad \udfff"}]))
    assert [s.name for s in store.list()] == ["kept"]
    assert store.get(kept.id) == kept


def test_database_is_wal_private_and_shared_with_other_tables(tmp_path):
    path = tmp_path / "suites.db"
    # The run store may open the file first and create its own tables.
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE runs (id TEXT PRIMARY KEY)")
    other.commit()
    other.close()
    s = SuiteStore(path)
    try:
        s.create(suite())
        assert s._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in s._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "suites", "cases", "suites_schema_version"} <= tables
    finally:
        s.close()
    fresh = tmp_path / "fresh" / "suites.db"
    SuiteStore(fresh).close()
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "suites.db"
    SuiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO suites_schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(SuitesUnavailable) as info:
        SuiteStore(path)
    assert "version 99" in info.value.message and info.value.hint


def test_unusable_file_says_so(tmp_path):
    path = tmp_path / "suites.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SuitesUnavailable) as info:
        SuiteStore(path)
    assert str(path) in info.value.message and info.value.hint


def test_store_is_safe_across_threads(store):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for k in range(5):
                created = store.create(suite(name=f"t{n}-{k}"))
                assert store.get(created.id).name == f"t{n}-{k}"
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(store.list()) == 20


# --------------------------------------------------------------------------- files


def dumped(cases: list[Case]) -> list[dict]:
    return [c.model_dump() for c in cases]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_then_import_gives_identical_cases(fmt):
    original = suite(cases=RICH_CASES).cases
    text = write_cases(original, fmt)
    again = read_cases(text, fmt)
    assert dumped(again) == dumped(original)
    assert write_cases(again, fmt) == text


def test_jsonl_is_one_case_object_a_line():
    text = write_cases(suite(cases=RICH_CASES).cases, "jsonl")
    lines = text.removesuffix("\n").split("\n")
    assert len(lines) == len(RICH_CASES) and len(text.splitlines()) > len(lines)  # U+2028 is not a line end
    first = json.loads(lines[0])
    assert first == {"id": "plain", "prompt": "Say hi"}
    assert "Zürich" in lines[1]  # UTF-8, not \u escapes


def test_csv_header_and_variable_columns():
    text = write_cases(suite(cases=RICH_CASES).cases, "csv")
    assert text.splitlines()[0] == "id,prompt,system_prompt,expected,checks,messages,text,lang,unused"
    plain = write_cases(suite().cases, "csv")
    assert plain.splitlines()[0] == "id,prompt,system_prompt,expected,checks,country"


def test_csv_written_by_hand_with_defaults():
    text = ("prompt,checks,city\n"
            "Weather in {{city}}?,,Oslo\n"
            "\"Say \"\"hi\"\"\",\"[{\"\"kind\"\": \"\"contains\"\", \"\"value\"\": \"\"hi\"\"}]\",\n")
    cases = read_cases("\ufeff" + text, "csv")
    assert [c.id for c in cases] == ["case-1", "case-2"]
    assert cases[0].variables == {"city": "Oslo"} and cases[0].checks == []
    assert cases[1].prompt == 'Say "hi"' and cases[1].variables == {}
    assert cases[1].checks == [Check(kind="contains", value="hi")]


@pytest.mark.parametrize(("text", "line", "words"), [
    ('{"prompt": "a"}\n{"prompt": "b"\n', 2, ["not valid JSON"]),
    ('{"prompt": "a"}\n\n{"expected": "b"}\n', 3, ["either a prompt or messages"]),
    ('{"prompt": "a", "tags": ["x"]}\n', 1, ["unknown key 'tags'"]),
    ('["a"]\n', 1, ["JSON object"]),
    ('{"prompt": "{{x}}"}\n', 1, ["unknown template variable x"]),
    ('{"prompt": "a", "checks": [{"kind": "regex", "value": "("}]}\n', 1, ["checks.0", "invalid regular expression"]),
    ('{"id": "a", "prompt": "a"}\n{"id": "a", "prompt": "b"}\n', 2, ["used on line 1"]),
    ("\n\n", 1, ["no cases"]),
])
def test_malformed_jsonl_is_refused_with_its_line_number(text, line, words):
    with pytest.raises(InvalidSuiteFile) as info:
        read_cases(text, "jsonl")
    assert info.value.message.startswith(f"line {line}: ") and info.value.details == {"line": line}
    assert "Nothing was imported" in info.value.hint
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize(("text", "line", "words"), [
    ("id,prompt,checks\na,hi,\nb,ho,[{\"kind\":\n", 3, ["checks: not valid JSON"]),
    ('id,prompt,checks\na,hi,"{""kind"": ""json""}"\n', 2, ["must be a JSON array"]),
    ('id,prompt,checks\na,hi,"[{""kind"": ""nope""}]"\n', 2, ["checks.0.kind"]),
    ("id,question,expected\na,hi,x\n", 1, ["no prompt column"]),
    ("id,prompt,my var\na,hi,x\n", 1, ["'my var'", "not a known column"]),
    ("id,prompt,prompt\na,hi,x\n", 1, ["twice"]),
    ('id,prompt\n"a\nmultiline id",hi\nb,ho,extra\n', 4, ["3 cells", "2 columns"]),
    ("id,prompt\na,\n", 2, ["either a prompt or messages"]),
    ("id,prompt\na,{{who}}\n", 2, ["unknown template variable who"]),
    ('id,prompt\na,"never closed\n', 2, ["not valid CSV"]),
    ("", 1, ["empty"]),
    ("id,prompt\n", 1, ["no cases"]),
])
def test_malformed_csv_is_refused_with_its_line_number(text, line, words):
    with pytest.raises(InvalidSuiteFile) as info:
        read_cases(text, "csv")
    assert info.value.message.startswith(f"line {line}: "), info.value.message
    for word in words:
        assert word in info.value.message


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_of_more_than_ten_thousand_cases_is_refused(fmt):
    cases = suite(cases=[{"prompt": f"q{n}"} for n in range(MAX_CASES)]).cases
    text = write_cases(cases, fmt)
    assert len(read_cases(text, fmt)) == MAX_CASES
    extra = '{"prompt": "one more"}\n' if fmt == "jsonl" else "x,one more,,,\r\n"
    with pytest.raises(InvalidSuiteFile) as info:
        read_cases(text + extra, fmt)
    assert f"at most {MAX_CASES}" in info.value.message
    assert info.value.message.startswith(f"line {MAX_CASES + (1 if fmt == 'jsonl' else 2)}: ")


def test_jsonl_suite_line_carries_the_suites_settings():
    s = suite(description="d", system_prompt="sys", checks=[{"kind": "max_length", "value": 9}], cases=RICH_CASES)
    text = write_suite_file(s, "jsonl")
    found = read_suite_file(text, "jsonl")
    assert found.settings is not None
    assert (found.settings.name, found.settings.description, found.settings.system_prompt) == ("Capitals", "d", "sys")
    assert found.settings.checks == s.checks
    assert dumped(found.cases) == dumped(s.cases)
    assert read_suite_file(write_cases(s.cases, "jsonl"), "jsonl").settings is None  # the line is optional
    assert write_suite_file(s, "csv") == write_cases(s.cases, "csv")  # CSV has no place for it
    with pytest.raises(InvalidSuiteFile) as info:
        read_suite_file('{"suite": {"name": "x"}, "prompt": "p"}\n', "jsonl")
    assert info.value.message.startswith("line 1: ") and "alone" in info.value.message

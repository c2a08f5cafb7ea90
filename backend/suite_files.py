"""Suite files: cases read from and written to JSONL (one case a line) and CSV (one case a row)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.suites import (
    MAX_CASES,
    RESERVED_NAMES,
    VARIABLE_NAME,
    Case,
    Check,
    InvalidSuiteFile,
    Suite,
    assign_case_ids,
    describe_validation_error,
    template_names,
)

FileFormat = Literal["jsonl", "csv"]
CSV_COLUMNS = ("id", "prompt", "system_prompt", "expected", "checks")
_CASE_KEYS = tuple(Case.model_fields)
_HINTS = {
    "jsonl": "Each line is one case as a JSON object with the keys " + ", ".join(_CASE_KEYS)
             + " (a prompt or messages is required); the first line may instead be {\"suite\": {\"name\", "
               "\"description\", \"system_prompt\", \"checks\"}}. Fix the line named and import the file again. "
               "Nothing was imported.",
    "csv": "The first row is the header: " + ",".join(CSV_COLUMNS) + " (prompt is required; messages is an optional "
           "JSON column; any other column is a variable); checks is a JSON array. Fix the line named and import "
           "the file again. Nothing was imported.",
}


def _refuse(fmt: FileFormat, line: int, what: str) -> InvalidSuiteFile:
    return InvalidSuiteFile(f"line {line}: {what}", hint=_HINTS[fmt], details={"line": line})


def _check_count(fmt: FileFormat, count: int, line: int) -> None:
    if count > MAX_CASES:
        raise _refuse(fmt, line, f"more than {MAX_CASES} cases; a suite holds at most {MAX_CASES} "
                                 "(split the file into several suites)")


class SuiteSettings(BaseModel):
    """What a JSONL file's optional first line ``{"suite": {...}}`` says about the suite as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str = ""
    system_prompt: str | None = None
    checks: list[Check] = Field(default_factory=list)


@dataclass
class SuiteFile:
    """A file's content: its cases, and the suite's settings when the file carries them (JSONL)."""

    cases: list[Case]
    settings: SuiteSettings | None = None


# --------------------------------------------------------------------------- reading


def read_suite_file(text: str, fmt: FileFormat) -> SuiteFile:
    """The cases of a JSONL or CSV file, all valid, ids assigned, and the suite line of a JSONL file.

    Raises:
        InvalidSuiteFile: a line is malformed; the message starts with ``line N:``. Nothing is
            returned in part: the caller stores all the cases or none.
    """
    text = text.removeprefix("\ufeff")  # a byte-order mark, as spreadsheet programs write
    found = read_jsonl(text) if fmt == "jsonl" else SuiteFile(read_csv(text))
    if not found.cases:
        raise _refuse(fmt, 1, "the file has no cases; a suite needs at least one")
    try:
        assign_case_ids(found.cases)
    except ValueError as exc:
        raise InvalidSuiteFile(str(exc), hint=_HINTS[fmt]) from None
    return found


def read_cases(text: str, fmt: FileFormat) -> list[Case]:
    """The cases of a JSONL or CSV file (see :func:`read_suite_file`)."""
    return read_suite_file(text, fmt).cases


def read_jsonl(text: str) -> SuiteFile:
    """Cases from JSON Lines: one case object a line, the first line possibly the suite's settings;
    blank lines are skipped."""
    cases: list[Case] = []
    settings: SuiteSettings | None = None
    seen: dict[str, int] = {}
    # Only \n ends a line: str.splitlines() would also split at U+2028, U+0085 and \x1c, which JSON
    # strings may hold unescaped.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise _refuse("jsonl", number, f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise _refuse("jsonl", number, f"a case is a JSON object, not {type(data).__name__}")
        if "suite" in data:
            if cases or settings is not None or set(data) != {"suite"}:
                raise _refuse("jsonl", number, 'the {"suite": {...}} line must be the first line, alone on it')
            try:
                settings = SuiteSettings.model_validate(data["suite"])
            except ValidationError as exc:
                raise _refuse("jsonl", number, "suite: " + describe_validation_error(exc)) from None
            continue
        try:
            case = Case.model_validate(data)
        except ValidationError as exc:
            raise _refuse("jsonl", number, describe_validation_error(exc)) from None
        _unique(case, number, seen, "jsonl")
        cases.append(case)
        _check_count("jsonl", len(cases), number)
    return SuiteFile(cases, settings)


def _unique(case: Case, line: int, seen: dict[str, int], fmt: FileFormat) -> None:
    if case.id:
        if case.id in seen:
            raise _refuse(fmt, line, f"the case id {case.id!r} is used on line {seen[case.id]} too; ids are unique")
        seen[case.id] = line


def _json_cell(fmt: FileFormat, line: int, column: str, cell: str, kind: type) -> Any:
    try:
        value = json.loads(cell)
    except ValueError as exc:
        raise _refuse(fmt, line, f"{column}: not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise _refuse(fmt, line, f"{column}: must be a JSON array, not {type(value).__name__}")
    return value


def read_csv(text: str) -> list[Case]:
    """Cases from CSV: a header row, then one case a row (cells may hold quoted newlines).

    An empty cell is an absent value; an empty variable cell is the empty string only when the
    row's prompt uses that variable.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise _refuse("csv", 1, f"the header is not valid CSV: {exc}") from None
    if header is None:
        raise _refuse("csv", 1, "the file is empty; the first row must be the header")
    header = [h.strip() for h in header]
    _check_header(header)
    variables = [h for h in header if h not in RESERVED_NAMES]
    cases: list[Case] = []
    seen: dict[str, int] = {}
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _refuse("csv", start, f"not valid CSV: {exc}") from None
        number, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _refuse("csv", number, f"{len(row)} cells, but the header has {len(header)} columns")
        cells = dict(zip(header, row))
        data: dict[str, Any] = {"variables": {}}
        if cells.get("id"):
            data["id"] = cells["id"]
        for column in ("prompt", "system_prompt", "expected"):
            if cells.get(column):
                data[column] = cells[column]
        if cells.get("messages", "").strip():
            data["messages"] = _json_cell("csv", number, "messages", cells["messages"], list)
        if cells.get("checks", "").strip():
            data["checks"] = _json_cell("csv", number, "checks", cells["checks"], list)
        used = set(template_names(data.get("prompt", "")))
        for name in variables:
            if cells[name] or name in used:
                data["variables"][name] = cells[name]
        try:
            case = Case.model_validate(data)
        except ValidationError as exc:
            raise _refuse("csv", number, describe_validation_error(exc)) from None
        _unique(case, number, seen, "csv")
        cases.append(case)
        _check_count("csv", len(cases), number)
    return cases


def _check_header(header: list[str]) -> None:
    if "prompt" not in header and "messages" not in header:
        raise _refuse("csv", 1, f"the header {','.join(header)!r} has no prompt column; "
                                f"it must start {','.join(CSV_COLUMNS)}")
    for n, name in enumerate(header):
        if name in header[:n]:
            raise _refuse("csv", 1, f"the header names the column {name!r} twice")
        if name not in RESERVED_NAMES and not VARIABLE_NAME.fullmatch(name):
            raise _refuse("csv", 1, f"the header's column {name!r} is not a known column ({', '.join(RESERVED_NAMES)}) "
                                    "nor a valid variable name (letters, digits and _, not starting with a digit)")


# --------------------------------------------------------------------------- writing


def case_json(case: Case) -> dict[str, Any]:
    """A case as the JSON object one JSONL line holds (values left out when empty or absent)."""
    data: dict[str, Any] = {"id": case.id}
    if case.prompt is not None:
        data["prompt"] = case.prompt
    if case.messages is not None:
        data["messages"] = [m.model_dump() for m in case.messages]
    if case.variables:
        data["variables"] = case.variables
    for key in ("system_prompt", "expected"):
        if getattr(case, key) is not None:
            data[key] = getattr(case, key)
    if case.checks:
        data["checks"] = [_check_json(c) for c in case.checks]
    return data


def _check_json(check: Check) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": check.kind}
    if check.value is not None:
        data["value"] = check.value
    if check.ignore_case:
        data["ignore_case"] = True
    return data


def write_jsonl(cases: list[Case]) -> str:
    """The cases as JSON Lines (UTF-8 text, one case a line)."""
    return "".join(json.dumps(case_json(c), ensure_ascii=False) + "\n" for c in cases)


def suite_line(suite: Suite) -> str:
    """The JSONL line that carries a suite's own settings: name, description, system prompt, checks."""
    settings: dict[str, Any] = {"name": suite.name}
    if suite.description:
        settings["description"] = suite.description
    if suite.system_prompt is not None:
        settings["system_prompt"] = suite.system_prompt
    if suite.checks:
        settings["checks"] = [_check_json(c) for c in suite.checks]
    return json.dumps({"suite": settings}, ensure_ascii=False) + "\n"


def write_suite_file(suite: Suite, fmt: FileFormat) -> str:
    """A suite as a file import reads back: JSONL starts with the suite line, then the cases; CSV
    holds the cases only (it has no place for the suite's settings)."""
    return suite_line(suite) + write_jsonl(suite.cases) if fmt == "jsonl" else write_csv(suite.cases)


def write_csv(cases: list[Case]) -> str:
    """The cases as CSV: the fixed columns, ``messages`` when a case has chat messages, then one
    column per variable name (in order of first use)."""
    variables = list(dict.fromkeys(name for c in cases for name in c.variables))
    columns = [*CSV_COLUMNS]
    if any(c.messages is not None for c in cases):
        columns.append("messages")
    columns += variables
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for c in cases:
        row = {
            "id": c.id, "prompt": c.prompt or "", "system_prompt": c.system_prompt or "",
            "expected": c.expected or "",
            "checks": json.dumps([_check_json(k) for k in c.checks], ensure_ascii=False) if c.checks else "",
            "messages": json.dumps([m.model_dump() for m in c.messages], ensure_ascii=False) if c.messages else "",
            **c.variables,
        }
        writer.writerow([row.get(col, "") for col in columns])
    return out.getvalue()


def write_cases(cases: list[Case], fmt: FileFormat) -> str:
    """The cases in ``fmt``."""
    return write_jsonl(cases) if fmt == "jsonl" else write_csv(cases)


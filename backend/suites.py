"""Prompt suites: named lists of cases (prompt or chat messages, variables, checks) and their SQLite store."""

from __future__ import annotations

import re
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from backend.errors import ModelDeckError

MAX_CASES = 10_000
MAX_ID_CHARS = 200
CHECK_KINDS = ("contains", "not_contains", "regex", "equals", "json", "json_schema", "max_length")
CheckKind = Literal["contains", "not_contains", "regex", "equals", "json", "json_schema", "max_length"]
_TEXT_KINDS = ("contains", "not_contains", "regex", "equals")
# The columns a CSV file gives a meaning of its own; no variable may carry one of these names.
RESERVED_NAMES = ("id", "prompt", "messages", "system_prompt", "expected", "checks")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# {{name}} or {{ name }}; braces around anything that is not a name are left as they are.
_TEMPLATE_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SUITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


# --------------------------------------------------------------------------- errors


class SuiteNotFound(ModelDeckError):
    """No suite has this id (deleted, or never created)."""

    status = 404
    code = "suite_not_found"


class SuiteConflict(ModelDeckError):
    """A suite with this id exists already, or the suite is in use by a running run."""

    status = 409
    code = "suite_conflict"


class InvalidSuiteFile(ModelDeckError):
    """An imported JSONL or CSV file has a malformed line; the message names it."""

    status = 422
    code = "invalid_suite_file"


class SuitesUnavailable(ModelDeckError):
    """The suites database cannot be used (written by a newer ModelDeck, or not writable)."""

    status = 503
    code = "suites_unavailable"


# --------------------------------------------------------------------------- models


class Check(BaseModel):
    """One test an answer must pass.

    ``contains`` / ``not_contains`` / ``equals`` / ``regex`` take a string ``value`` (``regex`` is a
    Python regular expression, searched anywhere in the answer; ``equals`` ignores leading and
    trailing white space); ``json`` takes none (the answer, less a Markdown code fence, parses as
    JSON); ``json_schema`` takes a JSON Schema (Draft 2020-12) the parsed answer must satisfy;
    ``max_length`` takes the most characters the answer may have.
    """

    model_config = ConfigDict(extra="forbid")

    kind: CheckKind
    value: StrictStr | StrictInt | dict[str, Any] | None = None
    ignore_case: bool = False

    @model_validator(mode="after")
    def _value_fits_kind(self) -> Check:
        kind, value = self.kind, self.value
        if kind in _TEXT_KINDS:
            if not isinstance(value, str):
                raise ValueError(f"a {kind} check needs a string value")
            if kind == "regex":
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValueError(f"value: invalid regular expression {value!r}: {exc}") from None
        elif kind == "json":
            if value is not None:
                raise ValueError("a json check takes no value (leave it out or null)")
        elif kind == "json_schema":
            if not isinstance(value, dict):
                raise ValueError("a json_schema check needs a JSON Schema object as its value")
            try:
                jsonschema.Draft202012Validator.check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"value: invalid JSON Schema: {exc.message}") from None
        elif kind == "max_length":
            if not isinstance(value, int) or value < 0:
                raise ValueError("a max_length check needs a whole number of characters (0 or more) as its value")
        return self


class Message(BaseModel):
    """One chat message of a case."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


def template_names(template: str) -> list[str]:
    """The variable names a ``{{name}}`` template uses, in order of first use."""
    return list(dict.fromkeys(_TEMPLATE_FIELD.findall(template)))


def render_template(template: str, variables: dict[str, str]) -> str:
    """``template`` with every ``{{name}}`` replaced by ``variables[name]``.

    Raises:
        KeyError: a name the template uses has no variable.
    """
    return _TEMPLATE_FIELD.sub(lambda m: variables[m.group(1)], template)


class Case(BaseModel):
    """One prompt of a suite: a ``{{variable}}`` template or chat messages, with its checks.

    Exactly one of ``prompt`` and ``messages`` is given. ``system_prompt`` replaces the suite's;
    ``expected`` is the answer a person hopes for (shown beside the answers, not a check).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="", max_length=MAX_ID_CHARS,
                    description='Unique in the suite; "case-<n>" (its position) when left empty.')
    prompt: str | None = Field(default=None, description="A template: {{name}} is filled from variables.")
    messages: list[Message] | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    system_prompt: str | None = None
    expected: str | None = None
    checks: list[Check] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Case:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either a prompt or messages (exactly one of them)")
        if self.prompt is not None:
            if not self.prompt.strip():
                raise ValueError("prompt: is empty; write the prompt text")
            missing = [n for n in template_names(self.prompt) if n not in self.variables]
            if missing:
                raise ValueError(f"prompt: unknown template variable {', '.join(missing)} "
                                 f"(the case's variables: {', '.join(self.variables) or 'none'}); "
                                 "add it to variables or remove {{" + missing[0] + "}}")
        elif not self.messages:
            raise ValueError("messages: is empty; give at least one message")
        for name in self.variables:
            if not VARIABLE_NAME.fullmatch(name):
                raise ValueError(f"variables: {name!r} is not a valid name (letters, digits and _; "
                                 "not starting with a digit)")
            if name in RESERVED_NAMES:
                raise ValueError(f"variables: {name!r} is a reserved name ({', '.join(RESERVED_NAMES)})")
        return self

    def render(self, suite: Suite) -> list[dict[str, str]]:
        """The chat messages to send: the system prompt (the case's, else the suite's) first when
        there is one and the messages do not start with their own, then the rendered prompt as the
        user's message (or the case's messages)."""
        system = self.system_prompt if self.system_prompt is not None else suite.system_prompt
        if self.messages is not None:
            out = [{"role": m.role, "content": m.content} for m in self.messages]
        else:
            out = [{"role": "user", "content": render_template(self.prompt or "", self.variables)}]
        if system and out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": system})
        return out

    def preview(self, chars: int = 120) -> str:
        """The case's prompt (or last user message), shortened, for tables."""
        if self.prompt is not None:
            text = render_template(self.prompt, self.variables)
        else:
            users = [m.content for m in self.messages or () if m.role == "user"]
            text = users[-1] if users else (self.messages or [Message(role="user", content="")])[-1].content
        text = " ".join(text.split())
        return text if len(text) <= chars else text[: chars - 1] + "…"

    def all_checks(self, suite: Suite) -> list[Check]:
        """The suite's checks followed by the case's own."""
        return [*suite.checks, *self.checks]


def describe_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: what`` for each problem, unknown keys named as such."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            problems.append(f"unknown key {loc!r}")
            continue
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(problems)


def _case_label(raw: Any, number: int) -> str:
    given = raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None)
    return f"case {given!r} (number {number})" if given else f"case number {number}"


def assign_case_ids(cases: list[Case]) -> None:
    """Give every case without an id ``case-<n>`` (its 1-based position), avoiding ids in use.

    Raises:
        ValueError: two cases were given the same id.
    """
    seen: set[str] = set()
    for case in cases:
        if case.id:
            if case.id in seen:
                raise ValueError(f"case id {case.id!r} is used twice; ids must be unique in a suite")
            seen.add(case.id)
    for n, case in enumerate(cases, 1):
        if not case.id:
            candidate, k = f"case-{n}", 2
            while candidate in seen:
                candidate, k = f"case-{n}-{k}", k + 1
            case.id = candidate
            seen.add(candidate)


class Suite(BaseModel):
    """A named list of cases, with a system prompt and checks that apply to every case.

    ``id`` and the timestamps are made by the server (an ``id`` given on creation is kept).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(default="", max_length=100,
                    description="Made from the name when left empty; letters, digits, '.', '_', '-'.")
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    system_prompt: str | None = None
    checks: list[Check] = Field(default_factory=list, description="Checks every case's answer must pass.")
    cases: list[Case] = Field(min_length=1, max_length=MAX_CASES)
    created_at: str = ""
    updated_at: str = ""

    @model_validator(mode="before")
    @classmethod
    def _validate_cases(cls, data: Any) -> Any:
        # Each case is validated here so that an error names the case (its id and position),
        # not only the index pydantic would report.
        if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
            return data
        raw_cases = data["cases"]
        if len(raw_cases) > MAX_CASES:
            raise ValueError(f"cases: {len(raw_cases)} cases; a suite holds at most {MAX_CASES}")
        cases = []
        for n, raw in enumerate(raw_cases, 1):
            if isinstance(raw, Case):
                cases.append(raw)
                continue
            try:
                cases.append(Case.model_validate(raw))
            except ValidationError as exc:
                raise ValueError(f"{_case_label(raw, n)}: {describe_validation_error(exc)}") from None
        return {**data, "cases": cases}

    @model_validator(mode="after")
    def _ids(self) -> Suite:
        if self.id and not SUITE_ID.fullmatch(self.id):
            raise ValueError(f"id: {self.id!r} is not a valid suite id (letters, digits, '.', '_', '-'; "
                             "starting with a letter or digit; at most 100)")
        assign_case_ids(self.cases)
        return self


class SuiteSummary(BaseModel):
    """One line of the suite list."""

    id: str
    name: str
    description: str
    cases: int
    updated_at: str

"""Prompt suites: named lists of cases (prompt or chat messages, variables, checks) and their SQLite store."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
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


class InvalidSuite(ModelDeckError):
    """A suite cannot be stored as given (its text cannot be encoded as UTF-8)."""

    status = 422
    code = "invalid_suite"


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
                except (re.error, OverflowError, RecursionError) as exc:
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
            outside = _outside_refs(value)
            if outside:
                # jsonschema would fetch such a reference over the network while checking an answer.
                raise ValueError(f"value: the JSON Schema refers to {outside[0]!r} outside itself; ModelDeck does "
                                 "not fetch schemas: put the definition under $defs and refer to it as "
                                 "'#/$defs/<name>'")
        elif kind == "max_length":
            if not isinstance(value, int) or value < 0:
                raise ValueError("a max_length check needs a whole number of characters (0 or more) as its value")
        return self


def _outside_refs(schema: Any) -> list[str]:
    """The ``$ref`` / ``$dynamicRef`` values in ``schema`` that do not point inside the document."""
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(item, str) and not item.startswith("#"):
                    found.append(item)
                else:
                    stack.append(item)
        elif isinstance(node, list):
            stack.extend(node)
    return found


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
    created_at: str = Field(default="", description="Set by the server (ISO 8601, UTC); ignored when sent.")
    updated_at: str = Field(default="", description="Set by the server (ISO 8601, UTC); ignored when sent.")

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


# --------------------------------------------------------------------------- store

SCHEMA_VERSION = 1
# IF NOT EXISTS throughout: the run store (backend/suite_runs.py) keeps its tables in the same file
# and may create them first.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS suites_schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS suites (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    system_prompt TEXT,
    checks        TEXT NOT NULL,   -- JSON list of checks applied to every case
    case_count    INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    suite_id  TEXT NOT NULL REFERENCES suites (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    id        TEXT NOT NULL,
    data      TEXT NOT NULL,       -- the case's JSON
    PRIMARY KEY (suite_id, position)
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_suite_id(name: str) -> str:
    """A readable, unique-enough id: the name as a slug plus six random hex digits."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "suite"
    return f"{slug}-{secrets.token_hex(3)}"


class SuiteStore:
    """Suites in one SQLite file (WAL mode), shared with the run store.

    One connection is shared by all threads behind a lock; every method blocks, so async code
    calls it through a thread. A suite is written in one transaction: a failed write leaves the
    store as it was.
    """

    def __init__(self, path: Path):
        """
        Args:
            path: the database file (``<home>/suites.db``); missing folders are created (0700).

        Raises:
            SuitesUnavailable: the file cannot be created or read, or a newer ModelDeck wrote it.
        """
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.path.exists():
                # Prompts can be private: the file is the owner's alone (SQLite copies the mode to -wal/-shm).
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise SuitesUnavailable(
                f"Cannot open the suites database {self.path}: {exc}.",
                hint="Check that the folder is writable, or move the file aside and start ModelDeck again.",
            ) from exc

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            version = conn.execute("SELECT max(version) FROM suites_schema_version").fetchone()[0]
            if version is None:
                conn.execute("INSERT INTO suites_schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise SuitesUnavailable(
                    f"The suites database {self.path} has schema version {version}; this ModelDeck "
                    f"understands up to {SCHEMA_VERSION}.",
                    hint="Update ModelDeck, or point MODELDECK_HOME at another folder.")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------ reading

    def list(self) -> list[SuiteSummary]:
        """Every suite, most recently changed first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, name, description, case_count, updated_at FROM suites "
                "ORDER BY updated_at DESC, id").fetchall()
        return [SuiteSummary(id=r[0], name=r[1], description=r[2], cases=r[3], updated_at=r[4]) for r in rows]

    def exists(self, suite_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM suites WHERE id = ?", (suite_id,)).fetchone() is not None

    def get(self, suite_id: str) -> Suite:
        """The suite with all its cases.

        Raises:
            SuiteNotFound: no suite has this id.
        """
        with self._lock:
            row = self._conn.execute(
                "SELECT id, name, description, system_prompt, checks, created_at, updated_at "
                "FROM suites WHERE id = ?", (suite_id,)).fetchone()
            if row is None:
                raise SuiteNotFound(f"No suite has the id {suite_id!r}.",
                                    hint="GET /api/suites lists the suites there are.")
            cases = self._conn.execute(
                "SELECT data FROM cases WHERE suite_id = ? ORDER BY position", (suite_id,)).fetchall()
        return Suite.model_validate({
            "id": row[0], "name": row[1], "description": row[2], "system_prompt": row[3],
            "checks": json.loads(row[4]), "created_at": row[5], "updated_at": row[6],
            "cases": [json.loads(c[0]) for c in cases]})

    # ------------------------------------------------------------------ writing

    def create(self, suite: Suite) -> Suite:
        """Store a new suite; its id is made from its name unless it has one.

        Raises:
            SuiteConflict: a suite with the given id exists.
        """
        given = bool(suite.id)
        now = _now()
        for _ in range(5):
            stored = suite.model_copy(update={"id": suite.id if given else make_suite_id(suite.name),
                                              "created_at": now, "updated_at": now})
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    taken = self._conn.execute("SELECT 1 FROM suites WHERE id = ?", (stored.id,)).fetchone()
                    if taken is None:
                        self._write(stored, insert=True)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            if taken is None:
                return stored
            if given:
                raise SuiteConflict(f"A suite with the id {stored.id!r} exists already.",
                                    hint="Leave the id out to get a new one, or PUT /api/suites/{id} to replace it.")
        raise SuiteConflict("Could not make a free suite id.", hint="Try again.")  # pragma: no cover

    def replace(self, suite_id: str, suite: Suite) -> Suite:
        """Replace a suite's name, settings and cases (its id and creation time stay).

        Raises:
            SuiteNotFound: no suite has this id.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT created_at FROM suites WHERE id = ?", (suite_id,)).fetchone()
                if row is None:
                    raise SuiteNotFound(f"No suite has the id {suite_id!r}.",
                                        hint="POST /api/suites creates a suite; GET /api/suites lists them.")
                stored = suite.model_copy(update={"id": suite_id, "created_at": row[0], "updated_at": _now()})
                self._conn.execute("DELETE FROM cases WHERE suite_id = ?", (suite_id,))
                self._write(stored, insert=False)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return stored

    def delete(self, suite_id: str) -> None:
        """Remove a suite and its cases.

        Raises:
            SuiteNotFound: no suite has this id.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM cases WHERE suite_id = ?", (suite_id,))
                gone = self._conn.execute("DELETE FROM suites WHERE id = ?", (suite_id,)).rowcount
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        if not gone:
            raise SuiteNotFound(f"No suite has the id {suite_id!r}.", hint="GET /api/suites lists the suites there are.")

    def _write(self, suite: Suite, *, insert: bool) -> None:
        try:
            self._insert(suite, insert=insert)
        except UnicodeEncodeError as exc:  # a lone surrogate (\ud800) that JSON can carry but UTF-8 cannot
            raise InvalidSuite(f"The suite has text that is not valid Unicode: {exc.reason} "
                               f"({exc.object[exc.start:exc.end]!a}).",
                               hint="Remove the unpaired surrogate escape (\\ud800-\\udfff) and send it again.") from None

    def _insert(self, suite: Suite, *, insert: bool) -> None:
        checks = json.dumps([c.model_dump(mode="json") for c in suite.checks], ensure_ascii=False)
        values = (suite.name, suite.description, suite.system_prompt, checks, len(suite.cases),
                  suite.created_at, suite.updated_at, suite.id)
        if insert:
            self._conn.execute(
                "INSERT INTO suites (name, description, system_prompt, checks, case_count, created_at, "
                "updated_at, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        else:
            self._conn.execute(
                "UPDATE suites SET name = ?, description = ?, system_prompt = ?, checks = ?, case_count = ?, "
                "created_at = ?, updated_at = ? WHERE id = ?", values)
        self._conn.executemany(
            "INSERT INTO cases (suite_id, position, id, data) VALUES (?, ?, ?, ?)",
            ((suite.id, n, case.id, json.dumps(case.model_dump(mode="json", exclude_none=True), ensure_ascii=False))
             for n, case in enumerate(suite.cases)))

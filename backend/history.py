"""The playground history: every proxied run (request, output, metrics) in a local SQLite file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from backend.errors import ModelDeckError

SCHEMA_VERSION = 1
PREVIEW_CHARS = 120

# Keys of the request that are the conversation itself, stored apart from the parameters.
# Embeddings send "input" where completions send "prompt"; both land in ``prompt``.
_CONTENT_KEYS = ("messages", "prompt", "input")
# Keys that are not parameters: "model" has its own column.
_NOT_PARAMS = {"model", *_CONTENT_KEYS}

# Key names (lower-cased, punctuation removed) that can carry credentials. Matched whole
# or as a suffix, so "max_tokens" and "logprobs" stay while "x-api-key" and "openai_api_key" go.
_SECRET_NAMES = {"authorization", "proxyauthorization", "apikey", "token", "accesstoken",
                 "refreshtoken", "idtoken", "bearer", "password", "passwd", "secret",
                 "clientsecret", "cookie", "setcookie", "credentials", "privatekey"}
_SECRET_SUFFIXES = ("apikey", "secret", "password", "accesstoken", "authorization", "privatekey",
                    "authtoken", "secretkey")

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at        REAL    NOT NULL,
    model             TEXT    NOT NULL,
    deployment_id     TEXT,
    endpoint          TEXT    NOT NULL,
    tag               TEXT,
    messages          TEXT,              -- JSON list, chat requests
    prompt            TEXT,              -- JSON string or list, completions / embeddings
    params            TEXT    NOT NULL,  -- JSON object: temperature, top_p, max_tokens, ...
    output            TEXT    NOT NULL,
    finish_reason     TEXT,
    status            INTEGER NOT NULL,
    error             TEXT,
    ttft_s            REAL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    tokens_per_s      REAL,
    duration_s        REAL    NOT NULL,
    preview           TEXT    NOT NULL,  -- first user message, shortened, for the list
    search_text       TEXT    NOT NULL   -- casefolded message and output text, for search
);
CREATE INDEX runs_by_time ON runs (created_at DESC, id DESC);
CREATE INDEX runs_by_model ON runs (model, created_at DESC);
"""


class HistoryNotFound(ModelDeckError):
    """No history entry has this id (it was deleted, or never existed)."""

    status = 404
    code = "history_not_found"


class HistoryUnavailable(ModelDeckError):
    """The history database cannot be used (written by a newer ModelDeck, or not writable)."""

    status = 503
    code = "history_unavailable"


class HistorySummary(BaseModel):
    """One line of the history list: enough to recognise a run without loading it."""

    id: int
    created_at: float
    model: str
    endpoint: str
    tag: str | None = None
    preview: str  # the first user message (or the prompt), shortened
    output_preview: str
    finish_reason: str | None = None
    status: int
    error: str | None = None
    ttft_s: float | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    duration_s: float


class HistoryEntry(BaseModel):
    """A whole run: what was asked (messages or prompt, parameters), what came back, and its metrics."""

    id: int
    created_at: float
    model: str
    deployment_id: str | None = None
    endpoint: str
    tag: str | None = None
    messages: list[Any] | None = None
    prompt: Any = None  # a string or a list (of strings or token ids) for completions/embeddings
    params: dict[str, Any]
    output: str
    finish_reason: str | None = None
    status: int
    error: str | None = None
    ttft_s: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    duration_s: float


_SUMMARY_COLUMNS = ("id, created_at, model, endpoint, tag, preview, substr(output, 1, ?) AS output_head, "
                    "finish_reason, status, error, ttft_s, completion_tokens, tokens_per_s, duration_s")
_ENTRY_COLUMNS = ("id, created_at, model, deployment_id, endpoint, tag, messages, prompt, params, output, "
                  "finish_reason, status, error, ttft_s, prompt_tokens, completion_tokens, tokens_per_s, "
                  "duration_s")


class HistoryStore:
    """A thread-safe store of playground runs in one SQLite file (WAL mode).

    One connection is shared by all threads behind a lock; every method blocks, so async
    code calls it through a thread (``run_in_threadpool``, ``asyncio.to_thread``). A file
    that cannot be opened or fails SQLite's check is moved aside (``<name>.corrupt-<time>``)
    and a fresh database takes its place; ``recovered_from`` then names the moved file so the
    backend can tell the person.
    """

    def __init__(self, path: Path):
        """
        Args:
            path: the database file; missing parent folders are created (0700).

        Raises:
            HistoryUnavailable: the file was written by a newer ModelDeck, or a fresh
                database cannot be created there.
        """
        self.path = Path(path)
        self.recovered_from: Path | None = None
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._conn = self._open()
        except OSError as exc:
            raise HistoryUnavailable(
                f"Cannot create the history database {self.path}: {exc}.",
                hint="Check that the folder is writable, or set MODELDECK_HOME to one that is.",
            ) from exc
        except sqlite3.DatabaseError as exc:
            try:
                self.recovered_from = self._move_aside()
            except OSError as move_error:
                raise HistoryUnavailable(
                    f"The history database {self.path} is unreadable or corrupt ({exc}), and it "
                    f"cannot be moved aside: {move_error}.",
                    hint=f"Move or delete {self.path} yourself, then start ModelDeck again.",
                ) from exc
            try:
                self._conn = self._open()
            except (sqlite3.Error, OSError) as again:
                raise HistoryUnavailable(
                    f"Cannot create the history database {self.path}: {again}.",
                    hint="Check that the folder exists and is writable, or set MODELDECK_HOME.",
                ) from exc

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        if not self.path.exists():
            # Prompts are private: create the file owner-only (SQLite copies the mode to -wal/-shm).
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            conn.row_factory = sqlite3.Row
            # quick_check reads every page like integrity_check but skips the slow index
            # cross-checks, so start-up stays fast on a large history.
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            if result != "ok":
                raise sqlite3.DatabaseError(f"quick_check failed: {result}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable enough in WAL mode, much faster
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        has_version = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
        if not has_version:
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise sqlite3.DatabaseError("not a ModelDeck history database (no schema_version table)")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            raise sqlite3.DatabaseError("the schema_version table is empty")
        if version > SCHEMA_VERSION:
            raise HistoryUnavailable(
                f"The history database {self.path} has schema version {version}; this ModelDeck "
                f"understands up to {SCHEMA_VERSION}.",
                hint="Update ModelDeck, or point MODELDECK_HOME at another folder.")
        # Future versions add their upgrade steps here, one per version, in a transaction.

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        os.replace(self.path, target)
        # A stale write-ahead log must not be replayed into the fresh database.
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, target.with_name(target.name + suffix))
        return target

    # ------------------------------------------------------------------ writing

    def record(self, *, model: str, endpoint: str, request: dict, output: str, finish_reason: str | None,
               status: int, error: str | None, ttft_s: float | None, prompt_tokens: int | None,
               completion_tokens: int | None, tokens_per_s: float | None, duration_s: float,
               created_at: float, deployment_id: str | None = None, tag: str | None = None) -> int:
        """Store one run.

        Args:
            model: the served model name the request asked for.
            endpoint: "chat/completions", "completions", "embeddings", ...
            request: the OpenAI request body. Messages (or prompt / input) are stored apart
                from the parameters; keys that can carry credentials (api_key,
                authorization, ...) are dropped at any depth and never reach the disk.
            output: the generated text ("" when there was none).
            finish_reason, status, error: how the run ended (``status`` is the HTTP status).
            ttft_s, prompt_tokens, completion_tokens, tokens_per_s, duration_s: its metrics.
            created_at: wall-clock start, ``time.time()``.
            deployment_id, tag: which deployment served it; a free label (e.g. a comparison).

        Returns:
            The new entry's id.
        """
        clean = scrub_secrets(request) if isinstance(request, dict) else {}
        messages = clean.get("messages")
        if not isinstance(messages, list):
            messages = None  # a malformed "messages" stays among the parameters, as sent
        prompt = clean.get("prompt", clean.get("input"))
        stored = _NOT_PARAMS if messages is not None else _NOT_PARAMS - {"messages"}
        params = {k: v for k, v in clean.items() if k not in stored}
        row = (
            created_at, model, deployment_id, endpoint, tag,
            _dumps(messages) if messages is not None else None,
            _dumps(prompt) if prompt is not None else None,
            _dumps(params), output or "", finish_reason, status, error, ttft_s, prompt_tokens,
            completion_tokens, tokens_per_s, duration_s,
            _preview(_first_user_text(messages, prompt)),
            "\n".join([_content_text(messages), _content_text(prompt), output or ""]).casefold(),
        )
        with self._lock:
            cur = self._conn.execute(
                "INSERT INTO runs (created_at, model, deployment_id, endpoint, tag, messages, prompt, "
                "params, output, finish_reason, status, error, ttft_s, prompt_tokens, completion_tokens, "
                "tokens_per_s, duration_s, preview, search_text) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return cur.lastrowid

    def delete(self, entry_id: int) -> None:
        """Delete one entry.

        Raises:
            HistoryNotFound: no entry has this id.
        """
        with self._lock:
            cur = self._conn.execute("DELETE FROM runs WHERE id = ?", (entry_id,))
        if cur.rowcount == 0:
            raise _not_found(entry_id)

    def clear(self) -> int:
        """Delete every entry.

        Returns:
            How many entries were deleted.
        """
        with self._lock:
            return self._conn.execute("DELETE FROM runs").rowcount

    # ------------------------------------------------------------------ reading

    def list(self, *, limit: int = 50, offset: int = 0, query: str | None = None,
             model: str | None = None) -> list[HistorySummary]:
        """Summaries, newest first.

        Args:
            limit, offset: the page (both non-negative).
            query: text that must occur in a message, the prompt or the output
                (case-insensitive, literal: ``%`` and ``_`` are not wildcards).
            model: only runs of this served model name.

        Returns:
            Up to ``limit`` summaries.

        Raises:
            ValueError: a negative limit or offset.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where, args = _filters(query, model)
        sql = (f"SELECT {_SUMMARY_COLUMNS} FROM runs {where} "
               "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?")
        with self._lock:
            rows = self._conn.execute(sql, (PREVIEW_CHARS + 1, *args, limit, offset)).fetchall()
        return [_summary(r) for r in rows]

    def get(self, entry_id: int) -> HistoryEntry:
        """One whole entry.

        Raises:
            HistoryNotFound: no entry has this id.
        """
        with self._lock:
            row = self._conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM runs WHERE id = ?", (entry_id,)).fetchone()
        if row is None:
            raise _not_found(entry_id)
        return _entry(row)

    def export(self, *, query: str | None = None, model: str | None = None) -> list[HistoryEntry]:
        """Every entry matching the filters (see :meth:`list`), newest first, whole."""
        where, args = _filters(query, model)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM runs {where} ORDER BY created_at DESC, id DESC", args).fetchall()
        return [_entry(r) for r in rows]

    def close(self) -> None:
        """Close the database; further calls fail. Closing twice is harmless."""
        with self._lock:
            self._conn.close()


# ---------------------------------------------------------------------- helpers


def scrub_secrets(value: Any) -> Any:
    """A copy of ``value`` without any dict key that can carry a credential, at any depth.

    Args:
        value: a JSON-like value (dicts, lists, scalars).

    Returns:
        The same structure with keys such as ``api_key``, ``Authorization`` or
        ``x-api-key`` removed.
    """
    if isinstance(value, dict):
        return {k: scrub_secrets(v) for k, v in value.items() if not _is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return [scrub_secrets(v) for v in value]
    return value


def _is_secret_key(key: Any) -> bool:
    norm = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return norm in _SECRET_NAMES or norm.endswith(_SECRET_SUFFIXES)


def _dumps(value: Any) -> str:
    # default=str: a stray non-JSON value (a datetime, bytes) must not lose the whole run.
    return json.dumps(value, ensure_ascii=False, default=str)


def _content_text(value: Any) -> str:
    """The human-readable text in messages, a prompt, or message content parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = [_content_text(value.get(key)) for key in ("content", "text", "refusal", "reasoning_content")]
        return "\n".join(p for p in parts if p)
    if isinstance(value, (list, tuple)):
        return "\n".join(t for t in (_content_text(v) for v in value) if t)
    return ""


def _first_user_text(messages: Any, prompt: Any) -> str:
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                return _content_text(m.get("content"))
        return _content_text(messages)
    return _content_text(prompt)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[:PREVIEW_CHARS - 1].rstrip() + "…"


def _filters(query: str | None, model: str | None) -> tuple[str, list]:
    clauses, args = [], []
    if query:
        # instr() matches the text literally, so "%" and "_" in a search need no escaping.
        clauses.append("instr(search_text, ?) > 0")
        args.append(query.casefold())
    if model:
        clauses.append("model = ?")
        args.append(model)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", args


def _summary(row: sqlite3.Row) -> HistorySummary:
    return HistorySummary(
        id=row["id"], created_at=row["created_at"], model=row["model"], endpoint=row["endpoint"],
        tag=row["tag"], preview=row["preview"], output_preview=_preview(row["output_head"] or ""),
        finish_reason=row["finish_reason"], status=row["status"], error=row["error"],
        ttft_s=row["ttft_s"], completion_tokens=row["completion_tokens"],
        tokens_per_s=row["tokens_per_s"], duration_s=row["duration_s"])


def _entry(row: sqlite3.Row) -> HistoryEntry:
    data = dict(row)
    data["messages"] = json.loads(data["messages"]) if data["messages"] is not None else None
    data["prompt"] = json.loads(data["prompt"]) if data["prompt"] is not None else None
    data["params"] = json.loads(data["params"])
    return HistoryEntry(**data)


def _not_found(entry_id: int) -> HistoryNotFound:
    return HistoryNotFound(f"History entry {entry_id} does not exist.",
                           hint="It may have been deleted; list /api/history for the entries there are.")

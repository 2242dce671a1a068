"""The project's one SQLite database: conversations, corrections, feedback, reactions, datasets, jobs.

Why SQLite in WAL mode with `synchronous=FULL`: the bot acknowledges a user's correction only
after it is stored, so every write method commits before it returns, and a process killed
right after (SIGKILL, power cut) still finds the row on restart. One connection is shared
under a lock, which keeps callers on any thread (the event loop, `asyncio.to_thread`
workers, the job runner) safe without a pool; writes here are tiny.

The schema is versioned with `PRAGMA user_version` and an ordered list of migrations; each
migration runs in its own transaction, so a crash mid-migration leaves the previous version.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from assistant.errors import StoreError
# Re-exported: callers import the job row and its states from here, next to `Store`.
from assistant.job_store import FINAL_JOB_STATES as FINAL_JOB_STATES
from assistant.job_store import JOB_STATES as JOB_STATES
from assistant.job_store import Job as Job
from assistant.job_store import JobQueries
from assistant.personas import PersonaQueries, personas_migration
from assistant.review import ReviewQueries, _v2

logger = logging.getLogger(__name__)


def _script(db: sqlite3.Connection, script: str) -> None:
    """Run several statements inside the caller's transaction (`executescript` would commit first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    _script(db, """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL, external_id TEXT, author_id TEXT,
            reply_to INTEGER REFERENCES messages(id), created_at REAL NOT NULL);
        CREATE INDEX messages_external ON messages(external_id);
        CREATE TABLE corrections (
            id INTEGER PRIMARY KEY, prompt TEXT NOT NULL, original_reply TEXT NOT NULL,
            correction TEXT NOT NULL, user_id TEXT, message_external_id TEXT,
            created_at REAL NOT NULL);
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY, text TEXT NOT NULL, user_id TEXT, message_external_id TEXT,
            created_at REAL NOT NULL);
        CREATE TABLE reactions (
            id INTEGER PRIMARY KEY, message_external_id TEXT NOT NULL, user_id TEXT NOT NULL,
            label INTEGER NOT NULL CHECK (label IN (-1, 1)), created_at REAL NOT NULL,
            UNIQUE (message_external_id, user_id));
        CREATE TABLE datasets (
            name TEXT PRIMARY KEY, sha256 TEXT NOT NULL, format TEXT NOT NULL,
            rows INTEGER NOT NULL, tokens INTEGER NOT NULL, path TEXT NOT NULL,
            selected INTEGER NOT NULL DEFAULT 0, archived_at REAL, created_at REAL NOT NULL);
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
            device TEXT NOT NULL, pid INTEGER, out_dir TEXT NOT NULL, error TEXT,
            result TEXT, created_at REAL NOT NULL, started_at REAL, finished_at REAL);
        CREATE INDEX jobs_state ON jobs(state);
    """)


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, personas_migration]


@dataclass(frozen=True)
class Turn:
    """One user message and the assistant's reply to it, as recorded by `record_turn`."""

    conversation_key: str
    prompt: str
    reply: str
    prompt_message_id: int
    reply_message_id: int
    reply_external_id: str | None


@dataclass(frozen=True)
class Correction:
    id: int
    prompt: str
    original_reply: str
    correction: str
    user_id: str | None
    created_at: float
    status: str = "pending"
    scope: str | None = None


@dataclass(frozen=True)
class Feedback:
    id: int
    text: str
    user_id: str | None
    message_external_id: str | None
    created_at: float


@dataclass(frozen=True)
class LabelledReply:
    """A bot reply with the sum of its 👍 (+1) / 👎 (-1) reactions."""

    prompt: str
    reply: str
    score: int


@dataclass(frozen=True)
class DatasetRow:
    name: str
    sha256: str
    format: str
    rows: int
    tokens: int
    path: str
    selected: bool
    archived_at: float | None
    created_at: float


class Store(ReviewQueries, PersonaQueries, JobQueries):
    """Typed access to the database. Open with `Store.open(path)`; close with `close()`."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path) -> "Store":
        """Open (creating and migrating as needed) the database at `path`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30.0)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            store = cls(db, path)
            store._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"Cannot open the database {path} ({exc}); check the path in "
                             "storage.database and that the disk is writable.") from None
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self._lock:
            current = self.schema_version
            if current > len(MIGRATIONS):
                raise StoreError(f"The database {self.path} has schema version {current}, newer than this "
                                 f"program knows ({len(MIGRATIONS)}); upgrade the program.")
            for version, migration in enumerate(MIGRATIONS[current:], start=current + 1):
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    migration(self._db)
                    self._db.execute(f"PRAGMA user_version = {version}")
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                logger.info("Database %s migrated to schema version %d", self.path, version)

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        """Run one statement in its own committed transaction; return lastrowid."""
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StoreError(f"Could not save to the database ({exc}); try again.") from None
            return int(cursor.lastrowid or 0)

    def _transaction(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = body(self._db)
                self._db.execute("COMMIT")
                return result
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # Conversations ------------------------------------------------------------------------

    def record_turn(self, conversation_key: str, *, prompt: str, reply: str, user_id: str | None = None,
                    prompt_external_id: str | None = None, reply_external_id: str | None = None) -> Turn:
        """Store a user message and the assistant's reply together (one transaction)."""
        def body(db: sqlite3.Connection) -> Turn:
            now = time.time()
            db.execute("INSERT OR IGNORE INTO conversations(key, created_at) VALUES (?, ?)",
                       (conversation_key, now))
            conv = db.execute("SELECT id FROM conversations WHERE key = ?", (conversation_key,)).fetchone()[0]
            user_row = db.execute(
                "INSERT INTO messages(conversation_id, role, content, external_id, author_id, created_at) "
                "VALUES (?, 'user', ?, ?, ?, ?)", (conv, prompt, prompt_external_id, user_id, now)).lastrowid
            reply_row = db.execute(
                "INSERT INTO messages(conversation_id, role, content, external_id, reply_to, created_at) "
                "VALUES (?, 'assistant', ?, ?, ?, ?)", (conv, reply, reply_external_id, user_row, now)).lastrowid
            return Turn(conversation_key, prompt, reply, int(user_row or 0), int(reply_row or 0), reply_external_id)
        return self._transaction(body)

    def set_reply_external_id(self, reply_message_id: int, external_id: str) -> None:
        """Attach the platform's id to a stored reply once it is known (after sending)."""
        self._write("UPDATE messages SET external_id = ? WHERE id = ?", (external_id, reply_message_id))

    def turn_for_reply(self, reply_external_id: str) -> Turn | None:
        """The prompt and reply behind a bot message id (what `correct MESSAGE_ID` needs)."""
        rows = self._rows(
            "SELECT r.id AS rid, r.content AS reply, u.id AS uid, u.content AS prompt, c.key AS key "
            "FROM messages r JOIN messages u ON r.reply_to = u.id JOIN conversations c ON c.id = r.conversation_id "
            "WHERE r.external_id = ? AND r.role = 'assistant' ORDER BY r.id DESC LIMIT 1", (reply_external_id,))
        if not rows:
            return None
        row = rows[0]
        return Turn(row["key"], row["prompt"], row["reply"], row["uid"], row["rid"], reply_external_id)

    def history(self, conversation_key: str, limit: int = 50) -> list[tuple[str, str]]:
        """The last `limit` (role, content) pairs of a conversation, oldest first."""
        rows = self._rows(
            "SELECT m.role, m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id "
            "WHERE c.key = ? ORDER BY m.id DESC LIMIT ?", (conversation_key, limit))
        return [(r["role"], r["content"]) for r in reversed(rows)]

    # Teaching signals ---------------------------------------------------------------------

    def add_correction(self, *, prompt: str, original_reply: str, correction: str,
                       user_id: str | None = None, message_external_id: str | None = None,
                       status: str = "pending") -> int:
        """A correction as a new review item (see `submit_correction` for duplicates and caps)."""
        submitted = self.submit_correction(prompt=prompt, original_reply=original_reply, correction=correction,
                                           user_id=user_id, message_external_id=message_external_id, status=status)
        return int(submitted.item[1:])

    def corrections(self, *, status: str | None = None) -> list[Correction]:
        """All corrections, or those in one review state."""
        sql, params = "SELECT * FROM corrections", tuple[str, ...]()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        return [Correction(r["id"], r["prompt"], r["original_reply"], r["correction"], r["user_id"], r["created_at"],
                           r["status"], r["scope"]) for r in self._rows(sql + " ORDER BY id", params)]

    def add_feedback(self, text: str, *, user_id: str | None = None, message_external_id: str | None = None) -> int:
        if not text.strip():
            raise StoreError("Feedback cannot be empty; write what you would like to tell us.")
        return self._write("INSERT INTO feedback(text, user_id, message_external_id, created_at) VALUES (?, ?, ?, ?)",
                           (text, user_id, message_external_id, time.time()))

    def feedback(self) -> list[Feedback]:
        return [Feedback(r["id"], r["text"], r["user_id"], r["message_external_id"], r["created_at"])
                for r in self._rows("SELECT * FROM feedback ORDER BY id")]

    def add_reaction(self, message_external_id: str, user_id: str, label: int, *, status: str = "pending") -> None:
        """Record 👍 (+1) or 👎 (-1) from one user on one bot message; a later reaction replaces it."""
        self.submit_reaction(message_external_id, user_id, label, status=status)

    def remove_reaction(self, message_external_id: str, user_id: str) -> None:
        self._write("DELETE FROM reactions WHERE message_external_id = ? AND user_id = ?",
                    (message_external_id, user_id))

    def labelled_replies(self, *, status: str | None = None) -> list[LabelledReply]:
        """Bot replies that received reactions (in one review state, or any), with the summed label."""
        cond, params = ("WHERE x.status = ? ", (status,)) if status is not None else ("", ())
        rows = self._rows(
            "SELECT u.content AS prompt, r.content AS reply, SUM(x.label) AS score FROM reactions x "
            "JOIN messages r ON r.external_id = x.message_external_id AND r.role = 'assistant' "
            f"JOIN messages u ON r.reply_to = u.id {cond}GROUP BY r.id ORDER BY r.id", params)
        return [LabelledReply(r["prompt"], r["reply"], int(r["score"])) for r in rows]

    # Datasets -----------------------------------------------------------------------------

    def upsert_dataset(self, *, name: str, sha256: str, format: str, rows: int, tokens: int, path: str) -> None:
        self._write("INSERT INTO datasets(name, sha256, format, rows, tokens, path, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET sha256 = excluded.sha256, "
                    "format = excluded.format, rows = excluded.rows, tokens = excluded.tokens, "
                    "path = excluded.path, archived_at = NULL",
                    (name, sha256, format, rows, tokens, path, time.time()))

    def datasets(self, *, include_archived: bool = False) -> list[DatasetRow]:
        sql = "SELECT * FROM datasets" + ("" if include_archived else " WHERE archived_at IS NULL") + " ORDER BY name"
        return [_dataset(r) for r in self._rows(sql)]

    def dataset(self, name: str) -> DatasetRow | None:
        rows = self._rows("SELECT * FROM datasets WHERE name = ?", (name,))
        return _dataset(rows[0]) if rows else None

    def archive_dataset(self, name: str, archive_path: str) -> None:
        self._write("UPDATE datasets SET archived_at = ?, selected = 0, path = ? WHERE name = ?",
                    (time.time(), archive_path, name))

    def select_datasets(self, names: list[str]) -> None:
        """Make exactly `names` the selection for the next training job."""
        def body(db: sqlite3.Connection) -> None:
            db.execute("UPDATE datasets SET selected = 0")
            for name in names:
                db.execute("UPDATE datasets SET selected = 1 WHERE name = ? AND archived_at IS NULL", (name,))
        self._transaction(body)

    def selected_datasets(self) -> list[str]:
        return [r["name"] for r in self._rows(
            "SELECT name FROM datasets WHERE selected = 1 AND archived_at IS NULL ORDER BY name")]

    def iter_tables(self) -> Iterator[str]:
        for row in self._rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            yield row["name"]


def _dataset(r: sqlite3.Row) -> DatasetRow:
    return DatasetRow(r["name"], r["sha256"], r["format"], r["rows"], r["tokens"], r["path"], bool(r["selected"]),
                      r["archived_at"], r["created_at"])

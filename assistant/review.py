"""The review queue: corrections and 👍/👎 enter as *pending*; only approved ones are trained on.

Why review at all: anyone in any server the bot is in can react or correct, and a few
percent of poisoned rows are enough to steer a small model. So every teaching signal is
stored (nothing a user gave is lost) but waits for an admin, unless `security.auto_approve`
says otherwise. Duplicates collapse (the same user correcting the same prompt to the same
answer is one item), and a user may hold at most `security.max_pending_per_user` pending
items per day, which bounds how much one account can flood the queue.

Items are named `c<id>` (a correction) and `r<id>` (a reaction) so one list, one approve and
one reject work for both, in Discord (`review`) and in the terminal (`finetune feedback`).
These are methods mixed into `Store`, which owns the connection and the lock.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable

from assistant.errors import ReviewError, StoreError

REVIEW_STATES = ("pending", "approved", "rejected")
DAY_S = 86400.0


def _v2(db: sqlite3.Connection) -> None:
    """Review state on corrections and reactions; where a correction was typed. Rows from before
    review existed start pending: nobody checked them."""
    for table in ("corrections", "reactions"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN status TEXT NOT NULL DEFAULT 'pending' "
                   "CHECK (status IN ('pending', 'approved', 'rejected'))")
        db.execute(f"ALTER TABLE {table} ADD COLUMN reviewed_by TEXT")
        db.execute(f"ALTER TABLE {table} ADD COLUMN reviewed_at REAL")
    db.execute("ALTER TABLE corrections ADD COLUMN scope TEXT")
    db.execute("CREATE INDEX corrections_status ON corrections(status, user_id)")
    db.execute("CREATE INDEX reactions_status ON reactions(status, user_id)")


@dataclass(frozen=True)
class Submitted:
    """What became of a correction or reaction: its item id, its state, and whether it was a repeat."""

    item: str
    status: str
    duplicate: bool = False


@dataclass(frozen=True)
class ReviewItem:
    item: str  # "c12" or "r5"
    kind: str  # "correction" or "reaction"
    user_id: str | None
    prompt: str
    reply: str
    correction: str  # the corrected answer, or "👍"/"👎"
    status: str
    created_at: float


def parse_item(item: str) -> tuple[str, int]:
    """`c12` → ("corrections", 12); anything else is a ReviewError saying the form."""
    item = item.strip().lower()
    table = {"c": "corrections", "r": "reactions"}.get(item[:1])
    if table is None or not item[1:].isdigit():
        raise ReviewError(f"{item!r} is not a review item; items look like c12 (a correction) or r5 (a reaction), "
                          "as `review` lists them.")
    return table, int(item[1:])


def _same(text: str) -> str:
    return " ".join(text.casefold().split())


class ReviewQueries:
    """Mixed into `Store`: `_transaction` and `_rows` come from there."""

    _transaction: Callable[[Callable[[sqlite3.Connection], Any]], Any]
    _rows: Callable[..., list[sqlite3.Row]]

    @staticmethod
    def _check_cap(db: sqlite3.Connection, user_id: str | None, cap: int) -> None:
        if user_id is None or cap <= 0:
            return
        since = time.time() - DAY_S
        held = sum(int(db.execute(f"SELECT COUNT(*) FROM {t} WHERE user_id = ? AND status = 'pending' AND "
                                  "created_at > ?", (user_id, since)).fetchone()[0])
                   for t in ("corrections", "reactions"))
        if held >= cap:
            raise ReviewError(f"You already have {held} contributions waiting for review today (the limit is "
                              f"{cap}); an admin has to review them before you can add more.")

    def submit_correction(self, *, prompt: str, original_reply: str, correction: str, user_id: str | None = None,
                          message_external_id: str | None = None, scope: str | None = None,
                          status: str = "pending", max_pending: int = 0) -> Submitted:
        """Store a correction (or find the same one from the same user) in one transaction."""
        if not correction.strip():
            raise StoreError("A correction cannot be empty; write the reply the assistant should have given.")
        if status not in REVIEW_STATES:
            raise StoreError(f"Unknown review state {status!r}.")

        def body(db: sqlite3.Connection) -> Submitted:
            for row in db.execute("SELECT id, prompt, correction, status FROM corrections WHERE user_id IS ? "
                                  "AND status != 'rejected'", (user_id,)):
                if _same(row["prompt"]) == _same(prompt) and _same(row["correction"]) == _same(correction):
                    return Submitted(f"c{row['id']}", row["status"], duplicate=True)
            if status == "pending":
                self._check_cap(db, user_id, max_pending)
            now = time.time()
            cursor = db.execute(
                "INSERT INTO corrections(prompt, original_reply, correction, user_id, message_external_id, "
                "created_at, status, scope, reviewed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (prompt, original_reply, correction, user_id, message_external_id, now, status, scope,
                 now if status != "pending" else None))
            return Submitted(f"c{cursor.lastrowid}", status)
        return self._transaction(body)

    def submit_reaction(self, message_external_id: str, user_id: str, label: int, *, status: str = "pending",
                        max_pending: int = 0) -> Submitted:
        """Record 👍/👎; the same label again is a duplicate, a changed mind goes back to review."""
        if label not in (-1, 1):
            raise StoreError(f"A reaction label must be +1 or -1, got {label!r}.")

        def body(db: sqlite3.Connection) -> Submitted:
            row = db.execute("SELECT id, label, status FROM reactions WHERE message_external_id = ? AND user_id = ?",
                             (message_external_id, user_id)).fetchone()
            if row is not None and row["label"] == label:
                return Submitted(f"r{row['id']}", row["status"], duplicate=True)
            if status == "pending":
                self._check_cap(db, user_id, max_pending)
            now = time.time()
            if row is not None:
                db.execute("UPDATE reactions SET label = ?, status = ?, created_at = ?, reviewed_by = NULL, "
                           "reviewed_at = NULL WHERE id = ?", (label, status, now, row["id"]))
                return Submitted(f"r{row['id']}", status)
            cursor = db.execute("INSERT INTO reactions(message_external_id, user_id, label, created_at, status) "
                                "VALUES (?, ?, ?, ?, ?)", (message_external_id, user_id, label, now, status))
            return Submitted(f"r{cursor.lastrowid}", status)
        return self._transaction(body)

    def review_items(self, *, status: str | None = "pending", user_id: str | None = None) -> list[ReviewItem]:
        """Corrections and reactions (oldest first), filtered by state and author."""
        where, params = [], []
        if status is not None:
            where.append("x.status = ?")
            params.append(status)
        if user_id is not None:
            where.append("x.user_id = ?")
            params.append(user_id)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        corrections = self._rows(
            "SELECT 'c' || x.id AS item, x.user_id, x.prompt, x.original_reply AS reply, x.correction, x.status, "
            f"x.created_at FROM corrections x{cond}", tuple(params))
        reactions = self._rows(
            "SELECT 'r' || x.id AS item, x.user_id, u.content AS prompt, r.content AS reply, "
            "CASE x.label WHEN 1 THEN '👍' ELSE '👎' END AS correction, x.status, x.created_at FROM reactions x "
            "JOIN messages r ON r.external_id = x.message_external_id AND r.role = 'assistant' "
            f"JOIN messages u ON r.reply_to = u.id{cond}", tuple(params))
        items = [ReviewItem(r["item"], "correction" if r["item"].startswith("c") else "reaction", r["user_id"],
                            r["prompt"], r["reply"], r["correction"], r["status"], r["created_at"])
                 for r in [*corrections, *reactions]]
        return sorted(items, key=lambda i: (i.created_at, i.item))

    def set_review(self, items: list[str], status: str, *, reviewer: str) -> int:
        """Approve or reject items by id; returns how many exist (unknown ids are an error, nothing changes)."""
        if status not in ("approved", "rejected"):
            raise ReviewError(f"Review items can be approved or rejected, not {status!r}.")
        parsed = [parse_item(i) for i in items]

        def body(db: sqlite3.Connection) -> int:
            now = time.time()
            for (table, key), name in zip(parsed, items):
                changed = db.execute(f"UPDATE {table} SET status = ?, reviewed_by = ?, reviewed_at = ? WHERE id = ?",
                                     (status, reviewer, now, key)).rowcount
                if not changed:
                    raise ReviewError(f"There is no review item {name}; `review` lists them.")
            return len(parsed)
        return self._transaction(body)

    def approve_user(self, user_id: str, *, reviewer: str) -> int:
        """Approve every pending item of one user (the bulk action); returns how many."""
        def body(db: sqlite3.Connection) -> int:
            now = time.time()
            return sum(db.execute(f"UPDATE {t} SET status = 'approved', reviewed_by = ?, reviewed_at = ? "
                                  "WHERE user_id = ? AND status = 'pending'", (reviewer, now, user_id)).rowcount
                       for t in ("corrections", "reactions"))
        return self._transaction(body)

"""The `jobs` table of the store: one row per training or evaluation job and its state.

Why a module of its own: the job runner (`finetune.jobs`) is the only reader of these rows, and
their state machine (queued -> running -> a final state, changed only from an expected state so
two processes cannot both claim a job) is separate from conversations and teaching signals.
These are methods mixed into `Store`, which owns the connection, the lock and the schema.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from assistant.errors import StoreError

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL_JOB_STATES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    spec: dict[str, Any]
    state: str
    device: str
    pid: int | None
    out_dir: str
    error: str | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class JobQueries:
    """Mixed into `Store`: `_db`, `_lock`, `_write` and `_rows` come from there."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _write: Callable[..., int]
    _rows: Callable[..., list[sqlite3.Row]]

    def create_job(self, job_id: str, *, kind: str, spec: dict[str, Any], device: str, out_dir: str) -> Job:
        self._write("INSERT INTO jobs(id, kind, spec, state, device, out_dir, created_at) "
                    "VALUES (?, ?, ?, 'queued', ?, ?, ?)", (job_id, kind, json.dumps(spec), device, out_dir, time.time()))
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def jobs(self, *, states: tuple[str, ...] = JOB_STATES, device: str | None = None) -> list[Job]:
        marks = ",".join("?" * len(states))
        sql = f"SELECT * FROM jobs WHERE state IN ({marks})"
        params: tuple[Any, ...] = tuple(states)
        if device is not None:
            sql += " AND device = ?"
            params += (device,)
        return [_job(r) for r in self._rows(sql + " ORDER BY created_at, id", params)]

    def update_job(self, job_id: str, *, state: str | None = None, pid: int | None = None,
                   error: str | None = None, result: dict[str, Any] | None = None,
                   expect: tuple[str, ...] | None = None) -> bool:
        """Change a job; with `expect`, only if its current state is one of those (returns whether it changed)."""
        if state is not None and state not in JOB_STATES:
            raise StoreError(f"Unknown job state {state!r}; use one of {', '.join(JOB_STATES)}.")
        sets: list[str] = []
        params: list[object] = []
        now = time.time()
        if state is not None:
            sets.append("state = ?")
            params.append(state)
            if state == "running":
                sets.append("started_at = ?")
                params.append(now)
            if state in FINAL_JOB_STATES:
                sets.append("finished_at = ?")
                params.append(now)
        for column, value in (("pid", pid), ("error", error)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        if result is not None:
            sets.append("result = ?")
            params.append(json.dumps(result))
        if not sets:
            return False
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?"
        params.append(job_id)
        if expect:
            sql += f" AND state IN ({','.join('?' * len(expect))})"
            params.extend(expect)
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).rowcount > 0
            except sqlite3.Error as exc:
                raise StoreError(f"Could not save the job state ({exc}).") from None


def _job(r: sqlite3.Row) -> Job:
    return Job(r["id"], r["kind"], json.loads(r["spec"]), r["state"], r["device"], r["pid"], r["out_dir"],
               r["error"], json.loads(r["result"]) if r["result"] else None, r["created_at"], r["started_at"],
               r["finished_at"])

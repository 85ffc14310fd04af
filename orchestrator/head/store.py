"""Durable state: every job and every transition, in SQLite on the head node.

A change is written (WAL, synchronous=FULL: fsync at commit) before the caller is
told it happened, so an orchestrator that dies and restarts reloads exactly what it
acknowledged. One row per job holds the whole Job document (its event history
included); one row per finished run (job, attempt) holds its GPU usage for
accounting; one row per mutation anyone asked for (submit, cancel, hold, release,
priority, drain, undrain, token changes) is the audit trail, written in the same
transaction as the change it records; a small key/value table holds counters and
the fleet's drains.

A job row that no longer loads (a hand edit, a bug in an older version, a disk that
flipped bits) must not keep the orchestrator from starting: it is moved, as it was,
to `set_aside`, reported, and everything else loads.

The schema is versioned (SQLite's `PRAGMA user_version`) and migrated in place when
the store opens: MIGRATIONS holds one step per version, append-only, run in one
transaction after a backup copy of the file is taken. A store newer than the code is
refused, never downgraded.

What is deliberately not stored: the line order (rebuilt from priority and the
submission sequence), the inventory (rebuilt from the jobs that hold GPUs), and the
plan (recomputed every cycle). A restart loses nothing a user was told.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.core.errors import GpuqError
from orchestrator.core.job import Job

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS usage (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    user TEXT NOT NULL,
    gpus INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS usage_end ON usage(end);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TABLE IF NOT EXISTS set_aside (
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    doc TEXT NOT NULL,
    error TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# MIGRATIONS[i] takes a store from schema version i to i + 1. Never edit a released step:
# add one. Version 0 is every store written before versions were kept (those of gpuq's first releases),
# whose tables are exactly SCHEMA_1 (IF NOT EXISTS makes step 1 a no-op for them).
MIGRATIONS: list[str] = [
    SCHEMA_1,
    # 2: when each version was applied, so an operator can see what an upgrade did.
    """
    CREATE TABLE IF NOT EXISTS schema_history (
        version INTEGER PRIMARY KEY,
        applied_at REAL NOT NULL,
        from_version INTEGER NOT NULL
    );
    """,
    # 3: who a job is and when it ended, as columns: a restart loads only live jobs and
    # recent history, and older history is read (and pruned) by them (history.py).
    """
    ALTER TABLE jobs ADD COLUMN user TEXT;
    ALTER TABLE jobs ADD COLUMN ended_at REAL;
    UPDATE jobs SET user = json_extract(doc, '$.spec.user'),
                    ended_at = CASE WHEN state IN ('completed', 'failed', 'cancelled')
                                    THEN json_extract(doc, '$.state_times.' || state) END;
    CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(ended_at);
    CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user, seq);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SetAside(NamedTuple):
    job_id: str
    seq: int
    doc: str
    error: str


def _first_line(e: Exception) -> str:
    """Pydantic's message, short: what failed to load, never the whole document."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines[:3])[:500]


class StoreError(GpuqError):
    """The store could not be read or written; the change was not made."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Writes run on a worker thread (GroupCommit) while reads and close() run on the
        # actor's loop. Python's sqlite3 does not guard one connection used from two
        # threads at once: a close() during a write crashed the process (SIGSEGV in CI).
        # Every use of the connection holds this lock, and a closed store refuses.
        self._lock = threading.RLock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One writer (the orchestrator actor); check_same_thread off because Ray may
            # run the actor's methods on a worker thread other than the one that opened it.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # The service's alone: jobs' commands and env are in it (SQLite gives its WAL
            # and shared-memory files the database file's mode).
            os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self.migrated_from = self._migrate()
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the job store at {self.path}: {e}") from None

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> int | None:
        """Bring the schema to SCHEMA_VERSION; returns the version it was at, or None
        when there was nothing to do. A store with data gets a backup copy first
        (`<store>.schema-<version>.bak`): a failed step rolls back, but an operator who
        wants the old release back needs the old file."""
        found = self.schema_version
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the job store at {self.path} has schema version {found}, newer than this gpuq's "
                f"{SCHEMA_VERSION}: run the newer gpuq, or restore a backup"
            )
        if found == SCHEMA_VERSION:
            return None
        existing = self._db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        if existing:
            with sqlite3.connect(self.path.with_name(f"{self.path.name}.schema-{found}.bak")) as backup:
                self._db.backup(backup)
            os.chmod(self.path.with_name(f"{self.path.name}.schema-{found}.bak"), 0o600)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for version in range(found, SCHEMA_VERSION):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                if version + 1 >= 2:  # the history table exists from version 2 on
                    self._db.execute(
                        "INSERT OR REPLACE INTO schema_history VALUES (?, ?, ?)",
                        (version + 1, time.time(), found),
                    )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        return found if existing else None

    def save(self, jobs: Iterable[Job], kv: dict[str, object] | None = None) -> None:
        """Write jobs (and counters) in one transaction; raises StoreError if it did not commit."""
        self.write(rows_of(jobs), kv)

    def write(
        self,
        rows: list[tuple],
        kv: dict[str, object] | None = None,
        usage: list[tuple] | None = None,
        audit: list[tuple] | None = None,
    ) -> None:
        with self._lock:
            self._check_open()
            self._write(rows, kv, usage, audit)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the job store at {self.path} is closed")

    def _write(self, rows, kv, usage, audit) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO jobs (id, seq, state, user, ended_at, doc) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, ended_at = excluded.ended_at, "
                "doc = excluded.doc",
                rows,
            )
            if usage:
                self._db.executemany(
                    "INSERT OR REPLACE INTO usage (job_id, attempt, user, gpus, start, end) VALUES (?, ?, ?, "
                    "?, ?, ?)",
                    usage,
                )
            if audit:
                self._db.executemany(
                    "INSERT INTO audit (at, who, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                    [
                        (at, who, action, target, json.dumps(detail))
                        for at, who, action, target, detail in audit
                    ],
                )
            if kv:
                self._db.executemany(
                    "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                    "excluded.value",
                    [(k, json.dumps(v)) for k, v in kv.items()],
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            full = isinstance(e, sqlite3.OperationalError) and "full" in str(e)
            raise StoreError(
                f"the job store at {self.path} cannot write ({e}"
                + ("; its disk is full" if full else "")
                + ")"
            ) from None

    def load(self, now: float, ended_since: float | None = None) -> tuple[list[Job], list[SetAside]]:
        """Every job that loads, in submission order (with `ended_since`, only those not
        ended before it: live jobs and recent history), and the rows that did not: those
        are moved to the set_aside table (kept as they were, for an admin to look at)."""
        rows = self.read(
            "SELECT id, seq, doc FROM jobs WHERE ended_at IS NULL OR ended_at >= ? ORDER BY seq",
            (float("-inf") if ended_since is None else ended_since,),
        )
        jobs, bad = [], []
        for job_id, seq, doc in rows:
            try:
                jobs.append(Job.model_validate_json(doc))
            except ValueError as e:  # pydantic's ValidationError is one
                bad.append(SetAside(str(job_id), int(seq), str(doc), _first_line(e)))
        if bad:
            with self._lock:
                self._set_aside(bad, now)
        return jobs, bad

    def _set_aside(self, bad: list[SetAside], now: float) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO set_aside (id, seq, doc, error, at) VALUES (?, ?, ?, ?, ?)",
                [(b.job_id, b.seq, b.doc, b.error, now) for b in bad],
            )
            self._db.executemany("DELETE FROM jobs WHERE id = ?", [(b.job_id,) for b in bad])
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._db.execute("ROLLBACK")
            raise StoreError(f"could not set aside unreadable jobs in {self.path}: {e}") from None

    def set_aside_count(self) -> int:
        with self._lock:
            self._check_open()
            return self._db.execute("SELECT count(*) FROM set_aside").fetchone()[0]

    def usage(self, since: float = 0.0) -> list[tuple[str, int, str, int, float, float]]:
        """Finished runs (job_id, attempt, user, gpus, start, end) that ended after `since`."""
        try:
            with self._lock:
                self._check_open()
                return self._db.execute(
                    "SELECT job_id, attempt, user, gpus, start, end FROM usage WHERE end > ? ORDER BY end",
                    (since,),
                ).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the job store at {self.path}: {e}") from None

    def audit(
        self, limit: int = 100, who: str | None = None, action: str | None = None, since: float = 0.0
    ) -> list[dict]:
        """The audit trail, newest first."""
        where, args = ["at >= ?"], [since]  # type: list[str], list[float | str]
        if who:
            where.append("who = ?")
            args.append(who)
        if action:
            where.append("action = ?")
            args.append(action)
        try:
            with self._lock:
                self._check_open()
                rows = self._db.execute(
                    f"SELECT at, who, action, target, detail FROM audit WHERE {' AND '.join(where)} ORDER BY "
                    "id DESC LIMIT ?",
                    (*args, limit),
                ).fetchall()  # the WHERE clause is built from fixed strings only
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the job store at {self.path}: {e}") from None
        return [
            {"time": at, "who": w, "action": a, "target": t, "detail": json.loads(d)}
            for at, w, a, t, d in rows
        ]

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of one query (history.py's, by fixed SQL text with parameters)."""
        try:
            with self._lock:
                self._check_open()
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the job store at {self.path}: {e}") from None

    def delete_ended(self, before: float, batch: int) -> int:
        """Remove up to `batch` jobs that ended before `before` (usage and audit stay)."""
        with self._lock:
            self._check_open()
            try:
                return self._db.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE ended_at < ? LIMIT ?)",
                    (before, batch),
                ).rowcount
            except sqlite3.Error as e:
                raise StoreError(f"the job store at {self.path} cannot write ({e})") from None

    def get(self, key: str, default: Any = None) -> Any:  # a JSON value, as saved
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def close(self) -> None:
        """Waits for a write in progress (on GroupCommit's thread) to end first."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def rows_of(jobs: Iterable[Job]) -> list[tuple]:
    return [
        (
            j.id,
            j.seq,
            j.state.value,
            j.user,
            j.state_times.get(j.state) if j.state.is_terminal else None,
            j.model_dump_json(),
        )
        for j in jobs
    ]

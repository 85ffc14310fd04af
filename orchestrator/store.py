"""Durable state: every job and every transition, in SQLite on the head node.

A change is written (WAL, synchronous=FULL: fsync at commit) before the caller is
told it happened, so an orchestrator that dies and restarts reloads exactly what it
acknowledged. One row per job holds the whole Job document (its event history
included); a small key/value table holds counters and idempotency keys.

What is deliberately not stored: the line order (rebuilt from priority and the
submission sequence), the inventory (rebuilt from the jobs that hold GPUs), and the
plan (recomputed every cycle). A restart loses nothing a user was told.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import GpuqError
from orchestrator.job import Job

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StoreError(GpuqError):
    """The store could not be read or written; the change was not made."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # One writer (the orchestrator actor); check_same_thread off because Ray may
            # run the actor's methods on a worker thread other than the one that opened it.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the job store at {self.path}: {e}") from None

    def save(self, jobs: Iterable[Job], kv: dict[str, object] | None = None) -> None:
        """Write jobs (and counters) in one transaction; raises StoreError if it did not commit."""
        rows = [(j.id, j.seq, j.state.value, j.model_dump_json()) for j in jobs]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO jobs (id, seq, state, doc) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
                rows,
            )
            if kv:
                self._db.executemany(
                    "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [(k, json.dumps(v)) for k, v in kv.items()],
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise StoreError(f"could not write to the job store at {self.path}: {e}") from None

    def load(self) -> list[Job]:
        """Every job, in submission order."""
        try:
            rows = self._db.execute("SELECT doc FROM jobs ORDER BY seq").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"cannot read the job store at {self.path}: {e}") from None
        return [Job.model_validate_json(doc) for (doc,) in rows]

    def get(self, key: str, default: object = None) -> object:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def close(self) -> None:
        self._db.close()

"""The store's schema migrations: a store written by an earlier release opens with the
new code, migrated in place, with nothing lost (issue #14)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.core.states import JobState
from orchestrator.head.store import SCHEMA_VERSION, Store, StoreError

# Written by gpuq as of commit 24083e3 (before schema versions), with the service's own
# code: a completed, a failed, a running and a queued job, their usage and audit rows,
# counters and the fleet. A dump, so that a review can read what it holds.
FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-schema-0.sql"


def old_store(tmp_path) -> Path:
    path = tmp_path / "gpuq.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIXTURE.read_text())
    return path


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the old schema, in its columns (later steps add some)."""
    with sqlite3.connect(path) as db:
        return {
            "jobs": sorted(db.execute("SELECT id, seq, state, doc FROM jobs").fetchall()),
            **{
                t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
                for t in ("usage", "audit", "kv", "set_aside")
            },
        }


def test_a_store_of_the_previous_schema_is_migrated_in_place_with_nothing_lost(tmp_path):
    path = old_store(tmp_path)
    before = rows(path)
    store = Store(path)
    assert store.migrated_from == 0 and store.schema_version == SCHEMA_VERSION
    jobs, set_aside = store.load(now=0.0)
    assert set_aside == []
    assert sorted(j.state for j in jobs) == sorted(
        [JobState.COMPLETED, JobState.FAILED, JobState.RUNNING, JobState.QUEUED]
    )
    assert [r[0] for r in store.usage()] and store.get("stats")["jobs_completed"] == 1
    store.close()
    assert rows(path) == before  # every row of every table, as it was
    with sqlite3.connect(path) as db:  # step 3 filled who and when each ended job ended
        assert sorted(db.execute("SELECT state, user, ended_at FROM jobs").fetchall()) == [
            ("completed", "root", 1800000060.0),
            ("failed", "root", 1800000060.0),
            ("queued", "root", None),
            ("running", "root", None),
        ]
    assert Path(f"{path}.schema-0.bak").exists()  # and the file as it was, for a way back
    again = Store(path)
    assert again.migrated_from is None  # once
    history = again._db.execute(
        "SELECT version, from_version FROM schema_history ORDER BY version"
    ).fetchall()
    assert history == [(v, 0) for v in range(2, SCHEMA_VERSION + 1)]
    again.close()


def test_a_new_store_starts_at_the_current_schema_without_a_backup(tmp_path):
    store = Store(tmp_path / "new.db")
    assert store.schema_version == SCHEMA_VERSION and store.migrated_from is None
    store.close()
    assert not list(tmp_path.glob("*.bak"))


def test_a_store_newer_than_the_code_is_refused_not_downgraded(tmp_path):
    path = old_store(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this gpuq"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1

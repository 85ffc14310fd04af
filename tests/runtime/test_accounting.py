"""GPU-hours per user and per UTC day: pure accounting, no Ray."""

from datetime import UTC, datetime

import pytest

from orchestrator.core.accounting import Accounting, Run, split_by_day

MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC).timestamp()


def test_a_run_across_midnight_is_split_between_the_days():
    assert split_by_day(MIDNIGHT - 3600, MIDNIGHT + 1800) == [("2026-11-28", 3600), ("2026-11-29", 1800)]


def test_the_report_counts_gpus_times_hours_inside_the_window_only():
    acc = Accounting(
        [
            Run("j1", 1, "alice", 4, MIDNIGHT - 7200, MIDNIGHT),
            Run("j2", 1, "bob", 1, MIDNIGHT, MIDNIGHT + 3600),
        ]
    )
    out = acc.report(MIDNIGHT - 3600, MIDNIGHT + 3600)
    users = {u["user"]: u for u in out["users"]}
    assert users["alice"]["gpu_hours"] == pytest.approx(4.0)  # only the last hour of its two
    assert users["bob"]["gpu_hours"] == pytest.approx(1.0)
    assert users["alice"]["share"] == pytest.approx(0.8)
    assert out["total_gpu_hours"] == pytest.approx(5.0)
    assert [(d["day"], d["user"]) for d in out["days"]] == [("2026-11-28", "alice"), ("2026-11-29", "bob")]


def test_running_runs_count_up_to_now_and_a_user_filter_keeps_one_user():
    acc = Accounting([Run("j1", 1, "alice", 2, 0, 3600)])
    running = [Run("j2", 1, "bob", 8, 1800, 3600)]
    out = acc.report(0, 3600, running, user="bob")
    assert [(u["user"], u["gpu_hours"], u["jobs"]) for u in out["users"]] == [("bob", pytest.approx(4.0), 1)]


def test_totals_are_all_time_gpu_seconds_per_user():
    acc = Accounting()
    acc.add(Run("j1", 1, "alice", 2, 0, 10))
    acc.add(Run("j1", 2, "alice", 2, 20, 25))
    assert acc.totals == {"alice": 30.0}

"""A node's lease (core/lease.py, node/lease.py) stops its jobs by itself: a supervisor
whose node lease runs out TERMs its job and KILLs what is left, cgroup and all, and says
`fenced`; a lease renewed in time changes nothing. No Ray: the lease file is written
here as the node agent writes it."""

import threading

import pytest

from orchestrator.node import lease
from tests.runtime.test_containment import ESCAPES, FOUND, alive, escaped_pids, launcher, start  # noqa: F401

LEASE_S = 1.5


def with_lease(launcher, tmp_path, command, path, contained):  # noqa: F811
    launched, job_id = start(
        launcher, tmp_path, command, contained, lease={"path": str(path), "seconds": LEASE_S}
    )
    return launched, job_id


@pytest.mark.parametrize("contained", [True, False] if FOUND.usable else [False])
def test_a_job_whose_node_lease_runs_out_is_stopped_with_all_it_started(launcher, tmp_path, contained):  # noqa: F811
    path = tmp_path / "lease"
    lease.write(path, lease.now())
    folder = tmp_path / "pids"
    folder.mkdir()
    command = "trap '' TERM; " + ESCAPES.format(d=folder) + "sleep 600"
    launched, _ = with_lease(launcher, tmp_path, command, path, contained)
    pids = escaped_pids(folder)  # never renewed after this: the node lost the head
    record = launched.result(timeout=LEASE_S + 30)
    assert record is not None and record["reason"] == "fenced", record
    if contained:  # without a cgroup, escapes are the agent's reaper's (as at any end)
        assert not [n for n, pid in pids.items() if alive(pid)]


def test_a_job_whose_lease_is_renewed_runs_to_its_end(launcher, tmp_path):  # noqa: F811
    path = tmp_path / "lease"
    lease.write(path, lease.now())
    stop = threading.Event()

    def renew():  # as the agent does while the head answers
        while not stop.wait(0.2):
            lease.write(path, lease.now())

    threading.Thread(target=renew, daemon=True).start()
    try:
        launched, _ = with_lease(launcher, tmp_path, f"sleep {LEASE_S * 3}; echo done", path, False)
        record = launched.result(timeout=60)
    finally:
        stop.set()
    assert record is not None and record["reason"] == "exited" and record["exit_code"] == 0, record


def test_no_lease_file_counts_from_the_supervisors_start(launcher, tmp_path):  # noqa: F811
    launched, _ = with_lease(launcher, tmp_path, "sleep 600", tmp_path / "never-written", False)
    record = launched.result(timeout=LEASE_S + 30)
    assert record is not None and record["reason"] == "fenced"
    assert record["ended_at"] - record["started_at"] >= LEASE_S

"""A job's command, run to its end by its supervisor (supervisor.py): its output into
the log up to a cap, TERM then KILL at a stop or the time limit, and its exit record.

The job ends when its command ends. What the command leaves behind (a daemon, a
`setsid -f` child that holds the output pipe) is killed then, through the job's cgroup
(cgroups.py) where the node has one, else by descent (this process is its subreaper),
so a leftover never keeps the job RUNNING nor its GPUs held. Signals go to the cgroup,
or to the command's process group only while its pid is still held (not reaped), so a
reused pid is never signalled.

Standard library only, like the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time

from orchestrator.core.lease import FENCE_KILL_S
from orchestrator.core.sizes import format_size
from orchestrator.node import cgroups, jobfiles, procs
from orchestrator.node.lease import Lease

# How the command starts, after the switch to the user (sh: an exec, not a fork of this
# process): the job's TMPDIR is made, the directory changed to (as the user, so a job
# cannot start in a folder its user could not enter), and what went wrong is said on
# the pipe $1 (read by the supervisor) and in the log. A user without a home folder runs
# in the job's private folder, as Slurm runs such a job in /tmp.
START = (
    "fd=$1; cwd=$2; kind=$3; shift 3; "
    'if [ -n "$TMPDIR" ] && ! mkdir -p -m 700 -- "$TMPDIR"; then echo tmpdir >&"$fd"; exit 125; fi; '
    'if ! cd -- "$cwd" 2>/dev/null; then '
    '  if [ "$kind" = home ] && [ -n "$TMPDIR" ] && cd -- "${TMPDIR%/tmp}"; then '
    '    echo "[gpuq] $USER has no home folder $cwd on this node: the job runs in its private folder $PWD" '
    ">&2; "
    '    echo nohome >&"$fd"; '
    "  else "
    '    echo "[gpuq] the working directory $cwd does not exist, or $USER cannot enter it" >&2; '
    '    echo nocwd >&"$fd"; exit 125; '
    "  fi; "
    "fi; "
    'unset OLDPWD; eval "exec $fd>&-"; exec "$@"'
)


def run(
    command: list[str],
    env: dict,
    switch: dict,
    args,
    log,
    dfd: int,
    owner,
    started: float,
    stop_requested: dict,
    cwd: str,
    kind: str,
    group: cgroups.JobCgroup | None,
    lease: Lease | None = None,
) -> dict:
    """Run the command to its end: its output into the log, TERM then KILL at a stop or
    the time limit, or when the node's lease runs out (a fence: the head may be about to
    run the job elsewhere, so the grace is FENCE_KILL_S at most). Returns the exit record."""
    if lease is not None and lease.ran_out():  # lost the head while the job was being set up
        log.write(b"[gpuq] this node lost the head; the job was not started here\n")
        return {"exit_code": None, "signal": None, "reason": "fenced", "message": _FENCED}
    said_r, said_w = os.pipe()  # what START says went wrong before the command ran
    try:
        with group.entered() if group is not None else contextlib.nullcontext():
            child = subprocess.Popen(
                ["/bin/sh", "-c", START, "gpuq-job", str(said_w), cwd, kind, *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
                close_fds=True,
                pass_fds=(said_w,),
                env=env,
                **switch,
            )
    except OSError as e:
        log.write(f"[gpuq] could not start the command: {e}\n".encode())
        return {
            "exit_code": None,
            "signal": None,
            "reason": "launch_failed",
            "message": f"could not start: {e}",
        }
    finally:
        os.close(said_w)
    jobfiles.write_record(
        dfd,
        "start.json",
        {"supervisor_pid": os.getpid(), "pid": child.pid, "started_at": started},
        owner,
        args.group_read,
    )

    deadline = started + args.time_limit if args.time_limit > 0 else None
    written = dropped = 0
    reason = None
    kill_at = None  # when the TERMed job gets a KILL
    exited = False
    sel = selectors.DefaultSelector()
    pipe = child.stdout  # always a pipe: the command is started with stdout=PIPE
    assert pipe is not None
    os.set_blocking(pipe.fileno(), False)
    sel.register(pipe, selectors.EVENT_READ)
    open_pipe = True
    while True:
        now = time.time()
        if reason is None:
            if stop_requested["why"]:
                reason = stop_requested["why"]
            elif deadline is not None and now >= deadline:
                reason = "time_limit"
                log.write(f"\n[gpuq] time limit of {args.time_limit:.0f} s reached; stopping\n".encode())
            elif lease is not None and lease.ran_out():
                reason = "fenced"
                log.write(f"\n[gpuq] {_FENCED}; stopping\n".encode())
            if reason is not None:
                _signal_job(group, child.pid, signal.SIGTERM, exited)
                kill_at = now + (min(args.grace, FENCE_KILL_S) if reason == "fenced" else args.grace)
        elif kill_at is not None and lease is not None and lease.ran_out():
            # Stopping already (its runner died with the raylet, say): the KILL comes no
            # later than the lease's end allows, whatever the job's grace.
            kill_at = min(kill_at, now + FENCE_KILL_S)
        if kill_at is not None and now >= kill_at:
            _signal_job(group, child.pid, signal.SIGKILL, exited)
            kill_at = None
        if open_pipe:
            for _key, _ in sel.select(timeout=0.2):
                try:
                    chunk = os.read(pipe.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(pipe)
                    open_pipe = False
                    break
                room = args.log_cap - written
                if room > 0:
                    log.write(chunk[:room])
                    written += min(room, len(chunk))
                    if len(chunk) > room:
                        log.write(
                            f"\n[gpuq] log truncated at {args.log_cap} bytes; "
                            "later output is discarded\n".encode()
                        )
                dropped += max(0, len(chunk) - max(room, 0))
        else:
            time.sleep(0.05)
        if not exited and _has_exited(child.pid):
            # The command is over, so the job is: what it left (a daemon, a `setsid -f`
            # child holding the output pipe) is killed now, and the pipe then closes.
            # Output already in the pipe is kept. The group is signalled before the
            # command is reaped, while its pid cannot have been reused.
            _signal_job(group, child.pid, signal.SIGKILL, exited)
            child.poll()
            exited = True
            if group is None:
                procs.stop_descendants(0)
        if exited and not open_pipe:
            break
    if dropped:
        log.write(f"[gpuq] {dropped} bytes of output were discarded\n".encode())
    # Anything of the job's left outside its cgroup's reach (no cgroup on this node)
    # goes too: the sweep finds it by descent, as this process is its subreaper.
    code = child.returncode
    procs.stop_descendants(0)
    sig = -code if code < 0 else None
    record = {"exit_code": 128 + sig if sig else code, "signal": sig, "reason": reason or "exited"}
    with os.fdopen(said_r, "rb") as said:
        before = set(said.read(4096).decode(errors="replace").split())
    if "tmpdir" in before:  # the node's fault: its disk, its scratch folder
        return {
            **record,
            "exit_code": None,
            "reason": "launch_failed",
            "message": "the job's TMPDIR could not be made",
        }
    if "nocwd" in before:
        return {
            **record,
            "exit_code": None,
            "reason": "workdir_missing",
            "message": f"the working directory {cwd} does not exist, or its user cannot enter it",
        }
    if "nohome" in before:
        record["notes"] = [f"no home folder {cwd} on this node: the job ran in its private folder"]
    return record


_FENCED = "this node lost the head for longer than its lease: the job is stopped here, to be requeued"


def judge_memory(record: dict, group: cgroups.JobCgroup | None, log) -> dict:
    """A job that failed after the kernel killed its processes at its memory limit ended
    by that limit (Slurm's OUT_OF_MEMORY), said in plain words."""
    kills = group.oom_kills() if group is not None else 0
    if group is None or not kills or record.get("reason") != "exited":
        return record
    limit = format_size(group.memory) if group.memory else "its memory limit"
    said = (
        f"the job used more memory than its limit of {limit} on this node: the kernel killed "
        f"{kills} of its processes (raise it with --mem)"
    )
    log.write(f"\n[gpuq] {said}\n".encode())
    if record.get("exit_code") == 0:
        return {**record, "notes": [*(record.get("notes") or []), said]}
    return {**record, "reason": "out_of_memory", "message": said}


def _signal_job(group: cgroups.JobCgroup | None, pgid: int, sig: int, reaped: bool) -> None:
    """`sig` to every process of the job: its cgroup's, where it has one, else the
    command's process group, only while the command's pid is still held (not reaped)."""
    if group is not None:
        group.signal(sig)
    elif not reaped:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    elif sig == signal.SIGKILL:
        procs.stop_descendants(0)


def _has_exited(pid: int) -> bool:
    """Whether the command has exited, without reaping it (its pid stays ours)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True

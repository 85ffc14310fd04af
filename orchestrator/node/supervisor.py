"""The supervisor: a small process between a runner and the user's command.

    python -m orchestrator.node.supervisor --dir DIR --time-limit S --grace S [--user ACCOUNT]
                                      [--cwd DIR] [--group-read] -- CMD...  < env.json
    python -m orchestrator.node.supervisor --serve   < a Unix socket (the launcher)

A runner does not start a supervisor per job: that cost a Python start and these
imports, ~45 ms of CPU a job, more than everything else in a launch together. Each
runner starts one *launcher* with its slot (`--serve`, below); per job it sends the
arguments and the job's environment, with the write end of a pipe for the exit
record, and the launcher forks a supervisor (~1 ms), which works exactly as one
started from the command line would.

Why it exists (measured on Ray 2.60): killing a Ray worker kills its process group,
but a child in its own session survives a worker SIGKILL, and grandchildren leak on
`ray.cancel(force=True)`. The supervisor
- runs the command in its own process group, so the whole tree can be signalled;
- asks the kernel to TERM it when its parent (the runner) dies (PR_SET_PDEATHSIG),
  and then stops the command: no job outlives the runner that tracks it;
- on SIGTERM (cancel, preemption) or at the time limit sends TERM to the group,
  waits the grace period (training code can checkpoint), then KILLs it;
- when the node's lease runs out (the node lost the head: core/lease.py) does the
  same with at most FENCE_KILL_S of grace, and says `fenced`;
- copies the command's output into DIR/output.log, up to a size cap, noting any
  truncation, so logs live on the node and outlast the runner;
- writes DIR/exit.json atomically with the exit code and why it ended, and prints the
  same record on its standard output for the runner (which so need not trust a file
  the job's user owns).

In a multi-user install it runs as root, like slurmstepd, and starts the command as
the job's account (`--user`): its uid, primary gid and every group it is in, its HOME,
USER, LOGNAME and SHELL, in its home unless the job names a working directory (the
change of directory is made as the user, so a job cannot start inside a folder its
user could not enter). The command's environment is built from nothing, like
`sbatch --export=NONE`: the base the runner sends on standard input (PATH, LANG, TZ),
the account's variables, the job's own env and gpuq's variables; the service's own
environment (Ray's address and token, gpuq's paths) never reaches it. The supervisor
itself stays root, so cancel, preemption and the time limit can always stop the job.
A job whose account does not exist on this node ends with reason `no_account`.

Before the command, a child that has already switched to the user makes the job's
private folder on the node and its runtime env (node/jobenv.py): TMPDIR, the
packages the runner fetched (handed over as open descriptors: root unpacks nothing),
the virtualenv. So nothing a user supplies is unpacked, imported or run as root. For a
job with a runtime env the supervisor prints `{"prepared": …}` on its standard output
when that is done (the runner holds the job ALLOCATING until then), or ends with
reason `runtime_env_failed` and the tool's own words. The time limit counts from the
command's start. The private folder is removed, as the user, when the job ends.

It uses the standard library only: it starts fast and cannot fail on an import.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from orchestrator.host.accounts import Account
from orchestrator.node import cgroups, jobenv, jobfiles, procs, raycluster
from orchestrator.node import command as command_run
from orchestrator.node.lease import Lease

PR_SET_PDEATHSIG = 1
DEFAULT_LOG_CAP = 64 * 1024 * 1024
MAX_FDS = 64  # the exit-record pipe and one descriptor per package (core/runtime_env.py allows 33)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the node reaper is the backstop


def serve() -> int:
    """The launcher: read requests from the runner on the socket at stdin, fork one
    supervisor per request, answer with its pid. It ends when the runner closes its
    end or dies (it is TERMed then, like a supervisor); supervisors it forked get a
    TERM when it ends and stop their jobs as they would if the runner died."""
    _die_with_parent()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps ended supervisors
    sock = socket.socket(fileno=0)
    while True:
        try:
            head, fds, _flags, _addr = socket.recv_fds(sock, 8, MAX_FDS)
            while head and len(head) < 8:
                head += sock.recv(8 - len(head))
        except OSError:
            return 0
        if len(head) < 8 or not fds:
            return 0  # the runner closed its end
        request = json.loads(read_exactly(sock, int.from_bytes(head, "big")))
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()  # its own session, as the runner gave the per-job process it replaces
                sock.close()
                _stdio(fds[0])
                code = main(request["argv"], request["sent"], fds[1:])
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.sendall(pid.to_bytes(8, "big"))


def read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise OSError("the runner closed its end mid-request")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _stdio(record_fd: int) -> None:
    """A forked supervisor's stdin is /dev/null and its stdout the runner's pipe."""
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    os.dup2(record_fd, 1)
    os.close(record_fd)


def main(argv: list[str] | None = None, sent: dict | None = None, package_fds: list[int] | tuple = ()) -> int:
    """One job. `sent` (base and job environment, and what to prepare) is read from
    stdin unless given; `package_fds` are the packages it names, open for reading."""
    ap = argparse.ArgumentParser(prog="gpuq-supervisor")
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--time-limit", type=float, default=0.0, help="seconds; 0 = none")
    ap.add_argument("--grace", type=float, default=10.0)
    ap.add_argument("--log-cap", type=int, default=DEFAULT_LOG_CAP)
    ap.add_argument("--cwd")
    ap.add_argument("--user", help="run the command as this Unix account (needs root)")
    ap.add_argument("--group-read", action="store_true", help="the job's group may read its log")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _die_with_parent()
    procs.become_subreaper()  # what the job leaves orphaned stays ours to end (the sweep in _run)
    if sent is None:
        sent = json.loads(sys.stdin.read() or "{}")
    started = time.time()

    try:
        account = Account.lookup(args.user) if args.user else Account.current()
    except KeyError:
        account = None
    owner = (account.uid, account.gid) if args.user and account else None
    try:
        dfd, log_fd = jobfiles.prepare(args.dir, owner, args.group_read)
    except (jobfiles.FolderRefused, OSError) as e:
        # Nothing in that folder is trusted, so the record goes on the pipe only.
        return _tell(
            {
                "exit_code": None,
                "signal": None,
                "reason": "launch_failed",
                "message": str(e)[:500],
                "started_at": started,
                "ended_at": time.time(),
            }
        )
    log = os.fdopen(log_fd, "ab", buffering=0)
    group = _cgroup(sent.get("cgroup"), log)
    # The node's lease (core/lease.py): the job stops here when the node loses the head.
    lease = Lease(sent["lease"]["path"], sent["lease"]["seconds"]) if sent.get("lease") else None

    def finish(record: dict) -> int:
        if (
            group is not None and not group.remove()
        ):  # every process of the job is gone before its end is told
            log.write(b"[gpuq] some of the job's processes would not die; the node agent reaps them\n")
        record = {**record, "started_at": started, "ended_at": time.time()}
        jobfiles.write_record(dfd, "exit.json", record, owner, args.group_read)
        return _tell(record)

    if account is None:
        message = f"no Unix account {args.user!r} on this node"
        log.write(f"[gpuq] {message}; the job cannot run here\n".encode())
        return finish({"exit_code": None, "signal": None, "reason": "no_account", "message": message})

    switch = (
        {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)} if owner else {}
    )
    stop_requested: dict[str, str | None] = {"why": None}

    def on_term(signum, frame):  # noqa: ARG001
        stop_requested["why"] = stop_requested["why"] or (
            "stopped" if signum == signal.SIGTERM else "interrupted"
        )

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)

    base = {**sent.get("base", {}), **account.login_env()}
    env = {**base, **sent.get("env", {})}
    plan = sent.get("prepare") or {}
    folder: Path | None = None
    if plan:
        try:
            folder = jobenv.user_folder(plan["scratch"], account.uid, account.gid)
        except (jobenv.SetupFailed, OSError) as e:  # the node's fault, not the job's
            log.write(f"[gpuq] the job's private folder could not be made: {e}\n".encode())
            return finish(
                {"exit_code": None, "signal": None, "reason": "launch_failed", "message": str(e)[:500]}
            )
        env["TMPDIR"] = str(folder / "jobs" / plan["job"] / "tmp")
    if folder is not None and plan.get("announce"):  # a runtime env: made by a child that is the user already
        try:
            made = jobenv.as_user(
                switch,
                lambda: jobenv.prepare(folder, plan["job"], plan, list(package_fds), base),
                stop_requested,
                float(plan.get("timeout") or 600),
                group and group.join,
            )
        except jobenv.SetupFailed as e:
            log.write(f"[gpuq] runtime env setup failed:\n{e}\n".encode())
            return finish(
                {"exit_code": None, "signal": None, "reason": "runtime_env_failed", "message": str(e)[-2000:]}
            )
        finally:
            for fd in package_fds:
                os.close(fd)
        if made is None:  # stopped while it was being prepared
            jobenv.remove_as_user(switch, folder, plan["job"])
            return finish({"exit_code": None, "signal": None, "reason": stop_requested["why"]})
        if made["pythonpath"]:
            env["PYTHONPATH"] = os.pathsep.join([*made["pythonpath"], *filter(None, [env.get("PYTHONPATH")])])
        if made["venv"]:
            env["PATH"] = f"{made['venv']}{os.sep}bin{os.pathsep}{env.get('PATH') or os.defpath}"
            env["VIRTUAL_ENV"] = made["venv"]
        args.cwd = made["cwd"] or args.cwd
        for note in made["notes"]:
            log.write(f"[gpuq] {note}\n".encode())
        _tell({"prepared": {"setup_s": made["setup_s"]}})
        started = time.time()  # the time limit counts from the command's start
    if sent.get("ray"):  # a Ray program: its rank of the job's private Ray cluster (node/raycluster.py)
        if folder is None:  # the runner always sends a Ray job its private folder's plan
            return finish(
                {"exit_code": None, "signal": None, "reason": "launch_failed", "message": "no job folder"}
            )
        command = _ray_command(sent["ray"], command, env, folder, plan["job"], args.dir)
    cwd, kind = (args.cwd, "named") if args.cwd else (account.home, "home")
    try:
        record = command_run.run(
            command, env, switch, args, log, dfd, owner, started, stop_requested, cwd, kind, group, lease
        )
        record = command_run.judge_memory(record, group, log)
        code = finish(record)
    finally:
        log.close()
    if folder is not None:
        # After the record is out: the runner learns of the end without waiting for this.
        os.close(1)
        jobenv.remove_as_user(switch, folder, plan["job"])
    return code


def _cgroup(asked: dict | None, log) -> cgroups.JobCgroup | None:
    """The rank's cgroup, with its limits, where the runner found this node can make one
    (runner.py: `asked` names it and says what it found); None, said in the log, where
    it cannot."""
    if not asked:
        return None
    found = cgroups.Containment.from_sent(asked["found"]) if "found" in asked else cgroups.find()
    try:
        return cgroups.JobCgroup(found, asked["name"], asked.get("memory"), asked.get("cpus"))
    except OSError as e:
        log.write(
            f"[gpuq] the job's cgroup could not be made ({e}); its processes are tracked by descent "
            "only, and its limits are not enforced\n".encode()
        )
        return None


def _ray_command(
    ray: dict, command: list[str], env: dict, folder: Path, job: str, directory: Path
) -> list[str]:
    """The rank's command in a Ray job, and its environment (changed in place): Ray's
    token auth with this attempt's token (never on a command line), and `python` and
    `python3` on PATH the job's Python, with the cluster's Ray (a runtime env's
    virtualenv, made from it, comes first)."""
    python = ray["python"]
    if env.get("VIRTUAL_ENV"):
        python = os.path.join(env["VIRTUAL_ENV"], "bin", "python")
    path = env.get("PATH") or os.defpath
    env["PATH"] = path if env.get("VIRTUAL_ENV") else f"{os.path.dirname(ray['python'])}{os.pathsep}{path}"
    env.pop("RAY_ADDRESS", None)
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ray["token"], "RAY_USAGE_STATS_ENABLED": "0"})
    argv = [
        python,
        "-c",
        raycluster.RUN,
        raycluster.ROOT,
        ray["role"],
        "--ports",
        str(ray["ports"]),
        "--block",
        str(ray["block"]),
        "--gpus",
        str(ray["gpus"]),
        "--cpus",
        str(ray["cpus"]),
        "--memory",
        str(ray["memory"]),
        "--object-store",
        str(ray["object_store"]),
        "--temp",
        str(jobenv.ray_dir(folder, job)),
        "--logs",
        str(directory / "ray-logs"),
        "--ip",
        ray["ip"],
        "--nodes",
        str(ray["nodes"]),
    ]
    if ray["role"] == "worker":
        return [*argv, "--address", ray["address"]]
    return [*argv, "--", *command]


def _tell(record: dict) -> int:
    """A line for the runner on the pipe (standard output)."""
    try:
        print(json.dumps(record), flush=True)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the runner is gone; the record on disk is what its node will read
    return 0


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())

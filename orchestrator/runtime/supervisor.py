"""The supervisor: a small process between a runner and the user's command.

    python -m orchestrator.runtime.supervisor --dir DIR --time-limit S --grace S [--user ACCOUNT]
                                      [--cwd DIR] [--group-read] -- CMD...  < env.json
    python -m orchestrator.runtime.supervisor --serve   < a Unix socket (the launcher)

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
private folder on the node and its runtime env (runtime/jobenv.py): TMPDIR, the
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
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.runtime import jobenv, jobfiles, procs, raycluster
from orchestrator.core.accounts import Account

PR_SET_PDEATHSIG = 1
DEFAULT_LOG_CAP = 64 * 1024 * 1024
MAX_FDS = 64  # the exit-record pipe and one descriptor per package (core/runtime_env.py allows 33)
# How the command starts, after the switch to the user (sh: an exec, not a fork of this
# process): the job's TMPDIR is made, the directory changed to (as the user, so a job
# cannot start in a folder its user could not enter), and what went wrong is said on
# the pipe $1 (read by the supervisor) and in the log. A user without a home folder runs
# in the job's private folder, as Slurm runs such a job in /tmp.
START = (
    'fd=$1; cwd=$2; kind=$3; shift 3; '
    'if [ -n "$TMPDIR" ] && ! mkdir -p -m 700 -- "$TMPDIR"; then echo tmpdir >&"$fd"; exit 125; fi; '
    'if ! cd -- "$cwd" 2>/dev/null; then '
    '  if [ "$kind" = home ] && [ -n "$TMPDIR" ] && cd -- "${TMPDIR%/tmp}"; then '
    '    echo "[gpuq] $USER has no home folder $cwd on this node: the job runs in its private folder $PWD" >&2; '
    '    echo nohome >&"$fd"; '
    '  else '
    '    echo "[gpuq] the working directory $cwd does not exist, or $USER cannot enter it" >&2; '
    '    echo nocwd >&"$fd"; exit 125; '
    '  fi; '
    'fi; '
    'unset OLDPWD; eval "exec $fd>&-"; exec "$@"'
)


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
        return _tell({"exit_code": None, "signal": None, "reason": "launch_failed", "message": str(e)[:500],
                      "started_at": started, "ended_at": time.time()})
    log = os.fdopen(log_fd, "ab", buffering=0)

    def finish(record: dict) -> int:
        record = {**record, "started_at": started, "ended_at": time.time()}
        jobfiles.write_record(dfd, "exit.json", record, owner, args.group_read)
        return _tell(record)

    if account is None:
        message = f"no Unix account {args.user!r} on this node"
        log.write(f"[gpuq] {message}; the job cannot run here\n".encode())
        return finish({"exit_code": None, "signal": None, "reason": "no_account", "message": message})

    switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)} if owner else {}
    stop_requested = {"why": None}

    def on_term(signum, frame):  # noqa: ARG001
        stop_requested["why"] = stop_requested["why"] or ("stopped" if signum == signal.SIGTERM else "interrupted")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)

    base = {**sent.get("base", {}), **account.login_env()}
    env = {**base, **sent.get("env", {})}
    plan = sent.get("prepare")
    folder = None
    if plan:
        try:
            folder = jobenv.user_folder(plan["scratch"], account.uid, account.gid)
        except (jobenv.SetupFailed, OSError) as e:  # the node's fault, not the job's
            log.write(f"[gpuq] the job's private folder could not be made: {e}\n".encode())
            return finish({"exit_code": None, "signal": None, "reason": "launch_failed", "message": str(e)[:500]})
        env["TMPDIR"] = str(folder / "jobs" / plan["job"] / "tmp")
    if plan and plan.get("announce"):  # a runtime env: made by a child that is the user already
        try:
            made = jobenv.as_user(switch, lambda: jobenv.prepare(folder, plan["job"], plan, list(package_fds), base),
                            stop_requested, float(plan.get("timeout") or 600))
        except jobenv.SetupFailed as e:
            log.write(f"[gpuq] runtime env setup failed:\n{e}\n".encode())
            return finish({"exit_code": None, "signal": None, "reason": "runtime_env_failed",
                           "message": str(e)[-2000:]})
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
    if sent.get("ray"):  # a Ray program: its rank of the job's private Ray cluster (runtime/raycluster.py)
        command = _ray_command(sent["ray"], command, env, folder, plan["job"], args.dir)
    cwd, kind = (args.cwd, "named") if args.cwd else (account.home, "home")
    try:
        record = _run(command, env, switch, args, log, dfd, owner, started, stop_requested, cwd, kind)
    finally:
        log.close()
    code = finish(record)
    if folder is not None:
        # After the record is out: the runner learns of the end without waiting for this.
        os.close(1)
        jobenv.remove_as_user(switch, folder, plan["job"])
    return code


def _ray_command(ray: dict, command: list[str], env: dict, folder: Path, job: str, directory: Path) -> list[str]:
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
    argv = [python, "-c", raycluster.RUN, raycluster.ROOT, ray["role"], "--ports", str(ray["ports"]),
            "--block", str(ray["block"]), "--gpus", str(ray["gpus"]), "--cpus", str(ray["cpus"]),
            "--memory", str(ray["memory"]), "--object-store", str(ray["object_store"]),
            "--temp", str(jobenv.ray_dir(folder, job)), "--logs", str(directory / "ray-logs"), "--ip", ray["ip"],
            "--nodes", str(ray["nodes"])]
    if ray["role"] == "worker":
        return [*argv, "--address", ray["address"]]
    return [*argv, "--", *command]


def _run(command: list[str], env: dict, switch: dict, args, log, dfd: int, owner, started: float,
         stop_requested: dict, cwd: str, kind: str) -> dict:
    """Run the command to its end: its output into the log, TERM then KILL at a stop or
    the time limit. Returns the exit record."""
    said_r, said_w = os.pipe()  # what START says went wrong before the command ran
    try:
        child = subprocess.Popen(
            ["/bin/sh", "-c", START, "gpuq-job", str(said_w), cwd, kind, *command], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, process_group=0, close_fds=True, pass_fds=(said_w,),
            env=env, **switch,
        )
    except OSError as e:
        log.write(f"[gpuq] could not start the command: {e}\n".encode())
        return {"exit_code": None, "signal": None, "reason": "launch_failed", "message": f"could not start: {e}"}
    finally:
        os.close(said_w)
    jobfiles.write_record(dfd, "start.json", {"supervisor_pid": os.getpid(), "pid": child.pid, "started_at": started},
                          owner, args.group_read)

    deadline = started + args.time_limit if args.time_limit > 0 else None
    written = dropped = 0
    reason = None
    term_sent_at = None
    sel = selectors.DefaultSelector()
    os.set_blocking(child.stdout.fileno(), False)
    sel.register(child.stdout, selectors.EVENT_READ)
    open_pipe = True
    while True:
        now = time.time()
        if reason is None:
            if stop_requested["why"]:
                reason = stop_requested["why"]
            elif deadline is not None and now >= deadline:
                reason = "time_limit"
                log.write(f"\n[gpuq] time limit of {args.time_limit:.0f} s reached; stopping\n".encode())
            if reason is not None:
                _signal_group(child.pid, signal.SIGTERM)
                term_sent_at = now
        elif term_sent_at is not None and now - term_sent_at >= args.grace:
            _signal_group(child.pid, signal.SIGKILL)
            term_sent_at = None
        if open_pipe:
            for _key, _ in sel.select(timeout=0.2):
                try:
                    chunk = os.read(child.stdout.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(child.stdout)
                    open_pipe = False
                    break
                room = args.log_cap - written
                if room > 0:
                    log.write(chunk[:room])
                    written += min(room, len(chunk))
                    if len(chunk) > room:
                        log.write(f"\n[gpuq] log truncated at {args.log_cap} bytes; later output is discarded\n".encode())
                dropped += max(0, len(chunk) - max(room, 0))
        else:
            time.sleep(0.05)
        code = child.poll()
        if code is not None and not open_pipe:
            break
        if code is not None:
            # The command exited but something it started still holds the pipe: the job
            # is over, so stop the rest of its group (output already in the pipe is kept).
            _signal_group(child.pid, signal.SIGKILL)
    if dropped:
        log.write(f"[gpuq] {dropped} bytes of output were discarded\n".encode())
    # Anything left in the group (a daemon the command started) goes with it, and so does
    # anything of the job's outside the group (a Ray job's raylet puts its workers in
    # groups of their own; a daemon makes a session of its own): the sweep finds them by
    # descent, as this process is their subreaper.
    _signal_group(child.pid, signal.SIGKILL)
    code = child.returncode
    procs.stop_descendants(0)
    sig = -code if code < 0 else None
    record = {"exit_code": 128 + sig if sig else code, "signal": sig, "reason": reason or "exited"}
    with os.fdopen(said_r, "rb") as said:
        before = set(said.read(4096).decode(errors="replace").split())
    if "tmpdir" in before:  # the node's fault: its disk, its scratch folder
        return {**record, "exit_code": None, "reason": "launch_failed", "message": "the job's TMPDIR could not be made"}
    if "nocwd" in before:
        return {**record, "exit_code": None, "reason": "workdir_missing",
                "message": f"the working directory {cwd} does not exist, or its user cannot enter it"}
    if "nohome" in before:
        record["notes"] = [f"no home folder {cwd} on this node: the job ran in its private folder"]
    return record


def _tell(record: dict) -> int:
    """A line for the runner on the pipe (standard output)."""
    try:
        print(json.dumps(record), flush=True)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the runner is gone; the record on disk is what its node will read
    return 0


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(serve() if sys.argv[1:] == ["--serve"] else main())

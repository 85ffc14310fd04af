"""The supervisor: a small process between a runner and the user's command.

    python -m orchestrator.supervisor --dir DIR --time-limit S --grace S -- CMD...

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
- writes DIR/exit.json atomically with the exit code and why it ended.
It uses the standard library only: it starts fast and cannot fail on an import.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1
DEFAULT_LOG_CAP = 64 * 1024 * 1024


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the node reaper is the backstop


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpuq-supervisor")
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--time-limit", type=float, default=0.0, help="seconds; 0 = none")
    ap.add_argument("--grace", type=float, default=10.0)
    ap.add_argument("--log-cap", type=int, default=DEFAULT_LOG_CAP)
    ap.add_argument("--cwd")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    _die_with_parent()
    args.dir.mkdir(parents=True, exist_ok=True)

    stop_requested = {"why": None}

    def on_term(signum, frame):  # noqa: ARG001
        stop_requested["why"] = stop_requested["why"] or ("stopped" if signum == signal.SIGTERM else "interrupted")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_term)

    started = time.time()
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            process_group=0, cwd=args.cwd or None, close_fds=True,
        )
    except OSError as e:
        with open(args.dir / "output.log", "ab") as log:
            log.write(f"[gpuq] could not start the command: {e}\n".encode())
        _write_json(args.dir / "exit.json", {"exit_code": 127, "signal": None, "reason": "launch_failed",
                                              "ended_at": time.time(), "started_at": started})
        return 127
    _write_json(args.dir / "start.json", {"supervisor_pid": os.getpid(), "pid": child.pid, "started_at": started})

    deadline = started + args.time_limit if args.time_limit > 0 else None
    written = dropped = 0
    reason = None
    term_sent_at = None
    sel = selectors.DefaultSelector()
    os.set_blocking(child.stdout.fileno(), False)
    sel.register(child.stdout, selectors.EVENT_READ)
    with open(args.dir / "output.log", "ab", buffering=0) as log:
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
    # Anything left in the group (a daemon the command started) goes with it.
    _signal_group(child.pid, signal.SIGKILL)
    code = child.returncode
    sig = -code if code < 0 else None
    _write_json(args.dir / "exit.json", {
        "exit_code": 128 + sig if sig else code,
        "signal": sig,
        "reason": reason or "exited",
        "started_at": started,
        "ended_at": time.time(),
    })
    return 0


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


if __name__ == "__main__":
    sys.exit(main())

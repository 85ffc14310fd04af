"""The launcher: one small process per slot that forks a supervisor per job.

Starting a supervisor as a new Python process cost ~45 ms of CPU a job (the
interpreter and its imports), more than everything else in a launch together, and
bounded a busy queue of short jobs at ~25 a second on this 2-core machine. A runner
instead starts one launcher (supervisor.serve, in a Python started with `-I -S`) with
its slot; per job it sends the supervisor's arguments and the job's environment
on a Unix socket, with the write end of a pipe for the exit record, and the launcher
forks (~1 ms) a supervisor that works exactly as one started from the command line.

The launcher starts with its own session and only what Python needs in its
environment (never the runner's, which holds Ray's address and token). It dies with
the runner (a parent-death signal), and the supervisors it forked die with it, each
stopping its job as it would if the runner died. A launcher that died by itself is
started again at the next job.

No Ray here: the runner (runner.py) holds one Launcher; the tests drive it directly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.node.jobfiles import read_exit
from orchestrator.node.supervisor import read_exactly

# What the launcher (and so each supervisor) inherits: the locale and time zone. Not the
# job's environment, nor its tags: the reaper and telemetry find a job by its command's
# processes, whose environment is built from what the runner sends.
LAUNCHER_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
# The launcher runs as root and needs the standard library and gpuq's own package only.
# `-I` ignores every PYTHON* variable (a PYTHONPATH naming a user's folder would let a
# `sitecustomize.py` or an `argparse.py` there run as root) and the user site; `-S`
# skips site, so none of the venv's .pth hooks run either. gpuq's package is put first
# on sys.path by the one line below, from where this file is.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
SERVE = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from orchestrator.node.supervisor import serve; sys.exit(serve())"
)


class Launched:
    """A job's supervisor: its pid, and a thread that reads what it says on the pipe:
    for a job with a runtime env, a line when that is ready (`prepared`), then the exit
    record (EOF: it ended), so that any number of waits, from this orchestrator or the
    next after a restart, get the same answer."""

    def __init__(self, pid: int, record_fd: int, directory: Path):
        self.pid = pid
        self.record: dict | None = None
        self.prepared: dict | None = None
        self.ended = threading.Event()
        self.ready = threading.Event()  # prepared, or ended
        threading.Thread(target=self._read, args=(record_fd, directory), daemon=True).start()

    def _read(self, fd: int, directory: Path) -> None:
        last = None
        with os.fdopen(fd, "rb") as pipe:
            for line in pipe:
                try:
                    said = json.loads(line)
                except ValueError:
                    continue
                if isinstance(said, dict) and "prepared" in said:
                    self.prepared = said["prepared"]
                    self.ready.set()
                elif isinstance(said, dict):
                    last = said
        # The record printed on the pipe is believed over the copy on disk, which the
        # job's user owns; the disk's is the fallback when the supervisor died silent.
        self.record = last or read_exit(directory)
        self.ended.set()
        self.ready.set()

    def result(self, timeout: float | None = None) -> dict | None:
        """The exit record once it ended (None if still running after `timeout`)."""
        if not self.ended.wait(timeout):
            return None
        return self.record or {
            "exit_code": None,
            "signal": None,
            "reason": "supervisor_lost",
            "ended_at": time.time(),
        }


class Launcher:
    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self._started()

    def _started(self) -> socket.socket:
        """The launcher's socket, the launcher started (again) if it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            env = {k: os.environ[k] for k in LAUNCHER_ENV if k in os.environ}
            # Its own session: a SIGKILL of the runner's process group does not reach it or
            # the jobs; its parent-death signal (and theirs) ends them instead, cleanly.
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", SERVE, PACKAGE_ROOT],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd="/",
            )
            theirs.close()
            if self.sock is not None:
                self.sock.close()
            self.sock = ours
        if self.sock is None:  # set whenever a launcher was started
            raise RuntimeError("the launcher has no socket")
        return self.sock

    def launch(
        self, argv: list[str], sent: dict, directory: Path, package_fds: Sequence[int] = ()
    ) -> Launched:
        """Fork a supervisor with these arguments (supervisor.main's), `sent` (the base
        and job environment, what to prepare) and the packages it names, open for
        reading; `directory` is where its exit record is on disk."""
        body = json.dumps({"argv": argv, "sent": sent}).encode()
        read_end, write_end = os.pipe()
        try:
            with self.lock:
                for tries in (1, 2):  # a launcher that died is started again, once
                    sock = self._started()
                    try:
                        socket.send_fds(
                            sock, [len(body).to_bytes(8, "big") + body], [write_end, *package_fds]
                        )
                        pid = int.from_bytes(read_exactly(sock, 8), "big")
                        break
                    except OSError:
                        if self.proc is not None:
                            self.proc.kill()
                            self.proc.wait()
                        if tries == 2:
                            raise
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return Launched(pid, read_end, directory)

    def close(self) -> None:
        """End the launcher; the supervisors it forked stop their jobs (a TERM each)."""
        if self.sock is not None:
            self.sock.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

"""A job's private folder and runtime env on its node, made by its own user.

The supervisor (root in a multi-user install) does only what needs root: it makes the
user's folder under the node's scratch root (`user_folder`) and hands over descriptors
of the packages the runner fetched. Everything a user supplies is then handled by a
process that has already switched to the job's user (`prepare`, in a child of the
supervisor), so no byte of it is unpacked, imported or executed by root:

    <scratch_dir>/<uid>/                  the user's, 0700 (root makes it; the root above is 0711)
        jobs/<job>-<attempt>-<rank>/      one per bundle, removed when the job ends (`remove`)
            tmp/                          the job's TMPDIR, 0700
            work/                         the unpacked working_dir (the command runs here)
            modules/<i>/                  the unpacked py_modules, on PYTHONPATH
        envs/<hash>/                      a virtualenv per pip/uv list: built once, reused

A virtualenv is built from the site's job Python (`python3` on the job's PATH unless
the site names one) with its system packages visible, as Ray's pip env is, and pip
runs `--isolated` (no user config or PIP_* variable) against the site's index only.
The same list for the same user on the same node is built once: a lock serializes
builds, and a marker says an env is complete.

Standard library only. Everything `prepare` needs is imported here, before the switch
to the user: after it, the interpreter's own library may be out of the user's reach
(a Python under /root, as on this machine's image), and an import would fail.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from orchestrator.node.unpack import UnpackError, unpack

READY = ".gpuq-ready"
OUTPUT_TAIL = 3000
MAX_SETUP_ANSWER = 1 << 20


class SetupFailed(Exception):
    """The job's runtime env could not be made (the message is the tool's own words)."""


def user_folder(scratch: str, uid: int, gid: int) -> Path:
    """As root: `<scratch>/<uid>`, the user's own (0700), creating the scratch root
    (0711, the service's) and the folder as needed. Refuses a scratch root that is not
    the service's or that others may write, and a user folder that is not a folder of
    that user: in a root-owned 0711 folder, only root can have made one."""
    root = Path(scratch)
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SetupFailed(
                f"scratch_dir {scratch} must belong to the service account and not be writable by others"
            )
        if stat.S_IMODE(st.st_mode) != 0o711:
            os.fchmod(dfd, 0o711)
        name = str(uid)
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)
            made = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                os.fchown(made, uid, gid)
                os.fchmod(made, 0o700)
            finally:
                os.close(made)
        except FileExistsError:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
                raise SetupFailed(f"{root / name} is not a folder of uid {uid}; remove it") from None
    finally:
        os.close(dfd)
    return root / str(uid)


def prepare(folder: Path, job: str, plan: dict, package_fds: list[int], env: dict[str, str]) -> dict:
    """As the job's user: the bundle's folder with its TMPDIR, its packages unpacked and
    its virtualenv ready. Returns what the command's environment needs (cwd, pythonpath,
    venv) and notes for its log; raises SetupFailed. (A job without a runtime env gets
    its TMPDIR from the command's own start: supervisor.MAKE_TMPDIR.)"""
    began = time.monotonic()
    here = folder / "jobs" / job
    if here.exists():  # a bundle's folder is its own: anything there is a leftover of this user's
        shutil.rmtree(here)
    (here / "tmp").mkdir(parents=True, mode=0o700)
    os.chmod(here, 0o700)
    out: dict = {"cwd": None, "pythonpath": [], "venv": None, "notes": []}
    packages = plan.get("packages") or []
    if packages:
        for i, (package, fd) in enumerate(zip(packages, package_fds, strict=True)):
            dest = here / "work" if package["kind"] == "working_dir" else here / "modules" / str(i)
            dest.mkdir(parents=True)
            try:
                with os.fdopen(fd, "rb") as source:
                    left_out = unpack(source, dest, int(plan.get("unpack_limit") or 1 << 30))
            except (UnpackError, OSError) as e:
                raise SetupFailed(f"{package['uri']} could not be unpacked: {e}") from None
            out["notes"] += [f"{package['uri']}: {line}" for line in left_out]
            if package["kind"] == "working_dir":
                out["cwd"] = str(dest)
                out["pythonpath"].insert(0, str(dest))
            else:
                out["pythonpath"].append(str(dest))
    for kind in ("pip", "uv"):
        if plan.get(kind):
            out["venv"] = str(virtualenv(folder / "envs", kind, plan[kind], plan, env))
    out["setup_s"] = round(time.monotonic() - began, 3)
    return out


def virtualenv(envs: Path, kind: str, spec: dict, plan: dict, env: dict[str, str]) -> Path:
    """The user's virtualenv for this requirement list, built unless it is already."""
    python = shutil.which(plan.get("python") or "python3", path=env.get("PATH")) or ""
    if not python:
        raise SetupFailed(f"no {plan.get('python') or 'python3'} on the job's PATH to make a virtualenv with")
    index = plan.get("index_url")
    key = hashlib.sha256(json.dumps([kind, spec, index, os.path.realpath(python)], sort_keys=True).encode())
    final = envs / key.hexdigest()[:16]
    envs.mkdir(mode=0o700, exist_ok=True)
    with open(envs / f"{final.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another job of this user may be building the same env
        if (final / READY).exists():
            return final
        if final.exists():
            shutil.rmtree(final)  # a build that did not finish
        uv = shutil.which("uv", path=env.get("PATH")) if kind == "uv" else None
        packages = list(spec["packages"])
        index_args = ["--index-url", index] if index else []
        if uv:
            _run([uv, "venv", "--quiet", "--system-site-packages", "--python", python, str(final)], env)
            _run(
                [
                    uv,
                    "pip",
                    "install",
                    "--quiet",
                    "--python",
                    str(final / "bin" / "python"),
                    *index_args,
                    "--",
                    *packages,
                ],
                env,
            )
        else:
            _run([python, "-m", "venv", "--system-site-packages", str(final)], env)
            _run(
                [
                    str(final / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--isolated",
                    "--quiet",
                    "--no-input",
                    "--disable-pip-version-check",
                    *index_args,
                    "--",
                    *packages,
                ],
                env,
            )
        _see_base_packages(python, final, env)
        if spec.get(f"{kind}_check"):
            _run([str(final / "bin" / "python"), "-m", "pip", "check"], env)
        (final / READY).touch()
    return final


def _see_base_packages(python: str, final: Path, env: dict[str, str]) -> None:
    """When the job Python is itself a venv (gpuq's own, with the cluster's Ray), the new
    env sees its packages too, after its own: `--system-site-packages` reaches only the
    base interpreter's, and a Ray job's driver and workers need that Ray."""
    said = subprocess.run(
        [
            python,
            "-c",
            "import sys, sysconfig; print(sys.prefix != sys.base_prefix and "
            "sysconfig.get_paths()['purelib'] or '')",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        text=True,
    )
    base = said.stdout.strip()
    if said.returncode != 0 or not base:
        return
    done = subprocess.run(
        [str(final / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=env,
        text=True,
    )
    if done.returncode == 0 and done.stdout.strip():
        (Path(done.stdout.strip()) / "zz-gpuq-job-python.pth").write_text(base + "\n")


def _run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=env.get("HOME") if os.path.isdir(env.get("HOME", "")) else "/",
    )
    if done.returncode != 0:
        said = done.stdout.decode("utf-8", "replace").strip()
        raise SetupFailed(f"{os.path.basename(args[0])} {' '.join(args[1:3])} failed:\n{said[-OUTPUT_TAIL:]}")


def ray_dir(folder: Path, job: str) -> Path:
    """A Ray job's temp dir for Ray (node/raycluster.py): in the user's folder, but
    short, as Ray's socket paths under it must fit in 107 bytes."""
    return folder / "r" / hashlib.sha256(job.encode()).hexdigest()[:8]


def remove(folder: Path, job: str) -> None:
    """As the job's user: remove the bundle's folder (its TMPDIR with it) and its Ray temp dir."""
    shutil.rmtree(folder / "jobs" / job, ignore_errors=True)
    shutil.rmtree(ray_dir(folder, job), ignore_errors=True)


def as_user(switch: dict, work, stop_requested: dict, timeout: float, join=None):
    """Run `work` in a child that has switched to the job's user (no switch: as this
    account), in its own process group; its answer (JSON-able). None if a stop came
    first; raises SetupFailed for its failure or at the time-out. `join`, called in the
    child before the switch, puts it in the job's cgroup (cgroups.JobCgroup.join)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setpgid(0, 0)  # what it starts (pip) is stopped with it
            if join is not None:
                join()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # never the runner's pipe
                os.dup2(null, fd)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            if switch:
                os.setgroups(switch["extra_groups"])
                os.setgid(switch["group"])
                os.setuid(switch["user"])
            os.umask(0o077)
            try:
                answer = {"ok": work()}
            except SetupFailed as e:
                answer = {"error": str(e)}
            except Exception as e:  # noqa: BLE001 - said in the job's log, never a traceback
                answer = {"error": f"{type(e).__name__}: {e}"}
            data = json.dumps(answer).encode()
            while data:
                data = data[os.write(write_end, data) :]
        finally:
            os._exit(0)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    said = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(read_end, selectors.EVENT_READ)
            while True:
                if stop_requested["why"] or time.monotonic() > deadline:
                    _kill_group(pid)
                    if stop_requested["why"]:
                        return None
                    raise SetupFailed(f"not ready after {timeout:.0f} s (runtime_env_setup_timeout_s)")
                if sel.select(timeout=0.2):
                    chunk = os.read(read_end, 65536)
                    if not chunk:
                        break
                    said += chunk[: MAX_SETUP_ANSWER - len(said)]
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    try:
        answer = json.loads(said)
    except ValueError:
        raise SetupFailed("the setup ended without an answer") from None
    if "error" in answer:
        raise SetupFailed(answer["error"])
    return answer["ok"]


def remove_as_user(switch: dict, folder: Path, job: str) -> None:
    """Remove the job's private folder as its user (a link in it leads nowhere of root's)."""
    try:
        as_user(switch, lambda: remove(folder, job), {"why": None}, 60)
    except SetupFailed:
        pass  # what is left is the user's own, in their own folder


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

"""The commands every account on this machine runs: `gpuq`, and `ray` for `ray job
submit`. Both are this venv's (the cluster's own gpuq and Ray, so never out of step with
it). Whether every account may run them, and, on request (`gpuq up --link-commands`),
links to them in /usr/local/bin, where every account's PATH already looks: what a
site expects of a package's commands, as pipx's global install or a Debian package
puts them.

A link is only made where nothing is, or over an earlier link into a venv of gpuq's (an
older checkout): a `ray` or `gpuq` the site installed itself is left alone and named.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from orchestrator.host.accounts import closed_to_others, multi_user

COMMANDS = ("gpuq", "ray")
LINK_DIR = Path("/usr/local/bin")


def offer(link_dir: Path | None = None) -> dict:
    """What `gpuq up` says about the commands: where they are, whether every account
    may run them and why not, and the links made in `link_dir` (None: none asked)."""
    venv_bin = Path(sys.prefix) / "bin"  # the venv as named, not the interpreter it links to
    import orchestrator

    code = str(Path(orchestrator.__file__).parent)
    why_not = (
        closed_to_others(str(venv_bin / "python"))
        or closed_to_others(str(venv_bin / "gpuq"), "read and run")  # a script
        or closed_to_others(str(Path(sys.prefix) / "pyvenv.cfg"), "read")
        or closed_to_others(code, "read and run")
    )
    out: dict = {"bin": str(venv_bin), "multi_user": multi_user(), "why_not": why_not}
    out.update(linked=[], kept=[])
    if link_dir is None:
        return out
    if why_not:
        out["kept"].append(f"no links made: {why_not}")
        return out
    link_dir.mkdir(parents=True, exist_ok=True)
    for name in COMMANDS:
        target, link = venv_bin / name, link_dir / name
        if not target.exists():
            continue
        if link.is_symlink() and os.readlink(link) == str(target):
            out["linked"].append(str(link))
        elif os.path.lexists(link) and not _ours(link):
            out["kept"].append(f"{link} is another program's: left alone")
        else:
            temp = link.with_name(f".{name}.gpuq-{os.getpid()}")
            temp.unlink(missing_ok=True)
            temp.symlink_to(target)
            os.replace(temp, link)  # atomic: a user's command never finds no `gpuq`
            out["linked"].append(str(link))
    return out


def _ours(link: Path) -> bool:
    """An earlier link of gpuq's: into the bin folder of a venv that holds gpuq."""
    if not link.is_symlink():
        return False
    folder = Path(os.readlink(link)).parent
    return folder.is_absolute() and (folder / "gpuq").exists() and (folder.parent / "pyvenv.cfg").exists()

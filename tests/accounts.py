"""Throwaway Unix accounts for the test run: the suite runs as root in CI, so jobs run as
their users for real. Every gpuq user name the suite submits as maps to an account
`gpuqt-<name>` (through the site's unix_users, as a lab maps names to LDAP accounts);
alice is also in the supplementary group `gpuqt-lab`; drifter has no home folder (its
passwd entry names one that does not exist). All are removed at the end.
"""

from __future__ import annotations

import os
import pwd
import subprocess

USERS = ("alice", "bob", "carol", "eve", "researcher", "heavy", "light", "drifter")
HOMELESS = ("drifter",)
LAB_GROUP = "gpuqt-lab"
UNIX_USERS = {name: f"gpuqt-{name}" for name in USERS}


def can_create() -> bool:
    return os.geteuid() == 0


def _quiet(*cmd: str) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def create() -> None:
    remove()  # a run that died before its clean-up
    subprocess.run(["groupadd", LAB_GROUP], check=True, capture_output=True)
    for name, account in UNIX_USERS.items():
        extra = ["-G", LAB_GROUP] if name == "alice" else []
        home = ["--no-create-home"] if name in HOMELESS else ["--create-home"]
        subprocess.run(
            ["useradd", *home, "--user-group", "--shell", "/bin/bash", *extra, account],
            check=True,
            capture_output=True,
        )
        if name not in HOMELESS:
            os.chmod(pwd.getpwnam(account).pw_dir, 0o700)


def remove() -> None:
    for account in UNIX_USERS.values():
        _quiet("pkill", "-KILL", "-u", account)
        _quiet("userdel", "--force", "--remove", account)
    _quiet("groupdel", LAB_GROUP)

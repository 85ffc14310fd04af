"""Which Unix account runs a gpuq user's jobs, and whether users are kept apart at all.

Slurm's model: slurmd runs as root and starts each job as the submitting user's uid,
with that user's groups. gpuq does the same when its node runtime runs as root (a
*multi-user* install): a gpuq user name is the Unix account of the same name unless
the site maps it (`unix_users = { alice = "asmith" }`), and the built-in `admin` user
runs as the service account unless mapped. Accounts must exist on every node (LDAP,
or the same /etc/passwd everywhere): the head checks at submit, the node again at
launch.

Not running as root (a *single-user* install), gpuq cannot switch users: every job
runs as the one account that runs gpuq, and nothing keeps users' jobs apart.

Standard library only, and cheap to import (no dataclasses: `inspect` alone costs the
supervisor, which starts for every job, 6 ms): the supervisor imports this.
"""

from __future__ import annotations

import os
import pwd
from typing import NamedTuple

BUILTIN_ADMIN = "admin"


def multi_user() -> bool:
    """Jobs can run as their users only where gpuq's node runtime runs as root."""
    return os.geteuid() == 0


def service_account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def install_mode() -> dict:
    """What `gpuq status` and `gpuq up` say about isolation, in words."""
    account = service_account()
    if multi_user():
        return {"mode": "multi-user", "service_account": account,
                "message": "jobs run as their users' Unix accounts"}
    return {"mode": "single-user", "service_account": account,
            "message": f"every job runs as {account}: users are not isolated from one another "
                       "(start gpuq as root for a multi-user install)"}


def account_for(user: str, unix_users: dict[str, str]) -> str | None:
    """The Unix account a gpuq user's jobs run as; None means the service account."""
    if not multi_user():
        return None
    if user in unix_users:
        return unix_users[user]
    return None if user == BUILTIN_ADMIN else user


def missing_account(user: str, unix_users: dict[str, str]) -> str | None:
    """Why `user` cannot run jobs on this host, or None when it can."""
    account = account_for(user, unix_users)
    if account is None:
        return None
    try:
        pwd.getpwnam(account)
    except KeyError:
        mapped = f" (mapped from {user} by unix_users)" if account != user else ""
        return (f"{user} has no Unix account {account!r}{mapped} on this cluster: create it on every node, "
                "or map the name with unix_users in the site config")
    return None


class Account(NamedTuple):
    """What the supervisor switches to: uid, primary gid, every group, and the login
    variables of the account."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    shell: str

    @classmethod
    def lookup(cls, name: str) -> "Account":
        """Raises KeyError when this node has no such account."""
        pw = pwd.getpwnam(name)
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)),
                   pw.pw_dir, pw.pw_shell or "/bin/sh")

    @classmethod
    def current(cls) -> "Account":
        pw = pwd.getpwuid(os.geteuid())
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgroups()), pw.pw_dir, pw.pw_shell or "/bin/sh")

    def login_env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}

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

Jobs run as people's accounts only: never as root, as the service account, or as a
system account (a uid below UID_MIN in /etc/login.defs, 1000 where it says nothing),
unless the site lists that account in `allowed_system_accounts`. The built-in admin
is the exception by design: its jobs run as the service account, as before.

Standard library only, and cheap to import (no dataclasses: `inspect` alone costs the
supervisor, which starts for every job, 6 ms): the supervisor imports this.
"""

from __future__ import annotations

import os
import pwd
import stat
from typing import Any, NamedTuple

BUILTIN_ADMIN = "admin"


def multi_user() -> bool:
    """Jobs can run as their users only where gpuq's node runtime runs as root."""
    return os.geteuid() == 0


def closed_to_others(path: str, access: str = "run") -> str:
    """Why not every account may `access` path: '' when it may. "run" (a program),
    "read" (a file), "read and run" (a script, or a folder to list and enter). A
    single-user install runs everything as this account, which needs nothing more.
    Both the path as named and the file it links to count: every folder above each."""
    if not os.path.exists(path):
        return "does not exist"
    if not multi_user():
        return ""
    need = {"run": stat.S_IXOTH, "read": stat.S_IROTH, "read and run": stat.S_IROTH | stat.S_IXOTH}[access]
    for candidate in {os.path.abspath(path), os.path.realpath(path)}:
        folder = candidate
        while folder != "/":
            folder = os.path.dirname(folder)
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return f"other accounts cannot enter {folder}"
        if os.stat(candidate).st_mode & need != need:
            return f"other accounts cannot {access} {candidate}"
    return ""


def service_account() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def install_mode() -> dict[str, Any]:
    """What `gpuq status` and `gpuq up` say about isolation, in words."""
    account = service_account()
    if multi_user():
        return {
            "mode": "multi-user",
            "service_account": account,
            "message": "jobs run as their users' Unix accounts",
        }
    return {
        "mode": "single-user",
        "service_account": account,
        "message": f"every job runs as {account}: users are not isolated from one another "
        "(start gpuq as root for a multi-user install)",
    }


def account_for(user: str, unix_users: dict[str, str]) -> str | None:
    """The Unix account a gpuq user's jobs run as; None means the service account."""
    if not multi_user():
        return None
    if user in unix_users:
        return unix_users[user]
    return None if user == BUILTIN_ADMIN else user


def missing_account(
    user: str, unix_users: dict[str, str], allowed: list[str] | tuple[str, ...] = ()
) -> str | None:
    """Why `user` cannot run jobs on this host, or None when it can."""
    account = account_for(user, unix_users)
    if account is None:
        return None
    mapped = f" (mapped from {user} by unix_users)" if account != user else ""
    try:
        pw = pwd.getpwnam(account)
    except KeyError:
        return (
            f"{user} has no Unix account {account!r}{mapped} on this cluster: create it on every node, "
            "or map the name with unix_users in the site config"
        )
    if account in allowed:
        return None
    floor = uid_min()
    if pw.pw_uid == 0 or pw.pw_uid == os.geteuid():
        what = "root" if pw.pw_uid == 0 else "the service account"
    elif pw.pw_uid < floor:
        what = f"a system account (uid {pw.pw_uid}, below UID_MIN {floor})"
    else:
        return None
    return (
        f"{user}'s jobs would run as {account!r}{mapped}, which is {what}: jobs run as people's accounts "
        "only (a site may list an account in allowed_system_accounts)"
    )


def uid_min(login_defs: str = "/etc/login.defs") -> int:
    """The lowest uid of a person's account on this host (UID_MIN; 1000 by default)."""
    try:
        with open(login_defs) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    return 1000


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
    def lookup(cls, name: str) -> Account:
        """Raises KeyError when this node has no such account."""
        pw = pwd.getpwnam(name)
        return cls(
            pw.pw_name,
            pw.pw_uid,
            pw.pw_gid,
            tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)),
            pw.pw_dir,
            pw.pw_shell or "/bin/sh",
        )

    @classmethod
    def current(cls) -> Account:
        pw = pwd.getpwuid(os.geteuid())
        return cls(
            pw.pw_name, pw.pw_uid, pw.pw_gid, tuple(os.getgroups()), pw.pw_dir, pw.pw_shell or "/bin/sh"
        )

    def login_env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}

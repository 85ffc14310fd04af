"""Token management for admins: create, list, revoke (`gpuq token …`, /tokens).

Rules a site lives by:
- in a multi-user install a token that may run jobs is only made for someone whose
  jobs can run as their own Unix account (orchestrator/host/accounts.py): a name with
  no account, or whose account is root, the service's or a system account, is refused
  here, not at their first submit; a `user` token for gpuq's own `admin` is refused
  too (admin's jobs run as the service account);
- in a single-user install every job runs as the service account, so a token for
  anyone but that account (or the built-in admin) would let them act as it: refused
  unless the site says `allow_shared_account = true`. Reader tokens never run jobs
  and are always allowed.
Every change is written to the audit trail; a change the trail cannot record is undone.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from orchestrator.core.durations import parse_duration
from orchestrator.core.errors import Forbidden, InvalidSpec
from orchestrator.core.job import SAFE_NAME, SAFE_NAME_HELP
from orchestrator.core.rights import Caller
from orchestrator.host.accounts import BUILTIN_ADMIN, missing_account, multi_user, service_account
from serve_app.auth import ROLES, Principal, TokenFile


class UnknownToken(LookupError):
    pass


Record = Callable[[Caller, str, str, dict], Awaitable[None]]


def _expiry(value) -> float | None:
    if value in (None, "", "never"):
        return None
    try:
        seconds = parse_duration(str(value))
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise InvalidSpec([("expires", "must be a duration from now, like 90d, 12h or 30m, or never")])
    return time.time() + seconds


def check_new(user: object, role: object, site: dict) -> str:
    """The new token's user, once user and role are allowed."""
    if not isinstance(user, str) or not SAFE_NAME.fullmatch(user):
        raise InvalidSpec([("user", SAFE_NAME_HELP)])
    if role not in ROLES:
        raise InvalidSpec([("role", f"must be one of {', '.join(ROLES)}")])
    if role == "reader":
        return user
    if multi_user():
        if role == "user" and user == BUILTIN_ADMIN and BUILTIN_ADMIN not in (site.get("unix_users") or {}):
            raise InvalidSpec(
                [
                    (
                        "user",
                        f"{BUILTIN_ADMIN} is gpuq's own administrator, whose jobs run as the service "
                        "account: a user token for it is refused (map it with unix_users to a "
                        "person's account, or make an admin token)",
                    )
                ]
            )
        why = missing_account(user, site.get("unix_users") or {}, site.get("allowed_system_accounts") or ())
        if why:
            raise InvalidSpec([("user", why)])
    elif user not in (BUILTIN_ADMIN, service_account()) and not site.get("allow_shared_account"):
        raise Forbidden(
            "shared-account",
            f"this is a single-user install: every job runs as {service_account()}, "
            f"so a token for {user} would let them act as that account. Start gpuq as "
            "root for a multi-user install, or set allow_shared_account = true in the "
            "site config to accept this",
        )
    return user


async def create(tokens: TokenFile, who: Principal, body: dict, site: dict, record: Record) -> dict:
    user, role = body.get("user"), body.get("role", "user")
    user = check_new(user, role, site)
    expires_at = _expiry(body.get("expires"))
    token, entry = tokens.create(user, role, by=who.user, expires_at=expires_at)
    try:
        await record(
            who.caller, "token-create", entry["id"], {"user": user, "role": role, "expires_at": expires_at}
        )
    except Exception:
        tokens.revoke(entry["id"])  # not audited means not made
        raise
    return {"token": token, "id": entry["id"], "user": user, "role": role, "expires_at": expires_at}


async def revoke(tokens: TokenFile, who: Principal, token_id: str, record: Record) -> dict:
    entry = tokens.revoke(token_id)
    if entry is None:
        raise UnknownToken(f"no token with id {token_id!r} (gpuq token list shows them)")
    try:
        await record(who.caller, "token-revoke", token_id, {"user": entry["user"], "role": entry["role"]})
    except Exception:
        tokens.restore(entry)
        raise
    return {"revoked": token_id, "user": entry["user"], "role": entry["role"]}

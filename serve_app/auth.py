"""API tokens: who a bearer token is, what role it has, and how admins manage them live.

The tokens file (`$GPUQ_HOME/tokens.json`, mode 0600, the service account's) keeps
each token's SHA-256, never the token itself, with an id, a user, a role, who made it,
when, and when it expires:

    {"version": 2, "tokens": [{"id": "3f9c0a1e", "user": "alice", "role": "user",
      "sha256": "...", "created_at": 1764400000.0, "created_by": "admin", "expires_at": null}]}

A fast hash is the right one here: tokens are 256 random bits, so there is nothing
to guess that a slow hash would protect (GitHub and PyPI store theirs the same way).
The file is re-read whenever it changes (one stat per request), so a revoked token
stops working, and a new one starts, on the next request: no restart. The file of an
older gpuq ({"<token>": {"user", "role"}}) is read as it is and rewritten hashed on
the next change.

Roles: `user` submits as themselves and acts on their own jobs; `admin` may do
anything; `reader` sees cluster-wide views only (a Prometheus scraper, a wall display).
When each token was last used is kept beside the file (`tokens.used.json`), written
at most once a minute: `gpuq token list` shows it to that precision.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.rights import Caller
from orchestrator.host.paths import gpuq_home, secure_home

ROLES = ("user", "admin", "reader")
USED_WRITE_EVERY_S = 60.0


@dataclass(frozen=True)
class Principal(Caller):
    """A caller as a token names them."""

    token_id: str = ""
    expires_at: float | None = None  # the token's (None: it does not expire)

    def may_act_for(self, user: str) -> bool:
        """Submit as `user`, or change or read the private parts of `user`'s jobs."""
        return self.admin or (self.role == "user" and self.user == user)

    @property
    def caller(self) -> Caller:
        """Who asks, as the orchestrator checks rights and audits (no token id)."""
        return Caller(self.user, self.role)


class TokenRefused(Exception):
    """The token is unknown or has expired (401). The message says which."""


def tokens_path() -> Path:
    return Path(os.environ.get("GPUQ_TOKENS") or gpuq_home() / "tokens.json")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "gpuq_" + secrets.token_urlsafe(32)


class TokenFile:
    """The tokens file, re-read when it changes; every write is atomic and under a lock."""

    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else tokens_path()
        self._seen: tuple | None = None
        self._entries: list[dict] = []
        self._by_digest: dict[str, dict] = {}
        self._used: dict[str, float] = {}
        self._used_written = 0.0

    # --- reading --------------------------------------------------------------------

    def entries(self) -> list[dict]:
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            self._entries = _parse(self.path.read_text()) if seen else []
            self._by_digest = {e["sha256"]: e for e in self._entries}
            self._seen = seen
        return self._entries

    def authenticate(self, header: str | None, now: float | None = None) -> Principal | None:
        """The principal of an `Authorization: Bearer <token>` header; None without one.
        Raises TokenRefused for a token that is unknown or expired."""
        if not header or not header.lower().startswith("bearer "):
            return None
        offered = header[7:].strip()
        self.entries()
        entry = self._by_digest.get(digest(offered))
        if entry is None:
            raise TokenRefused("this token is not valid (unknown or revoked)")
        now = time.time() if now is None else now
        if entry.get("expires_at") is not None and now >= entry["expires_at"]:
            raise TokenRefused(
                f"this token (id {entry['id']}) expired at "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(entry['expires_at']))}"
            )
        self._note_use(entry["id"], now)
        return Principal(entry["user"], entry["role"], entry["id"], entry.get("expires_at"))

    def holder(self, header: str | None, now: float) -> dict | None:
        """The entry of a valid bearer token in `header` (None: none, unknown or expired),
        without noting its use: the admission check before a route authenticates."""
        if not header or not header.lower().startswith("bearer "):
            return None
        self.entries()
        entry = self._by_digest.get(digest(header[7:].strip()))
        if entry is None or (entry.get("expires_at") is not None and now >= entry["expires_at"]):
            return None
        return entry

    def listing(self, now: float | None = None) -> list[dict]:
        """Every token without its secret or hash: id, user, role, created, expiry, last use."""
        now = time.time() if now is None else now
        used = {**self._read_used(), **self._used}
        return [
            {
                "id": e["id"],
                "user": e["user"],
                "role": e["role"],
                "created_at": e.get("created_at"),
                "created_by": e.get("created_by"),
                "expires_at": e.get("expires_at"),
                "expired": e.get("expires_at") is not None and now >= e["expires_at"],
                "last_used_at": used.get(e["id"]),
            }
            for e in self.entries()
        ]

    # --- changing -------------------------------------------------------------------

    def create(
        self, user: str, role: str, by: str, expires_at: float | None = None, token: str | None = None
    ) -> tuple[str, dict]:
        """Add a token; returns (the token, its entry). The token is shown this once."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        token = token or new_token()
        with self._locked() as entries:
            ids = {e["id"] for e in entries}
            token_id = secrets.token_hex(4)
            while token_id in ids:
                token_id = secrets.token_hex(4)
            entry = {
                "id": token_id,
                "user": user,
                "role": role,
                "sha256": digest(token),
                "created_at": time.time(),
                "created_by": by,
                "expires_at": expires_at,
            }
            entries.append(entry)
        return token, entry

    def revoke(self, token_id: str) -> dict | None:
        """Remove a token; its entry, or None if there is no such id."""
        with self._locked() as entries:
            for i, e in enumerate(entries):
                if e["id"] == token_id:
                    return entries.pop(i)
        return None

    def restore(self, entry: dict) -> None:
        """Put back an entry (a change the audit trail could not record is undone)."""
        with self._locked() as entries:
            if all(e["id"] != entry["id"] for e in entries):
                entries.append(entry)

    def upgrade(self) -> None:
        """Rewrite an older gpuq's file of plain tokens hashed (a no-op for a current one)."""
        if self.path.exists() and json.loads(self.path.read_text() or "{}").get("version") != 2:
            with self._locked():
                pass

    def has(self, token: str) -> bool:
        self.entries()
        return digest(token) in self._by_digest

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _parse(self.path.read_text()) if self.path.exists() else []
            yield entries
            _write_private(self.path, json.dumps({"version": 2, "tokens": entries}, indent=2))
            self._seen = None  # re-read at the next request
        finally:
            os.close(lock)

    # --- last use -------------------------------------------------------------------

    @property
    def _used_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".used.json")

    def _read_used(self) -> dict[str, float]:
        try:
            data = json.loads(self._used_path.read_text())
            return {str(k): float(v) for k, v in data.items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _note_use(self, token_id: str, now: float) -> None:
        if now - self._used.get(token_id, 0.0) < USED_WRITE_EVERY_S:
            return
        self._used[token_id] = now
        if now - self._used_written >= USED_WRITE_EVERY_S:
            self._used_written = now
            with contextlib.suppress(OSError):
                _write_private(self._used_path, json.dumps({**self._read_used(), **self._used}))


def _parse(text: str) -> list[dict]:
    """Entries of either format; entries with an unknown role are dropped."""
    data = json.loads(text or "{}")
    if isinstance(data, dict) and data.get("version") == 2:
        entries = data.get("tokens", [])
    else:  # {"<token>": {"user": ..., "role": ...}}: an older gpuq's plain tokens
        entries = [
            {
                "id": digest(tok)[:8],
                "user": v["user"],
                "role": v.get("role", "user"),
                "sha256": digest(tok),
                "created_at": None,
                "created_by": None,
                "expires_at": None,
            }
            for tok, v in data.items()
        ]
    return [e for e in entries if e.get("role") in ROLES]


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_admin_token() -> Path:
    """Create an admin token on first start: written to $GPUQ_HOME/admin.token (mode 600)
    and registered (hashed) in the tokens file. Returns the token file's path."""
    home = secure_home()
    token_file = home / "admin.token"
    tokens = TokenFile()
    tokens.upgrade()
    if token_file.exists():
        os.chmod(token_file, 0o600)
        token = token_file.read_text().strip()
    else:
        token = new_token()
        _write_private(token_file, token + "\n")
    if not tokens.has(token):
        tokens.create("admin", "admin", by="gpuq up", token=token)
    elif tokens.path.exists():
        os.chmod(tokens.path, 0o600)
    return token_file

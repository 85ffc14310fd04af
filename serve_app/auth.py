"""Bearer tokens mapped to users and roles, from a tokens file.

`$GPUQ_HOME/tokens.json`: {"<token>": {"user": "alice", "role": "user"}, ...}; role is
`user` or `admin`. A user submits only as themselves and acts only on their own jobs;
an admin may do anything. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from orchestrator.paths import gpuq_home

ROLES = ("user", "admin")


@dataclass(frozen=True)
class Principal:
    user: str
    role: str

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may_act_for(self, user: str) -> bool:
        return self.admin or self.user == user


def tokens_path() -> Path:
    return Path(os.environ.get("GPUQ_TOKENS") or gpuq_home() / "tokens.json")


def load_tokens(path: Path | None = None) -> dict[str, Principal]:
    path = path or tokens_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {tok: Principal(v["user"], v.get("role", "user")) for tok, v in raw.items() if v.get("role", "user") in ROLES}


def authenticate(header: str | None, tokens: dict[str, Principal]) -> Principal | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    offered = header[7:].strip().encode()
    for token, who in tokens.items():
        if hmac.compare_digest(token.encode(), offered):
            return who
    return None


def ensure_admin_token() -> Path:
    """Create an admin token on first start: written to $GPUQ_HOME/admin.token (mode 600)
    and registered in the tokens file. Returns the token file's path."""
    home = gpuq_home()
    home.mkdir(parents=True, exist_ok=True)
    token_file = home / "admin.token"
    path = tokens_path()
    tokens = json.loads(path.read_text()) if path.exists() else {}
    if token_file.exists():
        token = token_file.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    if token not in tokens:
        tokens[token] = {"user": "admin", "role": "admin"}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(tokens, f, indent=2)
    return token_file

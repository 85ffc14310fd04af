"""Which gpuq cluster a command talks to, and with which token: the user's config file
(`gpuq login` writes it), the environment, and the head's own admin token.

The file is `$XDG_CONFIG_HOME/gpuq/config.toml` (default `~/.config/gpuq/config.toml`),
mode 0600, in a folder of mode 0700, like kubectl's contexts:

    default = "lab"

    [clusters.lab]
    url = "http://gmi-head:8000"
    token = "gpuq_..."
    user = "alice"          # as the API named the token's holder at login

Where a command goes, most specific first:
1. `gpuq --cluster NAME`: that cluster's URL and token, whatever the environment says;
2. `GPUQ_URL` and `GPUQ_TOKEN`, each overriding the file's default cluster;
3. the file's default cluster;
4. `http://127.0.0.1:8000` with `$GPUQ_HOME/admin.token`: the admin token `gpuq up`
   wrote, for the account that ran it.

A token goes only to the URL it was stored with: with `GPUQ_URL` naming another
server, the default cluster's token is not sent there. A token file or config file
that another account owns is never read (root's admin token stays root's, even under
a shared `GPUQ_HOME`), and one that others may read is used with a warning.
Standard library and tomli-w only: every command reads this at start.
"""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.host.paths import gpuq_home

LOCAL_URL = "http://127.0.0.1:8000"


class ConfigError(Exception):
    """The config file cannot be used, or names no such cluster; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where a command goes, with what, and why there (for `gpuq whoami` and errors)."""

    url: str
    token: str | None
    cluster: str | None  # the config's name for it, if it came from there
    url_from: str  # "--cluster", "GPUQ_URL", "the config's default", "the local default"
    token_from: str | None  # "GPUQ_TOKEN", "the config", the admin token file's path


_chosen: str | None = None  # `gpuq --cluster NAME`, set once by main() before a command runs


def choose(name: str | None) -> None:
    global _chosen
    _chosen = name


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpuq" / "config.toml"


def _own_file(path: Path, what: str) -> bytes | None:
    """The file's bytes if this account owns it; None if it is missing or another's."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn(f"cannot read {what} {path} ({e.strerror}); not used")
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            _warn(f"{what} {path} belongs to another account (uid {st.st_uid}); not used")
            return None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            _warn(
                f"{what} {path} may be read by others (mode {stat.S_IMODE(st.st_mode):04o}): its token "
                f"may have been seen; chmod 600 {path}"
            )
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def load() -> dict:
    """The config file as a dict ({} if there is none): {"default": ..., "clusters": {...}}."""
    path = config_path()
    data = _own_file(path, "the gpuq config")
    if data is None:
        return {}
    import tomllib  # here: 3 ms a command without a config (the head's admin) need not pay

    try:
        config = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML ({e}); fix it, or remove it and log in again") from None
    clusters = config.get("clusters", {})
    if not isinstance(clusters, dict) or not all(
        isinstance(c, dict) and isinstance(c.get("url"), str) for c in clusters.values()
    ):
        raise ConfigError(f"{path}: every [clusters.NAME] needs a url; fix it, or gpuq login again")
    return config


def save(config: dict) -> Path:
    """Write the config atomically: a new file of mode 0600 renamed over the old one, in
    a folder of mode 0700, so a token is never readable by others, not even for a moment."""
    import tomli_w

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    temp = path.with_name(f".config.toml.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, tomli_w.dumps(config).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    return path


def admin_token_path() -> Path:
    return gpuq_home() / "admin.token"


def admin_token() -> str | None:
    """The admin token `gpuq up` wrote on this machine, if this account owns it."""
    data = _own_file(admin_token_path(), "the admin token file")
    if not data:
        return None
    return data.decode(errors="replace").strip() or None


def local_token() -> str | None:
    """The token for the cluster this machine runs (`gpuq down`): GPUQ_TOKEN, else this
    account's admin token."""
    return os.environ.get("GPUQ_TOKEN") or admin_token()


def resolve() -> Target:
    """Where this command goes (the precedence in the module's opening)."""
    config = load()
    clusters: dict = config.get("clusters", {})
    if _chosen is not None:
        if _chosen not in clusters:
            known = ", ".join(sorted(clusters)) or "none yet"
            raise ConfigError(
                f"--cluster {_chosen!r}: no such cluster in {config_path()} (known: {known}); "
                f"gpuq login URL --name {_chosen} adds it"
            )
        entry = clusters[_chosen]
        return Target(entry["url"].rstrip("/"), entry.get("token"), _chosen, "--cluster", "the config")
    default = config.get("default")
    entry = clusters.get(default) if isinstance(default, str) else None
    env_url, env_token = os.environ.get("GPUQ_URL"), os.environ.get("GPUQ_TOKEN")
    if env_url:
        url, cluster, url_from = env_url.rstrip("/"), None, "GPUQ_URL"
        # A stored token goes only to its own URL: the cluster stored for this one, if any.
        entry = next((c for c in clusters.values() if _same(c["url"], url)), None)
        cluster = next((n for n, c in clusters.items() if c is entry), None)
    elif entry is not None:
        url, cluster, url_from = entry["url"].rstrip("/"), default, "the config's default"
    else:
        url, cluster, url_from = LOCAL_URL, None, "the local default"
    if env_token:
        return Target(url, env_token, cluster, url_from, "GPUQ_TOKEN")
    if entry is not None and entry.get("token"):
        return Target(url, entry["token"], cluster, url_from, "the config")
    if url_from != "the local default" and not _same(url, LOCAL_URL):
        return Target(url, None, cluster, url_from, None)
    token = admin_token()
    return Target(url, token, cluster, url_from, str(admin_token_path()) if token else None)


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def name_for(url: str) -> str:
    """A cluster's name when `gpuq login` is given none: its host's first label
    (gmi-head.lab.example -> gmi-head), or "local" for this machine."""
    host = urlsplit(url).hostname or "local"
    if host in ("127.0.0.1", "localhost", "::1"):
        return "local"
    return host if host.replace(".", "").isdigit() else host.split(".")[0]

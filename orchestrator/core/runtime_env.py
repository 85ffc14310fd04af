"""A job's Ray runtime environment, as gpuq accepts it: checked at submit, pure.

Ray's runtime environments (https://docs.ray.io/en/latest/ray-core/handling-dependencies.html)
are how a Ray user ships code and dependencies to the nodes: `ray job submit
--working-dir .` zips the directory, uploads it to the cluster (the package routes,
serve_app/routes/packages.py) and names it as `gcs://_ray_pkg_<hash>.zip`. gpuq takes
Ray's format but not Ray's agent, which unpacks and installs as root: the job's
runner fetches its packages as bytes, and a process of the job's own user unpacks them
and makes the virtualenv on the node (node/jobenv.py) while the job is ALLOCATING.

What is accepted, and what becomes of it:
- `working_dir`: a package its user uploaded to this cluster (`gcs://…`). The command
  runs in it, and it is first on PYTHONPATH.
- `py_modules`: packages its user uploaded to this cluster, on PYTHONPATH.
- `pip`, `uv`: requirements installed into a virtualenv per distinct list, first on
  PATH: names with version specifiers only (PEP 508 without direct references), from
  the site's index (`pip_index_url`) only.
- `env_vars`: merged into the job's env (the job's own `env` wins).
- `excludes`: read by the uploader only (gitignore-style patterns); kept for the record.

Refused by name: whatever gpuq cannot honour (`conda`, `container`, `image_uri`, …),
a package anywhere else than this cluster, and a requirement that is a URL, a path or
an option: gpuq fetches nothing for a user from a place the user names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from packaging.requirements import InvalidRequirement, Requirement

from orchestrator.core.packages import stored_uri

if TYPE_CHECKING:  # the site config is only passed through here
    from orchestrator.core.config import Config

# Ray names uploaded packages gcs://_ray_pkg_<hash>.zip (working_dir, py_modules) or
# gcs://<wheel file name> (a py_modules wheel).
PACKAGE_URI = re.compile(r"gcs://[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}\.(zip|whl)")
PACKAGE_HELP = (
    "must be a package uploaded to this cluster (gcs://…): `ray job submit --working-dir DIR` and "
    "`gpuq submit --working-dir DIR` upload one; gpuq fetches nothing from other places"
)
SUPPORTED = ("working_dir", "py_modules", "pip", "uv", "env_vars", "excludes")
REFUSED = {
    "conda": "use pip or uv: gpuq nodes have no conda",
    "container": "gpuq runs commands on the node, not in containers",
    "image_uri": "gpuq runs commands on the node, not in containers",
    "java_jars": "gpuq runs shell commands; ship jars in working_dir",
    "py_executable": "gpuq chooses the interpreter: use pip or uv for a virtualenv",
    "config": "gpuq sets runtime-env timeouts itself (site config runtime_env_setup_timeout_s)",
}
MAX_REQUIREMENTS = 256
MAX_REQUIREMENT_CHARS = 1000
MAX_MODULES = 32
MAX_EXCLUDES = 256
# The parts made on the node before the command starts; env_vars go into its env.
PREPARED = ("working_dir", "py_modules", "pip", "uv")
# pip treats a requirement that ends like an archive as a file to install.
ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz")
REQUIREMENT_HELP = (
    "a requirement is a name with version specifiers (PEP 508), like numpy>=1.26 or "
    "torch[cuda]==2.5.1; gpuq installs only from this site's index, so URLs, paths and "
    "`name @ url` are not accepted"
)
# Ray's client adds its own commit to every runtime env it sends; it means nothing here.
IGNORED = ("_ray_commit",)
# The options Ray's own client fills in when a user gave none: taken as "none given".
RAY_DEFAULT_OPTIONS = {
    "pip_install_options": [["--disable-pip-version-check", "--no-cache-dir"]],
    "uv_pip_install_options": [["--no-cache"]],
}


class RuntimeEnvError(ValueError):
    """`field` is the runtime_env key at fault (runtime_env.pip, …)."""

    def __init__(self, key: str, message: str):
        self.field = f"runtime_env.{key}"
        super().__init__(message)


def check(value: object) -> dict[str, Any] | None:
    """The runtime env in gpuq's normal form (None when empty); raises RuntimeEnvError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RuntimeEnvError("", "must be an object (Ray's runtime_env)")
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in IGNORED:
            continue
        if key in REFUSED:
            raise RuntimeEnvError(key, f"is not supported: {REFUSED[key]}")
        if key not in SUPPORTED:
            raise RuntimeEnvError(key, f"is not supported (gpuq takes {', '.join(SUPPORTED)})")
        if v is None:
            continue
        out[key] = _CHECKS[key](key, v)
    out = {k: v for k, v in out.items() if v not in (None, [], {})}
    return out or None


def _uri(key: str, v: object) -> str:
    if not isinstance(v, str) or not PACKAGE_URI.fullmatch(v):
        raise RuntimeEnvError(key, PACKAGE_HELP)
    return v


def _modules(key: str, v: object) -> list[str]:
    if not isinstance(v, list) or len(v) > MAX_MODULES:
        raise RuntimeEnvError(
            key, f"must be a list of at most {MAX_MODULES} packages uploaded to this cluster"
        )
    return [_uri(key, m) for m in v]


def _requirements(key: str, v: object) -> dict[str, Any]:
    """pip/uv: a list of requirements, or Ray's object form with `packages` (and
    `pip_check`/`uv_check`). Options are gpuq's to set, not the user's."""
    check_key = f"{key}_check"
    if isinstance(v, dict):
        v = {k: x for k, x in v.items() if x not in RAY_DEFAULT_OPTIONS.get(k, [])}
        unknown = sorted(set(v) - {"packages", check_key})
        if unknown:
            raise RuntimeEnvError(
                key,
                f"takes packages and {check_key} only ({', '.join(unknown)}: gpuq sets "
                f"{key}'s version and options)",
            )
        packages, checked = v.get("packages"), v.get(check_key, False)
        if not isinstance(checked, bool):
            raise RuntimeEnvError(key, f"{check_key} must be true or false")
    else:
        packages, checked = v, False
    if not isinstance(packages, list) or not 1 <= len(packages) <= MAX_REQUIREMENTS:
        raise RuntimeEnvError(
            key,
            f"must be a list of 1-{MAX_REQUIREMENTS} requirements (as in requirements.txt) "
            "or an object with `packages`",
        )
    for i, req in enumerate(packages):
        where = f"{key}[{i}]"
        if (
            not isinstance(req, str)
            or not req.strip()
            or len(req) > MAX_REQUIREMENT_CHARS
            or not req.isprintable()
        ):
            raise RuntimeEnvError(
                where, f"each requirement must be printable text of 1-{MAX_REQUIREMENT_CHARS} characters"
            )
        if req.lstrip().startswith("-"):
            raise RuntimeEnvError(
                where, f"{req.split()[0]!r} is an option: options are not accepted, only requirements"
            )
        try:
            parsed = Requirement(req)
        except InvalidRequirement:
            raise RuntimeEnvError(where, f"{req!r} is not a requirement: {REQUIREMENT_HELP}") from None
        if parsed.url or parsed.name.lower().endswith(ARCHIVES):
            raise RuntimeEnvError(where, f"{req!r} names a URL or a file: {REQUIREMENT_HELP}")
    return {"packages": list(dict.fromkeys(packages)), check_key: checked}


def _env_vars(key: str, v: object) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise RuntimeEnvError(key, "must be an object of variable names to string values")
    return dict(v)  # names and sizes are checked with the job's env (JobSpec)


def _excludes(key: str, v: object) -> list[str]:
    if (
        not isinstance(v, list)
        or len(v) > MAX_EXCLUDES
        or not all(isinstance(p, str) and len(p) <= 1000 for p in v)
    ):
        raise RuntimeEnvError(key, f"must be a list of at most {MAX_EXCLUDES} gitignore-style patterns")
    return list(v)


_CHECKS = {
    "working_dir": _uri,
    "py_modules": _modules,
    "pip": _requirements,
    "uv": _requirements,
    "env_vars": _env_vars,
    "excludes": _excludes,
}


def plan(runtime_env: dict[str, Any] | None, owner: str, site: Config) -> dict[str, Any] | None:
    """What the node makes for this env before the command starts (None: nothing): the
    packages, named as they are stored (the owner's, core/packages.py), the pip or uv
    list, and the site's (a Config) settings for making them."""
    if not runtime_env or not any(k in runtime_env for k in PREPARED):
        return None
    out: dict[str, Any] = {
        "packages": [],
        "index_url": site.pip_index_url,
        "python": site.job_python,
        "unpack_limit": site.max_package_unpacked_bytes,
        "timeout": site.runtime_env_setup_timeout_s,
        "keep_s": site.package_keep_s,
    }
    if runtime_env.get("working_dir"):
        uri = runtime_env["working_dir"]
        out["packages"].append({"kind": "working_dir", "uri": uri, "stored": stored_uri(owner, uri)})
    for uri in runtime_env.get("py_modules", []):
        out["packages"].append({"kind": "py_modules", "uri": uri, "stored": stored_uri(owner, uri)})
    for kind in ("pip", "uv"):
        if runtime_env.get(kind):
            out[kind] = runtime_env[kind]
    return out


def packages(runtime_env: dict[str, Any] | None) -> list[str]:
    """The cluster packages (gcs:// URIs) the env names: kept while a job needs them."""
    if not runtime_env:
        return []
    return [u for u in [runtime_env.get("working_dir"), *runtime_env.get("py_modules", [])] if u]

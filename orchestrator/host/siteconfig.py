"""The site config as this host has it: the TOML file, and the folders it leaves unset.

The file is `$GPUQ_CONFIG`, else `$GPUQ_HOME/config.toml` (GPUQ_HOME defaults to
~/.gpuq). A folder the site leaves unset is under GPUQ_HOME, except the jobs' scratch
root in a multi-user install.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from orchestrator.core.config import Config
from orchestrator.core.errors import InvalidSpec
from orchestrator.host.accounts import multi_user
from orchestrator.host.paths import gpuq_home

MULTI_USER_SCRATCH = "/var/lib/gpuq/scratch"


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the site config; raises InvalidSpec naming the bad key and file."""
    path = Path(path or os.environ.get("GPUQ_CONFIG") or gpuq_home() / "config.toml")
    if not path.exists():
        return Config()
    try:
        with path.open("rb") as f:
            return Config.model_validate(tomllib.load(f))
    except tomllib.TOMLDecodeError as e:
        raise InvalidSpec([(str(path), f"is not valid TOML: {e}")]) from None
    except ValidationError as e:
        raise InvalidSpec(
            [(f"{path}: {'.'.join(map(str, err['loc']))}", err["msg"]) for err in e.errors()]
        ) from None


def store_path(site: Config) -> str:
    return site.store_path or str(gpuq_home() / "gpuq.db")


def data_dir(site: Config) -> str:
    return site.data_dir or str(gpuq_home() / "data")


def scratch_dir(site: Config) -> str:
    if site.scratch_dir:
        return site.scratch_dir
    # Under /var/lib, not /tmp: in a folder anyone can write, a user could make the
    # root first, and gpuq would have to refuse to start jobs.
    return MULTI_USER_SCRATCH if multi_user() else str(gpuq_home() / "scratch")

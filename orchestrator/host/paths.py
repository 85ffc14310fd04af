"""Where gpuq keeps its files. Standard library only: the CLI imports this at start-up."""

import os
from pathlib import Path


def gpuq_home() -> Path:
    """$GPUQ_HOME, default ~/.gpuq: config, store, tokens, logs of a local install."""
    return Path(os.environ.get("GPUQ_HOME") or Path.home() / ".gpuq")


def secure_home() -> Path:
    """GPUQ_HOME, created or tightened to 0700: the store, tokens and logs of a local
    install are the service account's alone (jobs run as other accounts)."""
    home = gpuq_home()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    return home

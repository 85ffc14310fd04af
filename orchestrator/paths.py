"""Where gpuq keeps its files. Standard library only: the CLI imports this at start-up."""

import os
from pathlib import Path


def gpuq_home() -> Path:
    """$GPUQ_HOME, default ~/.gpuq: config, store, tokens, logs of a local install."""
    return Path(os.environ.get("GPUQ_HOME") or Path.home() / ".gpuq")

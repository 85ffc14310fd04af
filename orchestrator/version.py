"""Which gpuq this is: a digest of its code and of a site config, as `gpuq up` compares
them with what runs (deploy/rollout.py) and the API replica reports them. Reads the
files on disk, nothing else; any part may import it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
_CODE = ("orchestrator", "serve_app")


def code_version() -> str:
    """A digest of gpuq's code as it is on disk here (every module and web asset)."""
    h = hashlib.sha256()
    for top in _CODE:
        for path in sorted((_ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".js", ".html", ".css"):
                h.update(str(path.relative_to(_ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:12]


def config_version(config: dict | None) -> str:
    return hashlib.sha256(json.dumps(config or {}, sort_keys=True, default=str).encode()).hexdigest()[:12]

"""Sizes as people type them: `64G`, `512M`, `1.5T`, `64GiB`, `2048` (Slurm's --mem:
a bare number of text is MiB). A number in JSON is bytes. Units are powers of 1024,
as Slurm and the kernel's cgroup files count them."""

from __future__ import annotations

import re

_UNIT = {"": 1024**2, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?")


def parse_size(value: str | int) -> int:
    """Bytes in `value`; raises ValueError with the accepted forms."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.fullmatch(str(value).strip().lower()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"{value!r} is not a size; use a unit (512M, 64G, 1.5T) or bytes as a JSON number")
    return int(float(m.group(1)) * _UNIT[m.group(2)])


def format_size(size: float) -> str:
    """Compact human form: 512 MiB, 64 GiB, 1.5 TiB."""
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{int(size)} B"

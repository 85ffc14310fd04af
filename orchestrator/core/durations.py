"""Durations as people type them: `90`, `30s`, `90m`, `4h`, `2d`, `1h30m`, or Slurm's
`MM:SS`, `HH:MM:SS` and `D-HH:MM:SS`. Plain numbers are seconds."""

from __future__ import annotations

import re

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNITS = re.compile(r"(\d+)\s*([smhdw])")
_UNITS_WHOLE = re.compile(r"(\s*\d+\s*[smhdw]\s*)+")
_SLURM = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_duration(text: str | int) -> int:
    """Seconds in `text`; raises ValueError with the accepted forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s.isdigit():
        return int(s)
    if _UNITS_WHOLE.fullmatch(s):
        return sum(int(n) * _UNIT_S[u] for n, u in _UNITS.findall(s))
    m = _SLURM.fullmatch(s)
    if m and (":" in s or "-" in s):
        days, a, b, c = m.groups()
        parts = [int(p) for p in (a, b, c) if p is not None]
        if days is None and len(parts) == 2:  # Slurm reads "MM:SS" without a day part
            parts = [0, *parts]
        parts += [0] * (3 - len(parts))
        h, mnt, sec = parts
        return int(days or 0) * 86400 + h * 3600 + mnt * 60 + sec
    raise ValueError(
        f"{text!r} is not a duration; use seconds (3600), units (90m, 4h, 2d, 1h30m) or D-HH:MM:SS"
    )


def format_duration(seconds: float) -> str:
    """Compact human form: 45s, 12m, 3h05m, 2d04h."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"

"""Per-user fair-share from decayed GPU usage (Slurm's multifactor idea).

Usage is GPU-seconds, decayed with a half-life so that last month's heavy user is
not punished forever. The factor is Slurm's classic 2^(-U/S): U is the user's share
of all recent usage, S the share they are entitled to (equal shares among users).
A user with no recent usage gets 1.0; one who used everything gets close to 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class UsageLedger:
    half_life_s: float = 7 * 86400.0
    _value: dict[str, float] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)

    def add(self, user: str, gpu_seconds: float, now: float) -> None:
        self._value[user] = self.value(user, now) + gpu_seconds
        self._at[user] = now

    def value(self, user: str, now: float) -> float:
        v = self._value.get(user, 0.0)
        if v == 0.0:
            return 0.0
        return v * math.pow(0.5, max(0.0, now - self._at[user]) / self.half_life_s)

    def snapshot(self, now: float) -> dict[str, float]:
        return {u: self.value(u, now) for u in self._value}


def fairshare_factors(usage: Mapping[str, float], users: Iterable[str]) -> dict[str, float]:
    """Factor in (0, 1] per user: 1 = under-served, towards 0 = over-served."""
    users = set(users) | {u for u, v in usage.items() if v > 0}
    total = sum(usage.get(u, 0.0) for u in users)
    if total <= 0 or not users:
        return {u: 1.0 for u in users}
    share = 1.0 / len(users)
    return {u: math.pow(2.0, -(usage.get(u, 0.0) / total) / share) for u in users}

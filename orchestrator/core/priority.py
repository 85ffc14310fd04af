"""A job's priority: the four levels users name, and how their words are read."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    """Four levels, LOW to CRITICAL. The API accepts the number or the name, shows the number."""

    LOW = 1
    NORMAL = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: Any) -> Priority:
        if isinstance(value, bool):
            raise ValueError(_PRIORITY_HELP)
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(_PRIORITY_HELP) from None
        if isinstance(value, str):
            text = value.strip()
            if text.isdigit():
                return cls.parse(int(text))
            try:
                return cls[text.upper()]
            except KeyError:
                pass
        raise ValueError(_PRIORITY_HELP)


_PRIORITY_HELP = "must be 1-4 or one of LOW, NORMAL, HIGH, CRITICAL"

"""Audit rows: who did what to which target, committed with the change they record."""

from __future__ import annotations

from orchestrator.core.rights import Caller


def audit(at: float, by: Caller | None, action: str, target: str, **detail) -> tuple:
    """An audit row. Without `by` the call came straight to the actor, which only the
    service account can do."""
    return (at, by.user if by else "service", action, target, detail)

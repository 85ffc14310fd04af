"""What each user holds on the cluster, against the site's per-user quota: the bytes of
the runtime-env packages they uploaded (max_package_bytes_per_user).

A package stays in Ray's store while a job that is not finished names it, or for
package_keep_s after its upload or last use (uploads.Uploads.keep pins it): it counts
against its owner for as long. Without a quota one user could upload until the head's
GCS ran out of memory. After a restart the audit trail's uploads of the last
package_keep_s are counted again (service.build).
"""

from __future__ import annotations

from orchestrator.core.errors import OverLimit
from orchestrator.core.sizes import format_size


class PackageBytes:
    def __init__(self, quota: int, keep_s: float):
        self.quota, self.keep_s = quota, keep_s
        self._held: dict[str, dict[str, tuple[int, float]]] = {}  # user -> stored name -> (bytes, until)

    def held_by(self, user: str, now: float) -> int:
        mine = self._held.get(user, {})
        for name in [n for n, (_, until) in mine.items() if until < now]:
            del mine[name]
        return sum(size for size, _ in mine.values())

    def admit(self, user: str, stored: str, size: int, now: float) -> None:
        """Refuse (429) an upload that would take `user` past the quota; the same
        package again costs nothing more."""
        if stored in self._held.get(user, {}):
            return
        held = self.held_by(user, now)
        if held + size > self.quota:
            raise OverLimit(
                "max_package_bytes_per_user",
                f"{user} holds {format_size(held)} of packages on the cluster and this one is "
                f"{format_size(size)}; the site allows {format_size(self.quota)} per user "
                "(max_package_bytes_per_user). Packages no job names go "
                f"{self.keep_s / 60:.0f} min after their last use",
                retry_after_s=self.keep_s / 4,
            )

    def add(self, user: str, stored: str, size: int, now: float) -> None:
        self._held.setdefault(user, {})[stored] = (size, now + self.keep_s)

    def kept(self, stored: set[str], now: float) -> None:
        """These packages were pinned again (a job names them)."""
        for mine in self._held.values():
            for name in stored & mine.keys():
                mine[name] = (mine[name][0], now + self.keep_s)

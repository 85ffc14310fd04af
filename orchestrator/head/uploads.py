"""Runtime-env packages users upload (Ray's /api/packages): stored as their uploader's,
checked at submit, kept while a job names them, counted against the uploader's quota.

The bytes are only ever stored and handed to the job's own user on its node
(node/packagestore.py); nothing here opens them beyond a digest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from orchestrator.core import packages, runtime_env
from orchestrator.core.config import Config
from orchestrator.core.errors import GpuqError, InvalidSpec
from orchestrator.core.job import JobSpec
from orchestrator.core.packages import stored_uri
from orchestrator.core.queue import JobQueue
from orchestrator.core.rights import Caller
from orchestrator.head.audit import audit
from orchestrator.head.backends import Backend
from orchestrator.head.journal import Journal
from orchestrator.head.quotas import PackageBytes
from orchestrator.head.tasks import Tasks
from orchestrator.host.accounts import BUILTIN_ADMIN


class Uploads:
    def __init__(
        self,
        *,
        site: Config,
        clock: Callable[[], float],
        queue: JobQueue,
        backend: Backend,
        journal: Journal,
        tasks: Tasks,
        quota: PackageBytes,
    ):
        self.site, self.clock, self.queue, self.backend = site, clock, queue, backend
        self.journal, self.tasks, self.quota = journal, tasks, quota

    async def exists(self, uri: str, by: Caller | None = None) -> bool:
        """Ray's GET /api/packages: whether the caller has this runtime-env package on the
        cluster (each user's packages are their own: core/packages.py)."""
        check_package(uri)
        return await asyncio.to_thread(
            self.backend.package_exists, stored_uri(owner_of(by), uri), self.site.package_keep_s
        )

    async def put(self, uri: str, data: bytes, by: Caller | None = None) -> dict:
        """Ray's PUT /api/packages: store a package, as the caller's, for their jobs to
        name (audited: who uploaded what, its size and digest). Written once: the same
        bytes again are accepted, other bytes under the name are refused (a queued job
        runs what its user uploaded when they submitted it)."""
        self.journal.writable()
        check_package(uri)
        if len(data) > self.site.max_package_bytes:
            raise InvalidSpec(
                [("body", f"is larger than {self.site.max_package_bytes} bytes (max_package_bytes)")]
            )
        stored, digest = stored_uri(owner_of(by), uri), packages.digest(data)
        self.quota.admit(owner_of(by), stored, len(data), self.clock())
        try:
            held = await asyncio.to_thread(self.backend.package_get, stored)
            if held is not None and packages.digest(held) != digest:
                raise InvalidSpec(
                    [
                        (
                            "package",
                            f"{uri} is already on this cluster with other content; a package's "
                            "name stands for its content, so it is not replaced",
                        )
                    ]
                )
            await asyncio.to_thread(self.backend.package_put, stored, data, self.site.package_keep_s)
        except (RuntimeError, ValueError) as e:
            raise GpuqError(f"Ray did not store the package: {e}") from None
        self.quota.add(owner_of(by), stored, len(data), self.clock())
        await self.journal.save(
            [], audit=[audit(self.clock(), by, "package", uri, bytes=len(data), sha256=digest)]
        )
        return {"uri": uri, "bytes": len(data)}

    async def check_exist(self, parsed: JobSpec) -> None:
        """Refuse at submit a job naming a package its user has not uploaded (rather than
        fail it when it starts)."""
        for key in ("working_dir", "py_modules"):
            named = (parsed.runtime_env or {}).get(key)
            for i, uri in enumerate([named] if isinstance(named, str) else named or []):
                if not await asyncio.to_thread(
                    self.backend.package_exists, stored_uri(parsed.user, uri), self.site.package_keep_s
                ):
                    field = key if isinstance(named, str) else f"{key}[{i}]"
                    raise InvalidSpec(
                        [
                            (
                                f"runtime_env.{field}",
                                f"{uri} is not on this cluster for {parsed.user}: "
                                "each user's jobs name packages that user uploaded "
                                "(ray job submit --working-dir uploads it)",
                            )
                        ]
                    )

    def keep(self) -> None:
        """Keep the runtime-env packages that unfinished jobs name (backend.keep_packages)."""
        uris = {
            stored_uri(j.user, u)
            for j in self.queue.jobs()
            if not j.state.is_terminal
            for u in runtime_env.packages(j.spec.runtime_env)
        }
        if uris:
            self.quota.kept(uris, self.clock())
            self.tasks.spawn(asyncio.to_thread(self.backend.keep_packages, uris, self.site.package_keep_s))


def owner_of(by: Caller | None) -> str:
    """Whose namespace a package call is in: the caller's (the service: the built-in admin's)."""
    return by.user if by is not None else BUILTIN_ADMIN


def check_package(uri: str) -> None:
    if not runtime_env.PACKAGE_URI.fullmatch(uri):
        raise InvalidSpec([("package", runtime_env.PACKAGE_HELP)])

"""The orchestrator composed: where its parts are built, from the store, and set going.

It runs as the detached asyncio Ray actor `gpuq-orchestrator` (head/actor.py): every
part runs on one event loop, so the pure core (JobQueue, Inventory) needs no locks.
The parts, each owning its state and handed only the parts it uses:
- journal.Journal: every change on its way to the store (group commit, webhooks);
- loop.SchedulingLoop: plan and apply, on submit, job end and every loop_interval_s;
- launches.Launches: a planned job from its slots to its end;
- watch.GpuWatch: telemetry, health, drains and Ray's nodes;
- requests.Requests, cluster.ClusterRequests: what callers ask of jobs, and of the
  cluster as a whole (the actor's public methods);
- bulk.Bulk, dependents.Dependents, uploads.Uploads, history.Records, idempotency.Keys;
- the backend (backends.Backend: RayBackend, or a test's fake), metrics, notifier.

Order of writes, so that a restart never starts a job twice or loses one:
1. SCHEDULED (with the planned GPUs) is stored before anything is asked of Ray;
2. ALLOCATING is stored before the placement group is created (named after job and
   attempt, so a restart can find or remove it);
3. runners are named after job, attempt and rank, and `start` is idempotent: a
   restart adopts what exists instead of launching again;
4. RUNNING is stored with the GPUs Ray really bound.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.core.accounting import Accounting, Run
from orchestrator.core.config import Config
from orchestrator.core.fairshare import UsageLedger
from orchestrator.core.fleet import Fleet
from orchestrator.core.health import HealthRules
from orchestrator.core.inventory import Inventory
from orchestrator.core.lease import Contacts
from orchestrator.core.packages import stored_uri
from orchestrator.core.policy import PolicyConfig
from orchestrator.core.queue import JobQueue
from orchestrator.head import jobpython
from orchestrator.head.backend import RayBackend
from orchestrator.head.backends import Backend
from orchestrator.head.bulk import Bulk
from orchestrator.head.cluster import ClusterRequests
from orchestrator.head.dependents import Dependents
from orchestrator.head.groupcommit import GroupCommit
from orchestrator.head.history import History, Records
from orchestrator.head.idempotency import Keys
from orchestrator.head.journal import Journal
from orchestrator.head.launches import Launches
from orchestrator.head.loop import SchedulingLoop
from orchestrator.head.metrics import Metrics, ScrapeCollector
from orchestrator.head.notify import Notifier
from orchestrator.head.output import Output
from orchestrator.head.quotas import PackageBytes
from orchestrator.head.requests import Requests
from orchestrator.head.store import Store
from orchestrator.head.tasks import Tasks
from orchestrator.head.uploads import Uploads
from orchestrator.head.views import About
from orchestrator.head.watch import Fences, GpuWatch, NodeLooks
from orchestrator.host import siteconfig
from orchestrator.version import code_version, config_version

log = logging.getLogger("gpuq.orchestrator")


@dataclass
class OrchestratorService:
    """The parts of one orchestrator, as `open` built them. Callers reach it through
    `requests` and `cluster` (the actor forwards its public methods there); tests look
    at the rest."""

    site: Config
    store: Store
    journal: Journal
    queue: JobQueue
    inventory: Inventory
    fleet: Fleet
    records: Records
    accounting: Accounting
    metrics: Metrics
    notifier: Notifier
    tasks: Tasks
    launches: Launches
    watch: GpuWatch
    loop: SchedulingLoop
    uploads: Uploads
    requests: Requests
    cluster: ClusterRequests
    backend: Backend
    cluster_id: str

    @classmethod
    def open(
        cls,
        config: dict | None = None,
        backend: Backend | None = None,
        clock: Callable[[], float] = time.time,
    ) -> OrchestratorService:
        """Build the parts from the site config and the store, and start them. `backend`:
        where jobs run (RayBackend unless a test passes its fake); `clock`: what "now" is
        for every state change and record."""
        service = build(config, backend, clock)
        service.start()
        return service

    def start(self) -> None:
        self.loop.start()
        self.tasks.spawn(self.watch.run())
        self.tasks.spawn(self.watch.run_nodes())
        for task in self.notifier.start():
            self.tasks.track(task)

    def close(self) -> None:
        """Stop every task of this service and close its store (tests restart it in-process)."""
        self.tasks.cancel()
        self.store.close()

    @property
    def durable(self) -> GroupCommit:
        return self.journal.durable


def build(config: dict | None, backend: Backend | None, clock: Callable[[], float]) -> OrchestratorService:
    """The composition root: every part built once, in the order they need each other."""
    site = Config.model_validate(config or {})
    store = Store(siteconfig.store_path(site))
    if store.migrated_from is not None:
        log.warning(
            "job store migrated in place from schema %d to %d (the old file is kept beside it as .bak)",
            store.migrated_from,
            store.schema_version,
        )
    cluster_id = str(store.get("cluster_id") or uuid.uuid4().hex[:12])
    backend = backend or RayBackend(
        siteconfig.data_dir(site),
        cluster_id,
        site.placement_timeout_s,
        site.slot_idle_s,
        site.warm_slots_per_node,
        siteconfig.scratch_dir(site),
    )
    backend.telemetry = site.telemetry
    backend.lease_s = site.node_lease_s
    now = started_at = clock()

    # The nodes Ray reports, and those known before that are not back (the watch shows
    # them down); GPU nodes that join later are added by the watch (watch.look_at_nodes).
    nodes = backend.discover()
    saved_fleet = store.get("fleet")
    known = (saved_fleet or {}).get("nodes", {})
    inventory = Inventory.of({**known, **{n: info.gpus for n, info in nodes.items()}})
    fleet = Fleet(
        inventory,
        HealthRules(site.node_silent_after_s, site.idle_utilization, site.idle_window_s),
        saved_fleet,
    )
    backend.ensure_agents(nodes)

    queue = JobQueue()
    for key, value in (store.get("stats") or {}).items():
        setattr(queue.stats, key, value)
    usage = UsageLedger(site.fairshare_half_life_s)
    accounting = Accounting(Run(*row) for row in store.usage())
    for run in accounting.runs:  # fair-share remembers recent usage across restarts
        if now - run.end < 8 * site.fairshare_half_life_s:
            usage.add(run.user, run.gpu_seconds, run.end)
    quota = PackageBytes(site.max_package_bytes_per_user, site.package_keep_s)
    for up in store.audit(limit=1_000_000, action="package", since=now - site.package_keep_s):
        quota.add(up["who"], stored_uri(up["who"], up["target"]), up["detail"].get("bytes", 0), up["time"])

    # Live jobs and recent history in memory; older history stays in the store (history.py).
    history, cutoff = History(store), now - site.job_memory_s
    jobs, set_aside = store.load(now, ended_since=cutoff)
    queue.restore_history(history.counts_before(cutoff), history.last_seq())
    records = Records(queue, history, cutoff)
    keys = Keys()  # idempotency keys: one key, one job (idempotency.py)
    for bad in set_aside:  # kept in the store's set_aside table; said where an admin looks
        log.error("job %s could not be loaded and was set aside: %s", bad.job_id, bad.error)
        fleet.store_event(
            now,
            bad.job_id,
            f"job record could not be loaded and was set aside (table set_aside): {bad.error}",
        )
    for job in jobs:
        queue.restore(job)
        if job.idempotency_key:
            keys.known(job.user, job.idempotency_key, job.id)

    metrics = Metrics([hook.name for hook in site.webhooks if hook.name])  # every one is named (Config)
    notifier = Notifier.for_site(site, metrics.webhook_dropped_inc, jobs, clock)  # webhooks
    journal = Journal(GroupCommit(store), queue, notifier, clock)
    tasks, looks, fences = Tasks(), NodeLooks(), Fences()
    contacts = Contacts(site.node_lease_s, site.node_fence_margin_s, since=started_at)
    # What every job's environment starts from (it inherits nothing of the service's).
    job_base_env = {
        "PATH": site.job_path,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        **({"TZ": os.environ["TZ"]} if os.environ.get("TZ") else {}),
    }
    # The jobs' Python: a Ray job's `python`, and what runtime-env virtualenvs are made from.
    job_python = jobpython.resolve(site.job_python, site.job_path)
    launches = Launches(
        site=site,
        clock=clock,
        queue=queue,
        inventory=inventory,
        backend=backend,
        journal=journal,
        tasks=tasks,
        metrics=metrics,
        fleet=fleet,
        usage=usage,
        accounting=accounting,
        job_python=job_python,
        job_base_env=job_base_env,
        looks=looks,
        fences=fences,
        contacts=contacts,
    )
    watch = GpuWatch(
        site=site,
        clock=clock,
        queue=queue,
        inventory=inventory,
        fleet=fleet,
        backend=backend,
        journal=journal,
        tasks=tasks,
        metrics=metrics,
        notifier=notifier,
        jobs=launches,
        nodes=nodes,
        looks=looks,
        contacts=contacts,
        fences=fences,
    )
    dependents = Dependents(queue, records, site)
    uploads = Uploads(
        site=site, clock=clock, queue=queue, backend=backend, journal=journal, tasks=tasks, quota=quota
    )
    loop = SchedulingLoop(
        site=site,
        clock=clock,
        queue=queue,
        policy=PolicyConfig.from_site(site),
        inventory=inventory,
        usage=usage,
        dependents=dependents,
        records=records,
        journal=journal,
        launches=launches,
        backend=backend,
        metrics=metrics,
        tasks=tasks,
        watch=watch,
        uploads=uploads,
        notifier=notifier,
        keys=keys,
    )
    about = About(
        cluster_id,
        started_at,
        {"code": code_version(), "config": config_version(config)},
        len(set_aside),
        loop.policy.name.value,
        job_python,
    )
    bulk = Bulk(site=site, clock=clock, queue=queue, journal=journal, jobs=launches, tasks=tasks)
    requests = Requests(
        site=site,
        clock=clock,
        queue=queue,
        inventory=inventory,
        journal=journal,
        tasks=tasks,
        launches=launches,
        loop=loop,
        dependents=dependents,
        bulk=bulk,
        records=records,
        keys=keys,
        uploads=uploads,
        watch=watch,
        output=Output(backend),
        job_python=job_python,
    )
    cluster = ClusterRequests(
        clock=clock,
        queue=queue,
        inventory=inventory,
        fleet=fleet,
        accounting=accounting,
        journal=journal,
        tasks=tasks,
        launches=launches,
        loop=loop,
        watch=watch,
        backend=backend,
        store=store,
        metrics=metrics,
        notifier=notifier,
        about=about,
    )
    metrics.read_from(
        ScrapeCollector(
            clock=clock,
            queue=queue,
            inventory=inventory,
            fleet=fleet,
            journal=journal,
            accounting=accounting,
            running_runs=launches.running_runs,
            loop_running=lambda: loop.running,
            started_at=started_at,
            set_aside=len(set_aside),
            contacts=contacts,
        )
    )
    store.save([], kv={"cluster_id": cluster_id, **({"fleet": fleet.saved()} if set_aside else {})})
    return OrchestratorService(
        site=site,
        store=store,
        journal=journal,
        queue=queue,
        inventory=inventory,
        fleet=fleet,
        records=records,
        accounting=accounting,
        metrics=metrics,
        notifier=notifier,
        tasks=tasks,
        launches=launches,
        watch=watch,
        loop=loop,
        uploads=uploads,
        requests=requests,
        cluster=cluster,
        backend=backend,
        cluster_id=cluster_id,
    )

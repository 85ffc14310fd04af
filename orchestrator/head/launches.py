"""Launching a planned job: its slots from Ray, its command started on them (as its
user, with its runtime env, as a Ray cluster of its own for a Ray job), then watched.

A part of OrchestratorService (service.py), which holds the state these use; split
out so that each file reads on its own. The order of writes that keeps a restart from
starting a job twice is service.py's docstring's.
"""

from __future__ import annotations

import asyncio
import logging

from orchestrator.core import lifecycle, rayjob, runtime_env
from orchestrator.core.accounts import account_for
from orchestrator.core.job import Job
from orchestrator.core.states import JobState
from orchestrator.node.launchspec import LaunchSpec
from orchestrator.node.packagestore import SETUP_FAILED, RuntimeEnvFailed

log = logging.getLogger("gpuq.orchestrator")


class Launches:
    async def launch(self, job: Job, scheduled_stored: asyncio.Future) -> None:
        try:
            await scheduled_stored  # SCHEDULED is durable before anything is asked of Ray
            await self._launch_steps(job)
        except Exception as e:  # never leave a job stuck half-launched
            log.exception("launch of %s failed", job.id)
            attempt = job.attempts + (1 if job.state is JobState.ALLOCATING else 0)
            for name in job.slots.get(attempt, []):
                self.backend.discard(name)
            self.give_back(job)
            if job.state is JobState.SCHEDULED:  # its start was never stored, nothing reached Ray: back in line
                self.carry_out(lifecycle.not_started(self.queue, job, f"not started: {e}", self.clock()))
            else:
                self.carry_out(lifecycle.launch_failed(self.queue, job, str(e), self.clock()))

    async def _launch_steps(self, job: Job) -> None:
        if job.state is not JobState.SCHEDULED:
            return  # cancelled before its launch began; cancel gave its GPUs back
        attempt = job.attempts + 1
        # ALLOCATING is stored together with the slot names, below: a restart before that
        # finds the job SCHEDULED (back in line) and removes any slot no job names.
        self.queue.allocate(job.id, self.clock())
        names: list[str] = []
        for node, gpus in job.allocation.items():
            slot = await self.backend.acquire(node, len(gpus), gpus, self.fleet.out_of_service_on(node))
            if slot is not None:
                names.append(slot.name)
            if slot is None or job.state is not JobState.ALLOCATING:
                for name in names:
                    self.backend.park(name)
                evicted = self.evicting.get(job.id)  # its node went down or its GPUs left service
                self.give_back(job)
                self.carry_out(lifecycle.not_started(self.queue, job, f"{evicted}; back in line", self.clock())
                               if evicted else
                               lifecycle.placement_timed_out(self.queue, job, self.site.placement_timeout_s,
                                                             self.clock()))
                return
        job.slots[attempt] = names
        await self.save([job])  # before anything runs: a restart finds the slots by these names
        if (infos := await self.start_on(names, job, attempt)) is not None:
            await self.adopt(job, attempt, infos)

    async def start_on(self, names: list[str], job: Job, attempt: int) -> list[dict] | None:
        """Run the command as its user's account (accounts.py) in a clean environment, once
        its runtime env is made (the job is ALLOCATING meanwhile); what the runners say, or
        None if the env could not be made (the job failed, the tool's words in its history)."""
        env = {**job.spec.env, "GPUQ_JOB_ID": job.id, "GPUQ_RUN_ID": job.spec.run_id,
               "GPUQ_ATTEMPT": str(attempt), "GPUQ_USER": job.spec.user}
        renv = runtime_env.plan(job.spec.runtime_env, job.user, self.site)
        if renv is not None:
            renv["python"] = self.job_python.path or "python3"
        if job.spec.ray and not self.job_python.ray_ready:  # the site changed since it was accepted
            raise RuntimeError(f"a Ray job needs a Python every user may run: {self.job_python.why_not}")
        ray_job = rayjob.plan(self.site, self.job_python.path) if job.spec.ray else None
        try:
            spec = LaunchSpec(job.id, attempt, job.spec.command, env, job.spec.working_dir, float(job.time_limit),
                              self.site.stop_grace_s, account_for(job.spec.user, self.site.unix_users),
                              self.job_base_env, self.site.job_logs_group_readable, renv, self.limits_of(job))
            infos = await self.backend.start(names, spec, ray_job)
        except RuntimeEnvFailed as e:
            for name in names:  # other ranks may be setting up, or running: their runners go
                self.backend.discard(name)
            self.give_back(job)
            # Its command never ran: `gpuq logs` and `ray job logs` show this (Requests.logs).
            job.note(self.clock(), SETUP_FAILED, f"[gpuq] runtime env setup failed:\n{e}\n")
            self.carry_out(lifecycle.runtime_env_failed(self.queue, job, str(e), self.clock()))
            return None
        for made in (i for i in infos if i.get("setup_s") is not None):
            job.note(self.clock(), "runtime_env", f"runtime env made on {made['node']} in {made['setup_s']:.1f} s, as "
                                                  "its user (not counted in the time limit)")
        return infos

    def limits_of(self, job: Job) -> dict:
        """The job's CPU and memory limits per node, else the site's per GPU (runner.rank_limits)."""
        return {"cpus": job.spec.cpus, "memory": job.spec.memory, "cpus_per_gpu": self.site.default_cpus_per_gpu,
                "memory_per_gpu": self.site.default_memory_per_gpu}

    async def adopt(self, job: Job, attempt: int, infos: list[dict]) -> None:
        """The command runs: record where it really runs, then watch it."""
        actual = {info["node"]: sorted(info["gpus"]) for info in infos}
        head = next((i["ray_head"] for i in infos if i.get("ray_head")), None)
        if head:
            job.ray_head = head
            job.note(self.clock(), "ray", f"a Ray program: its own Ray cluster of {len(infos)} node(s), head {head} on "
                                          f"{infos[0]['node']} (no dashboard); Ray's logs go to ray-logs/ in the "
                                          "job's folder on each node")
        if job.state is JobState.ALLOCATING:
            moved = self.inventory.rebind(job.id, actual)
            for other_id, alloc in moved.items():  # still only planned: their plan follows Ray
                self.queue.get(other_id).allocation = alloc
            self.save([self.queue.start(job.id, min(i["started_at"] for i in infos), actual),
                       *(self.queue.get(o) for o in moved)])
            if job.id in self.evicting:  # its GPUs left service while it was being placed
                self.stop_job(job)
        elif job.state is JobState.CANCELLED:
            self.stop_job(job)
        await self.monitor(job, attempt)

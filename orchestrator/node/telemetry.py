"""GPU telemetry: what each GPU of a node reports, from NVML or from a simulation.

Each node agent (orchestrator/node/agent.py) owns one provider and answers `report()`
with a NodeReport every few seconds. Two providers:
- NvmlProvider: the real thing, through pynvml — utilization, memory, temperature,
  power, volatile ECC counts, and XID events (NVML's critical-XID event set, read
  without blocking on each report);
- SimulatedProvider: for nodes without NVML (laptops, CI, the simulated two-node
  cluster). Its values follow what the jobs on each GPU do: a GPU's utilization is
  the CPU share of the job processes that were given it (CUDA_VISIBLE_DEVICES), so a
  busy job reads busy and a sleeping one reads idle. Faults are injected on demand.
  Every report it makes says `source="simulated"` and why, so it never passes for
  real NVML.

GPU indices are those Ray hands out (CUDA_VISIBLE_DEVICES values). They equal NVML's
indices when the raylet sees every GPU and CUDA enumerates in PCI order, which is why
jobs get CUDA_DEVICE_ORDER=PCI_BUS_ID (orchestrator/head/backend.py).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from orchestrator.core.gpureport import NVML, SIMULATED, GpuSample, NodeReport  # noqa: F401 - the agent's words
from orchestrator.node import procs


class NvmlProvider:
    source = NVML

    def __init__(self, expected_gpus: int):
        with warnings.catch_warnings():  # pynvml 13 warns that it is a shim over nvidia-ml-py
            warnings.simplefilter("ignore")
            import pynvml
        self.nv = pynvml
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        if count < expected_gpus:
            pynvml.nvmlShutdown()
            raise RuntimeError(f"NVML sees {count} GPUs but Ray declares {expected_gpus} on this node")
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(expected_gpus)]
        driver, model = pynvml.nvmlSystemGetDriverVersion(), pynvml.nvmlDeviceGetName(self.handles[0])
        self.detail = f"NVML, driver {_text(driver)}, {_text(model)}"
        self.events = pynvml.nvmlEventSetCreate()
        self.xid_totals: dict[int, dict[int, int]] = {}
        self.xid_capable = set()
        for i, h in enumerate(self.handles):
            try:
                pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, self.events)
                self.xid_capable.add(i)
            except pynvml.NVMLError:
                pass  # not supported on this GPU (consumer parts): no XIDs from it

    def _drain_xids(self) -> None:
        while self.xid_capable:
            try:
                data = self.nv.nvmlEventSetWait_v2(self.events, 0)
            except self.nv.NVMLError:  # NVML_ERROR_TIMEOUT: nothing pending
                break
            totals = self.xid_totals.setdefault(self.nv.nvmlDeviceGetIndex(data.device), {})
            totals[int(data.eventData)] = totals.get(int(data.eventData), 0) + 1

    def sample(self) -> list[GpuSample]:
        nv = self.nv
        self._drain_xids()
        out = []
        for i, h in enumerate(self.handles):
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            out.append(
                GpuSample(
                    index=i,
                    utilization=nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
                    memory_used_bytes=int(mem.used),
                    memory_total_bytes=int(mem.total),
                    temperature_celsius=float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                    power_watts=nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                    ecc_corrected=_ecc(nv, h, nv.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                    ecc_uncorrected=_ecc(nv, h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                    xids=tuple(sorted(self.xid_totals.get(i, {}).items())),
                )
            )
        return out


def _ecc(nv, handle, kind) -> int:
    try:
        return int(nv.nvmlDeviceGetTotalEccErrors(handle, kind, nv.NVML_VOLATILE_ECC))
    except nv.NVMLError:
        return 0  # ECC off or not supported


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# --- the simulation -----------------------------------------------------------------

H100_MEMORY_BYTES = 80 * 1024**3
IDLE_POWER_W, MAX_POWER_W = 70.0, 700.0
IDLE_TEMP_C, MAX_TEMP_C = 31.0, 78.0


@dataclass
class _Faults:
    xids: dict[int, dict[int, int]] = field(default_factory=dict)  # gpu -> xid -> events so far
    ecc_uncorrected: dict[int, int] = field(default_factory=dict)
    utilization: dict[int, float] = field(default_factory=dict)  # pinned values
    silent: bool = False


class SimulatedProvider:
    """Plausible H100 readings derived from the job processes on each GPU."""

    source = SIMULATED

    def __init__(self, node: str, gpus: int, cluster_id: str, why: str):
        self.node, self.gpus, self.cluster_id = node, gpus, cluster_id
        self.detail = f"simulated: {why}"
        self.faults = _Faults()
        self._cpu: dict[int, float] = {}  # pid -> CPU seconds at the previous sample
        self._at = time.monotonic()
        self._ticks = os.sysconf("SC_CLK_TCK")

    def inject(self, fault: str, gpu: int | None = None, value: float | None = None) -> str:
        """xid (value: the XID, default 79), ecc (double-bit errors, default 1),
        utilization (pin a GPU's reading; value None unpins), silent / resume (the node
        stops or resumes reporting)."""
        if fault in ("silent", "resume"):
            self.faults.silent = fault == "silent"
            return f"{fault} injected on {self.node}" + (f":{gpu}" if gpu is not None else "")
        if fault not in ("xid", "ecc", "utilization"):
            raise ValueError("fault must be one of xid, ecc, utilization, silent, resume")
        if gpu is None or not 0 <= gpu < self.gpus:
            raise ValueError(f"gpu must be an index from 0 to {self.gpus - 1} on {self.node}")
        if fault == "xid":
            totals = self.faults.xids.setdefault(gpu, {})
            totals[int(value or 79)] = totals.get(int(value or 79), 0) + 1
        elif fault == "ecc":
            self.faults.ecc_uncorrected[gpu] = self.faults.ecc_uncorrected.get(gpu, 0) + int(value or 1)
        elif fault == "utilization":
            if value is None:
                self.faults.utilization.pop(gpu, None)
            elif not 0 <= value <= 1:
                raise ValueError("value must be a utilization between 0 and 1")
            else:
                self.faults.utilization[gpu] = float(value)
        return f"{fault} injected on {self.node}:{gpu}"

    def _busy(self) -> dict[int, float]:
        """GPU index -> CPU share (0..1) of this cluster's job processes that hold it."""
        now = time.monotonic()
        wall = max(now - self._at, 1e-3)
        self._at = now
        share: dict[int, float] = {}
        seen: dict[int, float] = {}
        for pid, env in procs.tagged(self.cluster_id).items():
            if env.get("GPUQ_NODE") != self.node:
                continue  # simulated nodes may share one machine
            gpus = [int(d) for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip().isdigit()]
            cpu = _cpu_seconds(pid, self._ticks)
            if cpu is None:
                continue
            seen[pid] = cpu
            used = max(0.0, cpu - self._cpu.get(pid, cpu)) / wall
            for g in gpus:
                share[g] = share.get(g, 0.0) + used
        self._cpu = seen
        return {g: min(1.0, s) for g, s in share.items()}

    def sample(self) -> list[GpuSample]:
        busy = self._busy()
        out = []
        for i in range(self.gpus):
            held = i in busy
            util = self.faults.utilization.get(i, busy.get(i, 0.0))
            out.append(
                GpuSample(
                    index=i,
                    utilization=round(util, 3),
                    # A process that holds a GPU holds memory even while it waits.
                    memory_used_bytes=int(H100_MEMORY_BYTES * ((0.25 + 0.5 * util) if held else 0.005)),
                    memory_total_bytes=H100_MEMORY_BYTES,
                    temperature_celsius=round(IDLE_TEMP_C + (MAX_TEMP_C - IDLE_TEMP_C) * util, 1),
                    power_watts=round(IDLE_POWER_W + (MAX_POWER_W - IDLE_POWER_W) * util, 1),
                    ecc_corrected=0,
                    ecc_uncorrected=self.faults.ecc_uncorrected.get(i, 0),
                    xids=tuple(sorted(self.faults.xids.get(i, {}).items())),
                )
            )
        return out


def _cpu_seconds(pid: int, ticks: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def provider_for(node: str, gpus: int, cluster_id: str, mode: str = "auto"):
    """NVML where it works (mode auto or nvml), else the simulation, saying why."""
    if mode == SIMULATED:
        return SimulatedProvider(node, gpus, cluster_id, 'telemetry = "simulated" in the site config')
    try:
        return NvmlProvider(gpus)
    except Exception as e:  # NVMLError_LibraryNotFound, driver not loaded, too few GPUs
        if mode == NVML:
            raise
        return SimulatedProvider(node, gpus, cluster_id, f"NVML is not available ({e})")


def report(provider, node: str) -> NodeReport:
    return NodeReport(node, time.time(), provider.source, provider.detail, tuple(provider.sample()))

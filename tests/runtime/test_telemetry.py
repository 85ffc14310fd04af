"""GPU telemetry providers, without Ray: the simulation reads real processes; the NVML
provider is checked on a stand-in NVML module (no GPU on this machine)."""

import os
import subprocess
import sys
import types

import pytest

from orchestrator.node import telemetry
from orchestrator.node.telemetry import NVML, SIMULATED, NvmlProvider, SimulatedProvider, provider_for
from tests.raycluster import wait_for


def test_without_nvml_the_provider_is_the_simulation_and_says_why():
    p = provider_for("gmi-node-1", 8, "cluster", "auto")
    if p.source == NVML:
        pytest.fail("this test expects a machine without NVML")
    assert p.source == SIMULATED and p.detail.startswith("simulated: NVML is not available")
    report = telemetry.report(p, "gmi-node-1")
    assert report.source == SIMULATED and len(report.gpus) == 8


def test_asking_for_nvml_where_there_is_none_fails_instead_of_simulating():
    with pytest.raises(Exception):  # noqa: B017 - NVML raises a type per thing missing
        provider_for("gmi-node-1", 8, "cluster", "nvml")


def _tagged(command: str, gpus: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "GPUQ_CLUSTER": "c1",
        "GPUQ_NODE": "gmi-node-1",
        "GPUQ_JOB_ID": "j",
        "CUDA_VISIBLE_DEVICES": gpus,
    }
    return subprocess.Popen([sys.executable, "-c", command], env=env)


def test_simulated_utilization_follows_the_job_processes_on_each_gpu():
    busy = _tagged("import time\nt = time.time()\nwhile time.time() - t < 30: pass", "2")
    sleepy = _tagged("import time; time.sleep(30)", "5")
    try:
        p = SimulatedProvider("gmi-node-1", 8, "c1", "test")
        p.sample()

        def readings():
            return {g.index: g for g in p.sample()}

        # Each reading covers the time since the previous one (the poll's interval). Python's
        # own start-up costs CPU: wait for both to settle into their loop and sleep.
        gpus = wait_for(
            lambda: (r := readings())[2].utilization > 0.3 and r[5].utilization < 0.05 and r,
            20,
            0.5,
            what="the busy GPU to read busy and the sleeping one idle",
        )
        assert gpus[5].memory_used_bytes > gpus[0].memory_used_bytes  # held, though idle
        assert gpus[0].utilization == 0.0 and gpus[2].power_watts > gpus[0].power_watts
    finally:
        busy.kill()
        sleepy.kill()


def test_injected_faults_show_once_or_until_cleared():
    p = SimulatedProvider("gmi-node-2", 8, "c1", "test")
    p.inject("xid", 3, 79)
    p.inject("ecc", 4)
    p.inject("utilization", 1, 0.9)
    first = {g.index: g for g in p.sample()}
    assert first[3].xids == ((79, 1),) and first[4].ecc_uncorrected == 1 and first[1].utilization == 0.9
    p.inject("xid", 3, 79)
    second = {g.index: g for g in p.sample()}
    assert second[3].xids == ((79, 2),) and second[4].ecc_uncorrected == 1  # running totals
    p.inject("utilization", 1, None)
    assert {g.index: g for g in p.sample()}[1].utilization == 0.0


@pytest.mark.parametrize(
    ("fault", "gpu", "value"),
    [("xid", None, 79), ("xid", 8, 79), ("utilization", 0, 1.5), ("meteor", 0, None)],
)
def test_bad_faults_are_refused(fault, gpu, value):
    with pytest.raises(ValueError):
        SimulatedProvider("gmi-node-2", 8, "c1", "test").inject(fault, gpu, value)


class _NVMLError(Exception):
    pass


def fake_pynvml(events: list[tuple[int, int]]) -> types.ModuleType:
    """A stand-in for pynvml with two GPUs and some pending XID events."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = _NVMLError
    nv.NVML_TEMPERATURE_GPU, nv.NVML_VOLATILE_ECC = 0, 1
    nv.NVML_MEMORY_ERROR_TYPE_CORRECTED, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
    nv.nvmlEventTypeXidCriticalError = 8
    nv.nvmlInit = lambda: None
    nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 2
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    nv.nvmlDeviceGetIndex = lambda h: int(h[1:])
    nv.nvmlSystemGetDriverVersion = lambda: b"550.54"
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    nv.nvmlEventSetCreate = lambda: "set"
    nv.nvmlDeviceRegisterEvents = lambda h, kind, s: None
    pending = list(events)

    def wait(s, timeout_ms):
        if not pending:
            raise _NVMLError("timeout")
        index, xid = pending.pop(0)
        return types.SimpleNamespace(device=f"h{index}", eventData=xid)

    nv.nvmlEventSetWait_v2 = wait
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=10 * 2**30, total=80 * 2**30)
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87)
    nv.nvmlDeviceGetTemperature = lambda h, kind: 61
    nv.nvmlDeviceGetPowerUsage = lambda h: 512_000  # milliwatts
    nv.nvmlDeviceGetTotalEccErrors = lambda h, kind, counter: 2 if kind == 1 and h == "h1" else 0
    return nv


def test_the_nvml_provider_converts_units_and_counts_xid_events(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([(1, 79), (1, 13)]))
    p = NvmlProvider(2)
    assert p.source == NVML and "550.54" in p.detail and "H100" in p.detail
    gpus = p.sample()
    assert gpus[0].utilization == 0.87 and gpus[0].power_watts == 512.0 and gpus[0].temperature_celsius == 61
    assert gpus[0].memory_total_bytes == 80 * 2**30 and gpus[0].xids == ()
    assert gpus[1].xids == ((13, 1), (79, 1)) and gpus[1].ecc_uncorrected == 2
    assert p.sample()[1].xids == ((13, 1), (79, 1))  # totals: drained events stay counted


def test_the_nvml_provider_refuses_a_node_with_fewer_gpus_than_ray_declares(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([]))
    with pytest.raises(RuntimeError, match="NVML sees 2 GPUs but Ray declares 8"):
        NvmlProvider(8)

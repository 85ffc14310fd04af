"""Builders shared by the pure-core tests (no Ray)."""

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from orchestrator.core.job import JobSpec

# The seed's "Priority Queue Example", time T0: (run id, user, GPUs, priority).
SEED_T0 = [
    ("job-101", "alice", 8, 4),
    ("job-102", "bob", 4, 3),
    ("job-103", "carol", 2, 3),
    ("job-104", "dave", 1, 2),
    ("job-105", "eve", 2, 2),
]


def make_spec(run_id="run", user="alice", gpus=1, priority=2, **extra) -> JobSpec:
    return JobSpec.parse(
        {"run_id": run_id, "user": user, "command": "true", "gpu_count": gpus, "priority": priority, **extra}
    )


class Lab:
    """A JobQueue and an Inventory driven by plan(), with starts applied at once (no Ray).

    Tests use it to read a cycle's decisions the way the orchestrator will apply them."""

    def __init__(self, sizes=None, cfg=None):
        from orchestrator.core.inventory import Inventory
        from orchestrator.core.policy import PolicyConfig
        from orchestrator.core.queue import JobQueue

        self.queue = JobQueue()
        self.inventory = Inventory.of(sizes or {"gmi-node-1": 8, "gmi-node-2": 8})
        self.cfg = cfg or PolicyConfig()
        self.usage: dict[str, float] = {}
        self.reserved: tuple[str, ...] = ()  # carried from cycle to cycle, as the service does

    def submit(self, run_id, user="alice", gpus=1, priority=2, now=0.0, **extra):
        return self.queue.enqueue(make_spec(run_id, user, gpus, priority, **extra), now=now)

    def snapshot(self, now):
        from orchestrator.core.snapshot import snapshot_of

        return snapshot_of(self.queue, self.inventory, now, self.usage, reserved=self.reserved)

    def cycle(self, now, apply=True):
        """One cycle, its decisions carried out at once as the runtime would: through the
        lifecycle, with each victim's processes gone and each start running at `now`."""
        from orchestrator.core import lifecycle
        from orchestrator.core.policy import plan

        decided = plan(self.snapshot(now), now, self.cfg)
        if apply:
            self.reserved = tuple(decided.reservations)
            effects = lifecycle.apply_plan(self.queue, self.inventory, decided, now)
            for victim in effects.stop:
                self.inventory.give_back(victim.id)
                lifecycle.run_ended(self.queue, victim, None, now)
            for job in effects.launch:
                self.queue.allocate(job.id, now)
                self.queue.start(job.id, now)
        return decided

    def finish(self, job, now):
        self.inventory.give_back(job.id)
        self.queue.complete(job.id, now)

    def by_label(self, label):
        return next(j for j in self.queue.jobs() if j.label == label)

    def reason(self, decided, label):
        return decided.pending[self.by_label(label).id]


def write_wheel(
    folder: Path,
    name: str,
    version: str = "1.0",
    code: bytes = b"X = 1\n",
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A pure-Python wheel written by hand (no registry, no build): `name` with `code` as
    its __init__.py, and `extra` files at its top (a .pth, say). For pip runtime envs in
    tests and scripts/bench_runtime_env.py."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": code,
        **(extra or {}),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: gpuq-tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}"
        for n, b in files.items()
    ] + [f"{info}/RECORD,,"]
    with zipfile.ZipFile(path, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def write_index(root: Path, wheels: list[Path]) -> str:
    """A package index in a folder (PEP 503's simple layout, one page per project) serving
    `wheels`, readable by every account; returns its URL for the site's pip_index_url."""
    import os
    import re
    import shutil

    for wheel in wheels:
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, page / wheel.name)
        links = "".join(f'<a href="{w.name}">{w.name}</a>\n' for w in sorted(page.glob("*.whl")))
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for f in files:
            os.chmod(os.path.join(folder, f), 0o644)
    return (root / "simple").as_uri()


class Proxy:
    """A TCP proxy on loopback to `target` (host, port), whose connections a test can cut
    mid-answer, as a network or a restarting API would."""

    def __init__(self, target: tuple[str, int]):
        import socket
        import threading

        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.open: list = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every connection now open (later ones go through)."""
        import socket

        with self.lock:
            cut, self.open = self.open, []
        for s in cut:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.server.close()
        self.cut()


def examples(n: int) -> int:
    """Hypothesis's example count: `n` in the whole suite, a fifth of it in the fast
    tier (HYPOTHESIS_PROFILE=fast, scripts/test --fast)."""
    return max(10, n // 5) if os.environ.get("HYPOTHESIS_PROFILE") == "fast" else n

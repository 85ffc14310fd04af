"""A real Prometheus server for the tests: Debian's `prometheus` on loopback, running
the shipped scrape config and alert rules (dashboards/), pointed at the test API."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import yaml

from tests.raycluster import wait_for

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_config(api_url: str, token_file: Path | None = None) -> dict:
    """The shipped config, scraping the test API every second (and evaluating rules as
    often), with the read-only token in `token_file`."""
    config = yaml.safe_load((DASHBOARDS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(DASHBOARDS / f) for f in config["rule_files"]]
    jobs = [j for j in config["scrape_configs"] if j["job_name"] == "gpuq"]
    jobs[0]["static_configs"] = [{"targets": [api_url.split("://", 1)[1]]}]
    if token_file is not None:
        jobs[0]["authorization"]["credentials_file"] = str(token_file)
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    def __init__(self, api_url: str, workdir: Path):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(
                "prometheus is not installed; scripts/test installs Debian's package (apt-get install "
                "prometheus)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        token_file = workdir / "gpuq.token"
        token_file.write_text("reader-token\n")  # the session API's read-only token (conftest.TEST_TOKENS)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(test_config(api_url, token_file)))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.split('://')[1]}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 60, 0.2, what="Prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}; see {self.log.name}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {body.get('error')}")
        return body["data"]["result"]

    def alerts(self) -> list[dict]:
        return httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

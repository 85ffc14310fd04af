"""Ray runtime environments on gpuq, as Ray users meet them: the unmodified `ray job
submit --working-dir`, JobSubmissionClient, a pip env from the site's index (a folder
index of wheels built here: no registry), a pip env that fails, `gpuq submit
--working-dir`, and the package routes. One orchestrator for the module."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.orchestration import Harness
from tests.raycluster import wait_for
from tests.support import write_index, write_wheel

RAY = str(Path(sys.executable).with_name("ray"))
GPUQ = str(Path(sys.executable).with_name("gpuq"))
ALICE = {"Authorization": "Bearer alice-token"}
CLEAN = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}


@pytest.fixture(scope="module")
def orch(ray_cluster, tmp_path_factory):
    """One orchestrator whose site installs pip envs from a folder index every account can
    read (pytest's own folders are root's alone)."""
    index = Path(tempfile.mkdtemp(prefix="gpuq-index-"))
    wheels = tmp_path_factory.mktemp("wheels")
    url = write_index(index, [write_wheel(wheels, "gpuq_tiny", code=b"WHO = 'the tiny package'\n")])
    harness = Harness(tmp_path_factory.mktemp("renv"), pip_index_url=url)
    yield harness
    harness.teardown()
    shutil.rmtree(index, ignore_errors=True)


@pytest.fixture
def project(tmp_path):
    """A researcher's directory: main.py imports a helper next to it; data/ is ignored."""
    d = tmp_path / "project"
    (d / "data").mkdir(parents=True)
    (d / "helper.py").write_text("import os\n\ndef gpus():\n    return os.environ['CUDA_VISIBLE_DEVICES']\n")
    (d / "main.py").write_text(
        "import os\nimport helper\n"
        "print('helper says', helper.gpus())\n"
        "print('data uploaded:', os.path.exists('data/big.bin'))\n"
    )
    (d / "data" / "big.bin").write_bytes(os.urandom(4096))
    (d / ".gitignore").write_text("data/\n")
    return d


def test_ray_job_submit_with_a_working_dir_runs_the_uploaded_code(api, orch, project):
    r = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            api,
            "--headers",
            json.dumps(ALICE),
            "--working-dir",
            str(project),
            "--",
            "python3",
            "main.py",
        ],
        capture_output=True,
        text=True,
        env=CLEAN,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("helper says "))
    assert line.split()[2].isdigit()  # one GPU, as Ray assigned it
    assert "data uploaded: False" in r.stdout  # .gitignore'd, as Ray's client packs it
    job = orch.call("list_jobs", None, "alice", 1, 0)["jobs"][0]
    assert job["state"] == "completed"
    assert orch.job(job["id"])["spec"]["runtime_env"]["working_dir"].startswith("gcs://_ray_pkg_")


def test_job_submission_client_with_a_working_dir_and_its_exit_code(api, orch, project):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(api, headers=ALICE)
    # Plain commands (not Ray programs): the runtime env alone is what is tested here.
    ok = client.submit_job(
        entrypoint="python3 main.py", runtime_env={"working_dir": str(project)}, metadata={"ray": "false"}
    )
    bad = client.submit_job(
        entrypoint="python3 -c 'import helper; raise SystemExit(5)'",
        runtime_env={"working_dir": str(project)},
        metadata={"max_retries": "0", "ray": "false"},
    )
    wait_for(lambda: client.get_job_status(ok) == JobStatus.SUCCEEDED, 120, what="the job to succeed")
    assert "helper says" in client.get_job_logs(ok)
    wait_for(lambda: client.get_job_status(bad) == JobStatus.FAILED, 120, what="the job to fail")
    assert client.get_job_info(bad).driver_exit_code == 5


def test_a_pip_env_from_the_sites_index_is_importable_in_the_job_and_absent_outside_it(orch):
    check = "python3 -c 'import gpuq_tiny; print(gpuq_tiny.WHO)'"
    inside = orch.submit(check, runtime_env={"pip": ["gpuq-tiny==1.0"]}, max_retries=0, user="alice")
    outside = orch.submit(check, max_retries=0, user="alice")
    job = orch.wait_state(inside, "completed", "failed", timeout=300)
    assert job["state"] == "completed", (job["events"], orch.log(inside))
    assert orch.log(inside) == "the tiny package\n"
    assert any(e["trigger"] == "runtime_env" and "as its user" in e["reason"] for e in job["events"])
    assert orch.wait_state(outside, "completed", "failed")["state"] == "failed"
    assert "No module named 'gpuq_tiny'" in orch.log(outside)


def test_a_ray_jobs_runtime_env_reaches_its_driver_and_its_clusters_workers(orch, project):
    """Ray's semantics: the pip env and the working_dir are the driver's and every
    worker's, in the job's own cluster, made as its user."""
    code = Path(tempfile.mkdtemp(prefix="gpuq-rayenv-"))  # pytest's own folders are root's alone
    os.chmod(code, 0o755)
    shutil.copy(project / "helper.py", code)
    (code / "ray_main.py").write_text(
        "import ray, gpuq_tiny, helper\nray.init()\n"
        "@ray.remote(num_gpus=1)\ndef f():\n    import gpuq_tiny, helper\n    return gpuq_tiny.WHO, "
        "helper.gpus()\n"
        "print('driver', gpuq_tiny.WHO)\nprint('worker', *ray.get(f.remote()))\n"
    )
    job_id = orch.submit(
        "python ray_main.py",
        ray=True,
        working_dir=str(code),
        runtime_env={"pip": ["gpuq-tiny==1.0"]},
        max_retries=0,
        user="alice",
    )
    job = orch.wait_state(job_id, "completed", "failed", timeout=300)
    log = orch.log(job_id)
    assert job["state"] == "completed", (job["events"], log)
    assert "driver the tiny package" in log
    worker = next(line for line in log.splitlines() if line.startswith("worker "))
    assert worker.startswith("worker the tiny package ")
    assert int(worker.split()[-1]) in sum(job["allocation"].values(), [])  # helper.gpus(): the task's one GPU
    shutil.rmtree(code, ignore_errors=True)


def test_a_pip_env_that_cannot_install_fails_the_job_once_with_pips_own_words(orch):
    job_id = orch.submit(
        "echo never", runtime_env={"pip": ["gpuq-missing==1.0"]}, max_retries=2, user="alice"
    )
    job = orch.wait_state(job_id, "failed", "completed", timeout=300)
    assert job["state"] == "failed" and job["attempts"] == 0 and job["retries"] == 0
    assert job["failure_reason"].startswith("runtime env setup failed:")
    assert "gpuq-missing==1.0" in job["failure_reason"]
    log = orch.log(job_id)
    assert "No matching distribution found for gpuq-missing==1.0" in log and "Traceback" not in log
    # The job's GPU is free again, and its runner gone: nothing of it runs on.
    wait_for(lambda: orch.call("status")["details"]["slots"]["busy"] == 0, 30, what="its slot to be let go")


def test_gpuq_submit_with_a_working_dir_uploads_and_runs_in_it(api, orch, project):
    env = {**CLEAN, "GPUQ_URL": api, "GPUQ_TOKEN": "alice-token"}
    r = subprocess.run(
        [
            GPUQ,
            "submit",
            "--working-dir",
            str(project),
            "--runtime-env-json",
            '{"env_vars": {"GREETING": "hi"}}',
            "--wait",
            "--",
            "python3 main.py; echo $GREETING",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    job = orch.call("list_jobs", None, "alice", 1, 0)["jobs"][0]
    log = orch.log(job["id"])
    assert "helper says" in log and "data uploaded: False" in log and log.endswith("hi\n")


def test_package_routes_check_the_token_and_bound_the_size(api, orch):
    name = "_ray_pkg_00000000deadbeef.zip"
    with httpx.Client(base_url=api, timeout=60) as c:
        assert c.get(f"/api/packages/gcs/{name}").status_code == 401
        assert c.put(f"/api/packages/gcs/{name}", content=b"PK").status_code == 401
        assert (
            c.put(
                f"/api/packages/gcs/{name}", content=b"PK", headers={"Authorization": "Bearer reader-token"}
            ).status_code
            == 403
        )
        assert c.get(f"/api/packages/gcs/{name}", headers=ALICE).status_code == 404
        assert c.get("/api/packages/s3/x.zip", headers=ALICE).status_code == 422
        assert (
            c.put(f"/api/packages/gcs/{name}", content=b"PK\x05\x06" + bytes(18), headers=ALICE).status_code
            == 200
        )
        assert c.get(f"/api/packages/gcs/{name}", headers=ALICE).status_code == 200
    # A body declared larger than the site's bound is refused before it is read.
    where = urlsplit(api)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    conn.putrequest("PUT", f"/api/packages/gcs/{name}")
    conn.putheader("Authorization", ALICE["Authorization"])
    conn.putheader("Content-Length", str(10**10))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "max_package_bytes" in r.read().decode()
    conn.close()

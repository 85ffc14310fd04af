"""A job's Ray runtime env as gpuq accepts it (core/runtime_env.py): what is taken, in
what form, and what is refused by name."""

import pytest

from orchestrator.core import runtime_env
from orchestrator.core.errors import InvalidSpec
from orchestrator.core.job import JobSpec

BASE = {"run_id": "r", "user": "alice", "command": "python main.py", "gpu_count": 1}
PACKAGE = "gcs://_ray_pkg_0123456789abcdef.zip"


def parse(renv, **more):
    return JobSpec.parse({**BASE, "runtime_env": renv, **more})


def refused(renv, **more):
    with pytest.raises(InvalidSpec) as e:
        parse(renv, **more)
    return dict(e.value.errors)


def test_what_ray_job_submit_sends_is_taken_in_a_normal_form():
    spec = parse(
        {
            "working_dir": PACKAGE,
            "py_modules": ["gcs://helper-1.0-py3-none-any.whl"],
            "pip": ["numpy==2.1", "numpy==2.1"],
            "uv": {"packages": ["tqdm"], "uv_check": True},
            "env_vars": {"SEED": "1"},
            "excludes": ["data/"],
        }
    )
    assert spec.runtime_env["pip"] == {"packages": ["numpy==2.1"], "pip_check": False}
    assert spec.runtime_env["uv"] == {"packages": ["tqdm"], "uv_check": True}
    assert spec.env == {"SEED": "1"}
    assert runtime_env.packages(spec.runtime_env) == [PACKAGE, "gcs://helper-1.0-py3-none-any.whl"]


def test_what_rays_own_client_adds_is_taken_as_no_choice_of_the_users():
    sent = {
        "uv": {"packages": ["tqdm"], "uv_check": False, "uv_pip_install_options": ["--no-cache"]},
        "pip": {
            "packages": ["x"],
            "pip_check": False,
            "pip_install_options": ["--disable-pip-version-check", "--no-cache-dir"],
        },
        "_ray_commit": "b7f4259e944bf6959f721b106adc366ddfa0c356",
    }
    assert parse(sent).runtime_env == {
        "uv": {"packages": ["tqdm"], "uv_check": False},
        "pip": {"packages": ["x"], "pip_check": False},
    }
    assert "runtime_env.uv" in refused({"uv": {"packages": ["x"], "uv_pip_install_options": ["--pre"]}})


def test_the_node_makes_the_owners_packages_and_the_requirements_with_the_sites_settings():
    from orchestrator.core.config import Config
    from orchestrator.core.packages import stored_uri

    site = Config(pip_index_url="https://pypi.lab.example/simple", job_python="/usr/bin/python3")
    made = runtime_env.plan(
        parse(
            {
                "working_dir": PACKAGE,
                "py_modules": ["gcs://m-1.0-py3-none-any.whl"],
                "pip": ["x==1"],
                "env_vars": {"A": "1"},
            }
        ).runtime_env,
        "alice",
        site,
    )
    assert made["packages"] == [
        {"kind": "working_dir", "uri": PACKAGE, "stored": stored_uri("alice", PACKAGE)},
        {
            "kind": "py_modules",
            "uri": "gcs://m-1.0-py3-none-any.whl",
            "stored": stored_uri("alice", "gcs://m-1.0-py3-none-any.whl"),
        },
    ]
    assert made["pip"] == {"packages": ["x==1"], "pip_check": False}
    assert made["index_url"] == "https://pypi.lab.example/simple" and made["python"] == "/usr/bin/python3"
    assert (
        runtime_env.plan(parse({"env_vars": {"A": "1"}}).runtime_env, "alice", site) is None
    )  # nothing to make
    assert parse({}).runtime_env is None and parse(None).runtime_env is None


def test_owners_names_never_meet():
    from orchestrator.core.packages import stored_uri

    # "a_b" + "c.zip" and "a" + "b_c.zip" would meet without the owner's length in the name.
    assert stored_uri("a_b", "gcs://c.zip") != stored_uri("a", "gcs://b_c.zip")
    assert stored_uri("alice", PACKAGE) != stored_uri("bob", PACKAGE)


@pytest.mark.parametrize(
    "req",
    [
        "numpy",
        "numpy==2.1.0",
        "torch[cuda]>=2.4,<3",
        "tqdm; python_version >= '3.9'",
        "Pillow~=10.0",
        "jax[cpu] == 0.4.30",
    ],
)
def test_a_requirement_is_a_name_with_version_specifiers(req):
    assert parse({"pip": [req]}).runtime_env["pip"]["packages"] == [req]


@pytest.mark.parametrize(
    "req",
    [
        "https://evil.example/x-1.0-py3-none-any.whl",
        "pkg @ https://evil.example/pkg.tar.gz",
        "pkg @ file:///etc/passwd",
        "./local/package",
        "/home/alice/pkg",
        "pkg-1.0-py3-none-any.whl",
        "thing.tar.gz",
        "git+https://github.com/x/y",
        "../up",
    ],
)
def test_a_url_or_a_path_as_a_requirement_is_refused_naming_its_place(req):
    errors = refused({"pip": ["numpy", req]})
    assert "runtime_env.pip[1]" in errors and "site's index" in errors["runtime_env.pip[1]"], errors
    assert "runtime_env.uv[0]" in refused({"uv": [req]})


def test_the_jobs_own_env_wins_over_its_runtime_envs_variables():
    assert parse({"env_vars": {"A": "1", "B": "2"}}, env={"A": "3"}).env == {"A": "3", "B": "2"}


@pytest.mark.parametrize(
    "renv, field, words",
    [
        ({"conda": "env.yaml"}, "runtime_env.conda", "not supported"),
        ({"container": {"image": "x"}}, "runtime_env.container", "not in containers"),
        ({"image_uri": "x"}, "runtime_env.image_uri", "not in containers"),
        ({"nsight": "default"}, "runtime_env.nsight", "gpuq takes working_dir"),
        ({"working_dir": "s3://bucket/code.zip"}, "runtime_env.working_dir", "uploaded to this cluster"),
        ({"working_dir": "https://example.com/code.zip"}, "runtime_env.working_dir", "fetches nothing"),
        ({"working_dir": "/home/alice/code"}, "runtime_env.working_dir", "uploaded to this cluster"),
        ({"py_modules": ["file:///etc"]}, "runtime_env.py_modules", "uploaded to this cluster"),
        ({"pip": ["-r /etc/shadow"]}, "runtime_env.pip[0]", "options are not accepted"),
        ({"pip": ["--index-url=http://evil/ x"]}, "runtime_env.pip[0]", "options are not accepted"),
        (
            {"pip": {"packages": ["x"], "pip_install_options": ["--pre"]}},
            "runtime_env.pip",
            "gpuq sets pip's",
        ),
        ({"pip": []}, "runtime_env.pip", "1-256 requirements"),
        ({"pip": "requirements.txt"}, "runtime_env.pip", "list"),
        ({"env_vars": {"CUDA_VISIBLE_DEVICES": "0"}}, "runtime_env.env_vars", "set by gpuq"),
        ({"env_vars": ["A=1"]}, "runtime_env.env_vars", "object"),
        ("working_dir", "runtime_env.", "must be an object"),
    ],
)
def test_what_gpuq_cannot_honour_is_refused_by_name(renv, field, words):
    errors = refused(renv)
    assert field in errors and words in errors[field], errors


def test_a_working_dir_path_and_a_working_dir_package_do_not_go_together():
    assert "runtime_env.working_dir" in refused({"working_dir": PACKAGE}, working_dir="/tmp")["working_dir"]

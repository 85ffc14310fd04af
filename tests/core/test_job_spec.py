"""Validation of what users submit: every refusal names the field and what is allowed."""

import pytest

from orchestrator.core.config import Config
from orchestrator.core.errors import InvalidSpec
from orchestrator.core.job import JobSpec, format_allocation
from orchestrator.core.priority import Priority

SEED_REQUEST = {
    "run_id": "experiment-1",
    "user": "researcher",
    "command": "python train.py --epochs 100",
    "gpu_count": 4,
    "priority": 3,
}


def spec(**changes):
    return JobSpec.parse({**SEED_REQUEST, **changes})


def refusal(**changes) -> dict[str, str]:
    data = {**SEED_REQUEST, **changes}
    data = {k: v for k, v in data.items() if v is not ...}
    with pytest.raises(InvalidSpec) as exc:
        JobSpec.parse(data)
    return dict(exc.value.errors)


def test_seed_request_is_accepted_as_is():
    s = JobSpec.parse(SEED_REQUEST)
    assert (s.run_id, s.user, s.gpu_count, s.priority) == ("experiment-1", "researcher", 4, Priority.HIGH)
    assert s.model_dump(mode="json")["priority"] == 3


def test_defaults_come_from_the_site_config():
    cfg = Config(default_max_retries=3, default_time_limit_s=7200)
    s = JobSpec.parse(SEED_REQUEST, cfg)
    assert (s.max_retries, s.time_limit) == (3, 7200)
    assert spec().priority is Priority.HIGH
    assert (
        JobSpec.parse({k: v for k, v in SEED_REQUEST.items() if k != "priority"}).priority is Priority.NORMAL
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [(1, Priority.LOW), ("critical", Priority.CRITICAL), ("HIGH", Priority.HIGH), ("2", Priority.NORMAL)],
)
def test_priority_accepts_the_number_or_the_name(given, expected):
    assert spec(priority=given).priority is expected


@pytest.mark.parametrize("bad", [0, 5, 9, "urgent", True, 2.5, None])
def test_priority_outside_the_four_levels_is_refused(bad):
    assert refusal(priority=bad) == {"priority": "must be 1-4 or one of LOW, NORMAL, HIGH, CRITICAL"}


@pytest.mark.parametrize("bad", [0, -1, 17])
def test_gpu_count_must_fit_the_largest_placement(bad):
    assert refusal(gpu_count=bad) == {
        "gpu_count": "must be between 1 and 16 (the cluster's largest placement)"
    }


def test_gpu_count_limit_follows_the_cluster_size():
    cfg = Config(nodes={"a": 8, "b": 8, "c": 4})
    assert JobSpec.parse({**SEED_REQUEST, "gpu_count": 20}, cfg).gpu_count == 20
    with pytest.raises(InvalidSpec, match="between 1 and 20"):
        JobSpec.parse({**SEED_REQUEST, "gpu_count": 21}, cfg)


@pytest.mark.parametrize("bad", ["x", "4", 4.0, True, None])
def test_gpu_count_must_be_a_whole_number(bad):
    assert "gpu_count" in refusal(gpu_count=bad)


@pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
def test_empty_command_is_refused(bad):
    assert refusal(command=bad) == {"command": "must not be empty"}


def test_unknown_fields_are_refused_by_name():
    assert refusal(gpus=4) == {"gpus": "is not a known field"}


def test_missing_required_fields_are_named():
    assert refusal(run_id=..., command=...) == {"run_id": "is required", "command": "is required"}


@pytest.mark.parametrize("bad", ["../etc", "a b", "", "-lead", "x" * 65, "bob;rm", "é"])
def test_run_id_and_user_use_a_safe_charset(bad):
    errors = refusal(run_id=bad, user=bad)
    assert set(errors) == {"run_id", "user"}
    assert "letters, digits" in errors["user"]


@pytest.mark.parametrize("good", ["experiment-1", "a", "run_2.b", "X" * 64])
def test_run_id_allows_names_people_use(good):
    assert spec(run_id=good).run_id == good


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"CUDA_VISIBLE_DEVICES": "0"}, "set by gpuq"),
        ({"GPUQ_JOB_ID": "x"}, "set by gpuq"),
        ({"1BAD": "x"}, "not a valid variable name"),
        ({"A": "x\x00y"}, "without NUL"),
    ],
)
def test_env_refuses_bad_and_reserved_names(env, says):
    assert says in refusal(env=env)["env"]


def test_env_passes_ordinary_variables():
    assert spec(env={"WANDB_PROJECT": "lab", "OMP_NUM_THREADS": "4"}).env["OMP_NUM_THREADS"] == "4"


@pytest.mark.parametrize(("given", "seconds"), [(3600, 3600), ("4h", 14400), ("1-00:00:00", 86400)])
def test_time_limit_takes_seconds_or_text(given, seconds):
    assert spec(time_limit=given).time_limit == seconds


@pytest.mark.parametrize(
    ("bad", "says"),
    [(0, "between 1 and 604800"), ("8d", "between 1 and 604800"), ("soon", "is not a duration")],
)
def test_time_limit_beyond_the_site_maximum_is_refused(bad, says):
    assert says in refusal(time_limit=bad)["time_limit"]


@pytest.mark.parametrize("bad", [-1, 11])
def test_max_retries_is_bounded(bad):
    assert refusal(max_retries=bad) == {"max_retries": "must be between 0 and 10"}


def test_working_dir_must_be_absolute():
    assert refusal(working_dir="data/run") == {"working_dir": "must be an absolute path"}
    assert spec(working_dir="/scratch/alice").working_dir == "/scratch/alice"


def test_several_bad_fields_are_all_reported():
    assert set(refusal(gpu_count=0, priority=9, command="")) == {"gpu_count", "priority", "command"}


def test_allocation_is_written_in_the_seed_notation():
    assert format_allocation({"node-1": [4, 5, 6, 7], "node-2": [0, 1, 2, 3]}) == "node-1:[4-7], node-2:[0-3]"
    assert format_allocation({"gmi-node-2": [0, 2, 3, 7]}) == "gmi-node-2:[0,2-3,7]"

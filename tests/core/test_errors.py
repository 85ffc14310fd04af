"""Errors cross Ray's process boundary (pickling) with their fields intact."""

import pickle

import pytest

from orchestrator.core.errors import DuplicateJob, IllegalTransition, InvalidSpec, JobNotFound


@pytest.mark.parametrize(
    "error",
    [
        InvalidSpec([("gpu_count", "must be between 1 and 16")]),
        IllegalTransition("completed", "cancel", [], "j1"),
        JobNotFound("j9"),
        DuplicateJob("d"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickling(error):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert getattr(again, "errors", None) == getattr(error, "errors", None)

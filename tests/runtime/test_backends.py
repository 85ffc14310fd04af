"""The service's two backends implement one Protocol (head/backends.py), with the
same parameters: the fake the service tests run on cannot drift from the real one. No
Ray is started: only the classes are read."""

import inspect

import pytest

from orchestrator.head.backend import RayBackend
from orchestrator.head.backends import Backend
from tests.runtime.fakes import FakeBackend

METHODS = [name for name, value in vars(Backend).items() if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize("cls", [RayBackend, FakeBackend], ids=["ray", "fake"])
@pytest.mark.parametrize("name", METHODS)
def test_each_backend_has_the_protocols_method_with_its_parameters(cls, name):
    wanted = inspect.signature(getattr(Backend, name))
    have = inspect.signature(getattr(cls, name))
    assert list(have.parameters) == list(wanted.parameters), (
        f"{cls.__name__}.{name}{have} is not {name}{wanted}"
    )
    assert inspect.iscoroutinefunction(getattr(cls, name)) == inspect.iscoroutinefunction(
        getattr(Backend, name)
    )


def test_the_service_asks_its_backend_only_what_the_protocol_says():
    """Every `backend.X` the service's modules use is in the Protocol."""
    import re
    from pathlib import Path

    runtime = Path(__file__).resolve().parents[2] / "orchestrator" / "head"
    used = set()
    for path in runtime.glob("*.py"):
        if path.name not in ("backend.py", "placements.py", "backends.py"):
            used |= set(re.findall(r"\bbackend\.([a-z_]+)", path.read_text()))
    known = set(METHODS) | {"slots", "agents", "telemetry", "lease_s"}
    assert used - {"py"} <= known, sorted(used - known - {"py"})


def test_the_fake_is_a_backend_with_its_attributes():
    assert isinstance(FakeBackend(lambda: 0.0), Backend)

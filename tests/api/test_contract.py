"""The OpenAPI spec is the whole contract: schemathesis generates requests for every
operation in it (both submit endpoints and the admin ones included) and checks each
answer against the spec: no server error, every status and body as declared, and no
traceback.

It is made safe rather than narrowed: the orchestrator behind the API runs with
`start_jobs = false`, so the commands the fuzzer submits are queued and never run."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from serve_app.api import app
from tests.noleaks import MARKS

ADMIN = {"Authorization": "Bearer admin-token"}
EXAMPLES = 12  # per operation: ~30 operations in about a minute on 2 cores

schema = schemathesis.openapi.from_dict(app.openapi())


@pytest.fixture(scope="module")
def fuzzed_api(api, ray_cluster, tmp_path_factory):
    from tests.orchestration import Harness

    harness = Harness(tmp_path_factory.mktemp("contract"), start_jobs=False)
    yield api
    assert not [j for j in harness.call("list_jobs", "running", None, 10, 0)["jobs"]], "a fuzzed job ran"
    harness.teardown()


@schemathesis.check
def no_traceback(ctx, response, case):
    found = [m for m in MARKS if m in response.text]
    if found:
        raise AssertionError(f"the answer shows a traceback ({', '.join(found)})")


# What the spec promises. Not "every schema-valid request is accepted": some limits
# are the site's and the cluster's (the largest placement, who has a Unix account),
# known only at run time, and answered 422 naming the field. Nor "every request the
# generator thinks invalid is refused": HTTP trims header values and JSON joins two
# lone surrogates into one character, so a generated violation can arrive valid.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    no_traceback,
]


@schema.parametrize()
# Derandomized: the same examples on every run, so CI is not a lottery; they change
# when the spec does.
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_keeps_its_contract(case, fuzzed_api):
    case.call_and_validate(base_url=fuzzed_api, headers=ADMIN, checks=CHECKS)


def test_the_served_spec_is_the_apps(fuzzed_api):
    import httpx

    assert httpx.get(f"{fuzzed_api}/openapi.json").json() == app.openapi()

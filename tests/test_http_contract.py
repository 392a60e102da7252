"""The OpenAPI document (stashd/http/openapi.yaml) against the live sidecar: schemathesis finds no 5xx and no schema break."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings

from tests.support.servers import StashDaemon

SPEC = Path(__file__).resolve().parent.parent / "stashd" / "http" / "openapi.yaml"
schema = schemathesis.openapi.from_path(SPEC)
# A schema-valid request can still be refused for the state it meets: If-Match names
# another version (412), or an extension would pass the maximum TTL (422). Both are
# documented answers; what must never come is a 5xx or an undocumented response.
schema.config.checks.positive_data_acceptance.expected_statuses = [
    "2xx",
    "401",
    "404",
    "409",
    "412",
    "422",
    "429",
]


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """A daemon of its own, so generated data stays out of other tests' namespaces."""
    with StashDaemon() as d:
        yield d


# GET /watch streams until the client leaves, which a generated call never does: it is
# checked by tests/test_watch.py with a client that reads events and goes.
@schema.exclude(operation_id="watch").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: schemathesis.Case[Any], daemon: StashDaemon) -> None:
    """Generated and mutated requests to every operation get documented, valid answers."""
    case.call_and_validate(base_url=daemon.http_url)


def test_workflows_through_links(daemon: StashDaemon) -> None:
    """Stash, then recall, update and forget the new id (the spec's links), all conforming."""
    machine = schema.exclude(operation_id="watch").as_state_machine()

    class Workflow(machine):  # type: ignore[valid-type,misc]
        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"base_url": daemon.http_url}

        def teardown(self) -> None:
            # A claimed lease would refuse the same claim when hypothesis replays a run:
            # each run starts from an empty namespace, so replays meet the same state.
            with redis.Redis(port=daemon.port) as client:
                client.flushdb()

    Workflow.run(
        settings=settings(
            max_examples=15,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )

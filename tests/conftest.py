"""Shared fixtures: a stashd and a redis-server for the whole session, and factories."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import RedisServer, StashDaemon


@pytest.fixture(scope="session", params=["sqlite", "memory"])
def stashd_server(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """A daemon per backend, shared by tests that work in a namespace of their own."""
    with StashDaemon("--backend", request.param) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, for comparing replies."""
    with RedisServer() as server:
        yield server

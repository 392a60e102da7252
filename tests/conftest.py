"""Shared fixtures: a stashd and a redis-server for the whole session, and factories."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import RedisServer, StashDaemon


@pytest.fixture(scope="session")
def stashd_server() -> Iterator[StashDaemon]:
    """One memory-backend daemon shared by tests that clean up their own namespace."""
    with StashDaemon() as daemon:
        yield daemon


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, for comparing replies."""
    with RedisServer() as server:
        yield server

"""Shared fixtures: a stashd and a redis-server for the whole session, and factories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.backends import Backend, open_backend, server_url
from tests.support.clock import Clock
from tests.support.door import T0
from tests.support.servers import RedisClusterServers, RedisServer, StashDaemon


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


@pytest.fixture(scope="session")
def redis_store() -> Iterator[RedisServer]:
    """A redis-server for the Redis backend's tests, flushed by each test that uses it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def server(redis_store: RedisServer) -> RedisServer:
    """The Redis backend's redis-server, flushed for this test."""
    redis_store.flush()
    return redis_store


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client of that server, to look at what the store wrote."""
    client = redis.Redis(port=server.port, protocol=2)
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A three-master Redis Cluster started for the session (a few seconds to set up)."""
    with RedisClusterServers() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store, opened at T0 on a clock the test moves: the per-kind suites' backend.

    A module that runs on other backends (the store contract, transactions) has its own.
    """
    opened = open_backend(request.param, Clock(T0), tmp_path, server_url(request, request.param))
    yield opened
    opened.close()

"""redis-benchmark's default test list runs to its end against stashd, as against Redis.

redis-benchmark stops at the first error reply, so every command of its default list
must be served; the tests it reports must be the ones it reports for redis-server.
Nothing here is timed: the figures are bench/default_run.py's.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from bench.run import parse_csv
from tests.support.servers import RedisServer, StashDaemon

pytestmark = pytest.mark.skipif(
    shutil.which("redis-benchmark") is None, reason="redis-benchmark comes with redis-server"
)


def _default_run(port: int) -> tuple[dict[str, float], str]:
    """A short default run: requests per second by test, and what it printed."""
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", "300", "-c", "5"]
    # Not checked: a run that stopped is told by the tests it did not report.
    done = subprocess.run(
        [*args, "--csv"], check=False, capture_output=True, text=True, timeout=300
    )
    return parse_csv(done.stdout), done.stdout + done.stderr


@pytest.fixture(scope="module")
def redis_tests() -> Iterator[list[str]]:
    with RedisServer() as server:
        found, _ = _default_run(server.port)
        yield list(found)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_the_default_run_reaches_its_end(backend: str, redis_tests: list[str]) -> None:
    """Every test of the default list reports a rate, with no error printed."""
    with StashDaemon("--backend", backend) as daemon:
        found, printed = _default_run(daemon.port)
    assert "ERR" not in printed, printed[-500:]
    assert list(found) == redis_tests
    assert len(redis_tests) >= 20  # PING ... MSET: the list itself was read
    assert all(rps > 0 for rps in found.values())

"""Conformance transcripts (protocol/cases) against stashd, and the standard ones against redis-server.

Format (see protocol/cases/README.md and tests/support/transcript.py): ``> command``
lines send a request; the lines after it are the expected reply rendered as text,
optionally prefixed with a target (``stash:``, ``redis:``) and/or a protocol
(``resp2:``, ``resp3:``) when they differ.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import transcript
from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon
from tests.support.transcript import Transcript

CASES = Path(__file__).resolve().parent.parent / "protocol" / "cases"


def parse(path: Path) -> Transcript:
    """Read one case file."""
    return transcript.parse(path.read_text().splitlines(), path.name)


def run_case(case: Transcript, port: int, target: str, proto: str) -> None:
    """Run every step on a fresh, flushed connection; fail with command, expected, actual."""
    client = RespClient(port)
    if proto == "resp3":
        assert client.call("HELLO", "3").kind == "%"
    assert client.call("FLUSHALL").render() == "+OK"
    try:
        transcript.run(case, client, target, proto)
    finally:
        client.close()


def _cases() -> list[Transcript]:
    return [parse(p) for p in sorted(CASES.glob("*.case"))]


@pytest.fixture(scope="module", params=["sqlite", "memory", "redis"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """The daemon on each backend: the transcripts must not tell them apart."""
    extra: tuple[str, ...] = ()
    if request.param == "redis":
        extra = ("--redis-url", request.getfixturevalue("redis_store").url)
    with StashDaemon("--backend", request.param, *extra) as d:
        yield d


@pytest.fixture(scope="module")
def redis() -> object:
    with RedisServer() as r:
        yield r


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.name.removesuffix(".case"))
def test_case_against_stashd(case: Transcript, proto: str, daemon: StashDaemon) -> None:
    """Every case gives the expected replies on stashd."""
    run_case(case, daemon.port, "stash", proto)


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize(
    "case", [c for c in _cases() if c.standard], ids=lambda c: c.name.removesuffix(".case")
)
def test_standard_case_against_redis(case: Transcript, proto: str, redis: RedisServer) -> None:
    """Cases of standard commands give the same expected replies on a real redis-server."""
    run_case(case, redis.port, "redis", proto)


def test_there_are_cases() -> None:
    """The conformance suite is not silently empty."""
    cases = _cases()
    assert len(cases) >= 4
    assert any(c.standard for c in cases)

"""Conformance transcripts (protocol/cases) against stashd, and the standard ones against redis-server.

Format (see protocol/cases/README.md): ``> command`` lines send a request; the lines
after it are the expected reply rendered as text, optionally prefixed with a target
(``stash:``, ``redis:``) and/or a protocol (``resp2:``, ``resp3:``) when they differ.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon

CASES = Path(__file__).resolve().parent.parent / "protocol" / "cases"


@dataclass
class Step:
    """One request and its expectations by (target, protocol)."""

    command: str
    expect: list[tuple[str, str, str]] = field(default_factory=list)  # (target, proto, text)

    def expected(self, target: str, proto: str) -> str | None:
        for t, p, text in self.expect:
            if t in ("", target) and p in ("", proto):
                return text
        return None


@dataclass
class Case:
    """A transcript file."""

    path: Path
    standard: bool
    steps: list[Step]


def parse(path: Path) -> Case:
    """Read one case file."""
    steps: list[Step] = []
    standard = False
    for raw in path.read_text().splitlines():
        line = raw.rstrip("\r\n")  # trailing spaces matter: Redis ends some errors with one
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("@"):
            standard = line[1:].strip() == "standard"
        elif line.startswith("> "):
            steps.append(Step(line[2:].strip()))
        else:
            target = proto = ""
            while True:
                m = re.match(r"(stash|redis|resp2|resp3):\s*", line)
                if not m:
                    break
                if m.group(1) in ("stash", "redis"):
                    target = m.group(1)
                else:
                    proto = m.group(1)
                line = line[m.end() :]
            steps[-1].expect.append((target, proto, line))
    return Case(path, standard, steps)


def matches(expected: str, actual: str, saved: dict[str, str], actual_value: object) -> bool:
    """Compare a rendered reply with an expectation (exact, ~range, re:, or ?capture)."""
    if expected.startswith("?"):
        name, _, rest = expected[1:].partition(" ")
        if rest and not matches(rest, actual, saved, actual_value):
            return False
        saved[name] = (
            actual_value.decode() if isinstance(actual_value, bytes) else str(actual_value)
        )
        return True
    if expected.startswith(":~"):
        low, _, high = expected[2:].partition("..")
        return actual.startswith(":") and int(low) <= int(actual[1:]) <= int(high)
    if expected.startswith("re:"):
        return re.fullmatch(expected[3:], actual) is not None
    return expected == actual


def run_case(case: Case, port: int, target: str, proto: str) -> None:
    """Run every step on a fresh, flushed connection; fail with command, expected, actual."""
    client = RespClient(port)
    if proto == "resp3":
        assert client.call("HELLO", "3").kind == "%"
    assert client.call("FLUSHALL").render() == "+OK"
    saved: dict[str, str] = {}
    try:
        for step in case.steps:
            words = [
                saved.get(w[1:], w) if w.startswith("$") else w for w in shlex.split(step.command)
            ]
            reply = client.call(*words)
            expected = step.expected(target, proto)
            if expected is None:
                continue
            actual = reply.render()
            assert matches(expected, actual, saved, reply.value), (
                f"{case.path.name} [{target} {proto}]\n  > {step.command}\n"
                f"  expected {expected}\n  actual   {actual}"
            )
    finally:
        client.close()


def _cases() -> list[Case]:
    return [parse(p) for p in sorted(CASES.glob("*.case"))]


@pytest.fixture(scope="module", params=["sqlite", "memory"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """The daemon on each backend: the transcripts must not tell them apart."""
    with StashDaemon("--backend", request.param) as d:
        yield d


@pytest.fixture(scope="module")
def redis() -> object:
    with RedisServer() as r:
        yield r


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.path.stem)
def test_case_against_stashd(case: Case, proto: str, daemon: StashDaemon) -> None:
    """Every case gives the expected replies on stashd."""
    run_case(case, daemon.port, "stash", proto)


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize("case", [c for c in _cases() if c.standard], ids=lambda c: c.path.stem)
def test_standard_case_against_redis(case: Case, proto: str, redis: RedisServer) -> None:
    """Cases of standard commands give the same expected replies on a real redis-server."""
    run_case(case, redis.port, "redis", proto)


def test_there_are_cases() -> None:
    """The conformance suite is not silently empty."""
    cases = _cases()
    assert len(cases) >= 4
    assert any(c.standard for c in cases)

"""Transcripts: requests and their expected replies as text, read and run over a real socket.

One format serves the conformance cases (protocol/cases/*.case) and the examples in
protocol/SPEC.md; protocol/cases/README.md describes it. ``> command`` lines send a
request; the lines after it are the expected reply rendered as text, optionally prefixed
with a target (``stash:``, ``redis:``) and/or a protocol (``resp2:``, ``resp3:``) when
they differ.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tests.support.resp_client import RespClient

_PREFIX = re.compile(r"(stash|redis|resp2|resp3):\s*")


@dataclass
class Step:
    """One request and its expectations by (target, protocol)."""

    command: str
    expect: list[tuple[str, str, str]] = field(default_factory=list)  # (target, proto, text)

    def expected(self, target: str, proto: str) -> str | None:
        """The expectation that applies to this target and protocol, if any."""
        for t, p, text in self.expect:
            if t in ("", target) and p in ("", proto):
                return text
        return None

    def words(self, saved: dict[str, str]) -> list[str]:
        """The request's arguments, split like a shell, with ``$name`` captures filled in."""
        return [saved.get(w[1:], w) if w.startswith("$") else w for w in shlex.split(self.command)]


@dataclass
class Transcript:
    """A sequence of steps; ``standard`` ones also run against a real redis-server."""

    name: str
    standard: bool
    steps: list[Step]


def parse(lines: Iterable[str], name: str) -> Transcript:
    """Read a transcript from its lines (comments start with ``#``, ``@ standard`` marks it)."""
    steps: list[Step] = []
    standard = False
    for raw in lines:
        line = raw.rstrip("\r\n")  # trailing spaces matter: Redis ends some errors with one
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("@"):
            standard = line[1:].strip() == "standard"
        elif line.startswith("> "):
            steps.append(Step(line[2:].strip()))
        else:
            if not steps:
                msg = f"{name}: an expectation before any request: {line!r}"
                raise ValueError(msg)
            target = proto = ""
            while m := _PREFIX.match(line):
                if m.group(1) in ("stash", "redis"):
                    target = m.group(1)
                else:
                    proto = m.group(1)
                line = line[m.end() :]
            steps[-1].expect.append((target, proto, line))
    return Transcript(name, standard, steps)


def matches(expected: str, actual: str, saved: dict[str, str], actual_value: object) -> bool:
    """Compare a rendered reply with an expectation (exact, ~range, re:, like:, anyorder:, ?capture)."""
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
    if expected.startswith("anyorder:"):
        # An array or set whose items may come in any order (a set's members): its
        # items' renderings, sorted, must read as the expectation, written sorted.
        if not isinstance(actual_value, list):
            return expected[9:] == actual
        items = sorted(item.render() for item in actual_value)
        return expected[9:] == "[" + ", ".join(items) + "]"
    if expected.startswith("like:"):
        # Literal text in which each "..." stands for any run of characters.
        pattern = ".*?".join(re.escape(part) for part in expected[5:].split("..."))
        return re.fullmatch(pattern, actual, re.DOTALL) is not None
    return expected == actual


def run(transcript: Transcript, client: RespClient, target: str, proto: str) -> None:
    """Send every step on ``client``; fail with the request, the expectation and the reply."""
    saved: dict[str, str] = {}
    for step in transcript.steps:
        reply = client.call(*step.words(saved))
        expected = step.expected(target, proto)
        if expected is None:
            continue
        actual = reply.render()
        assert matches(expected, actual, saved, reply.value), (
            f"{transcript.name} [{target} {proto}]\n  > {step.command}\n"
            f"  expected {expected}\n  actual   {actual}"
        )

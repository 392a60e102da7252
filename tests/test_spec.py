"""protocol/SPEC.md documents every command in the table, and its examples hold on stashd and Redis.

Each command and subcommand has a section in the chapter of its group: the syntax line
and summary that COMMAND DOCS also reports, a ``Reply:`` paragraph, an ``Errors:``
paragraph and an ``Example:`` with at least one transcript (the format of
protocol/cases). Every example runs on one stashd for the whole module, in a fresh
namespace each time and in both protocols; examples marked ``@ standard`` also run on a
real redis-server.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stashd.commands import TABLE
from stashd.commands.base import Command
from tests.support import transcript
from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon
from tests.support.transcript import Transcript

SPEC = Path(__file__).resolve().parent.parent / "protocol" / "SPEC.md"

# The chapter that documents each command group; other chapters (the wire, errors,
# differences, and whatever else the document grows) are not command sections.
CHAPTERS = {
    "stash": "Stash commands",
    "connection": "Connection",
    "string": "Strings",
    "bitmap": "Bitmaps",
    "generic": "Keys",
    "hash": "Hashes",
    "list": "Lists",
    "set": "Sets",
    "sorted-set": "Sorted sets",
    "transactions": "Transactions",
    "scripting": "Scripting",
    "pubsub": "Pub/sub",
    "server": "Server",
}
_HEADING = re.compile(r"(#{2,4}) (\S.*)")


@dataclass
class Section:
    """One command's section: its heading and the lines up to the next heading."""

    title: str
    chapter: str
    level: int
    line: int
    lines: list[str] = field(default_factory=list)

    def paragraphs(self) -> list[str]:
        """The prose outside fenced blocks, one string per paragraph."""
        paragraphs: list[str] = []
        current: list[str] = []
        fenced = False
        for line in self.lines:
            if line.startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                continue
            if line.strip():
                current.append(line.strip())
            elif current:
                paragraphs.append(" ".join(current))
                current = []
        if current:
            paragraphs.append(" ".join(current))
        return paragraphs

    def examples(self) -> list[Transcript]:
        """Every fenced block, read as a transcript."""
        blocks: list[list[str]] = []
        fenced = False
        for line in self.lines:
            if line.startswith("```"):
                fenced = not fenced
                if fenced:
                    blocks.append([])
            elif fenced:
                blocks[-1].append(line)
        return [
            transcript.parse(block, f"SPEC.md {self.title} example {i} (line {self.line})")
            for i, block in enumerate(blocks, 1)
        ]


def title_of(cmd: Command) -> str:
    """The heading of a command's section: ``SET``, or ``CLIENT SETNAME`` for a subcommand."""
    return cmd.name.replace("|", " ").upper()


def rows() -> Iterator[tuple[Command, Command | None]]:
    """Every command and subcommand, with its container (None for a top-level command)."""
    for cmd in TABLE.values():
        yield cmd, None
        for sub in cmd.subcommands:
            yield sub, cmd


def read_sections() -> list[Section]:
    """The command sections of SPEC.md, in document order."""
    sections: list[Section] = []
    chapter = ""
    current: Section | None = None
    fenced = False
    for number, line in enumerate(SPEC.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        heading = None if fenced else _HEADING.fullmatch(line)
        if heading is not None:
            level, title = len(heading.group(1)), heading.group(2).strip()
            current = None
            if level == 2:
                chapter = title
            elif chapter in CHAPTERS.values():
                current = Section(title, chapter, level, number)
                sections.append(current)
            continue
        if current is not None:
            current.lines.append(line)
    return sections


SECTIONS = read_sections()
BY_TITLE = {s.title: s for s in SECTIONS}
EXAMPLES = [(section, example) for section in SECTIONS for example in section.examples()]


def _ids(examples: list[tuple[Section, Transcript]]) -> list[str]:
    return [f"{s.title}-{e.name.split(' example ')[1].split(' ')[0]}" for s, e in examples]


def test_the_document_is_read() -> None:
    """The parser finds the sections and examples, so the checks below are not vacuous."""
    assert len(SECTIONS) >= len(TABLE)
    assert len(EXAMPLES) >= len(SECTIONS)
    assert sum(example.standard for _, example in EXAMPLES) >= len(TABLE) // 2


@pytest.mark.parametrize(("cmd", "container"), list(rows()), ids=[c.name for c, _ in rows()])
def test_every_command_has_a_complete_section(cmd: Command, container: Command | None) -> None:
    """Syntax and summary as COMMAND DOCS gives them, then Reply, Errors and an Example."""
    title = title_of(cmd)
    section = BY_TITLE.get(title)
    assert section is not None, f"SPEC.md has no section '{title}'"
    group = container.group if container is not None else cmd.group
    assert section.chapter == CHAPTERS[group], f"{title} belongs under '## {CHAPTERS[group]}'"
    assert section.level == (4 if container is not None else 3), f"{title}: heading level"
    paragraphs = section.paragraphs()
    assert paragraphs[:2] == [f"`{cmd.syntax}`", cmd.summary], (
        f"{title}: the section must open with its syntax line and summary, as in the table"
    )
    for label in ("Reply:", "Errors:", "Example:"):
        assert any(p.startswith(label) for p in paragraphs), f"{title}: no '{label}' paragraph"
    examples = section.examples()
    assert examples, f"{title}: 'Example:' needs a fenced transcript"
    words = title.split()
    assert any(
        [w.upper() for w in step.command.split()[: len(words)]] == words
        for example in examples
        for step in example.steps
    ), f"{title}: no example sends {title}"


def test_no_section_documents_a_command_that_does_not_exist() -> None:
    """Every heading in a command chapter names a command, subcommands under their container."""
    known = {title_of(cmd): container for cmd, container in rows()}
    container_title = ""
    for section in SECTIONS:
        assert section.title in known, f"SPEC.md line {section.line}: no command {section.title}"
        container = known[section.title]
        if section.level == 3:
            container_title = section.title
        else:
            assert container is not None, f"{section.title} is a command, not a subcommand"
            assert title_of(container) == container_title, f"{section.title} is misplaced"
    assert len({s.title for s in SECTIONS}) == len(SECTIONS), "a command is documented twice"


def listed_errors(paragraphs: list[str]) -> list[re.Pattern[str]]:
    """The error replies listed in some prose, as patterns.

    A listed error is a backticked text starting with ``-``; in it a lone capital letter
    (``T``, ``M``), ``<message>`` and ``...`` stand for the parts that vary.
    """
    patterns = []
    for text in re.findall(r"`(-[^`]+)`", " ".join(paragraphs)):
        parts = re.split(r"\b[A-Z]\b|<[a-z ]+>|\.\.\.", text)
        patterns.append(re.compile(".*?".join(re.escape(part) for part in parts)))
    return patterns


def chapter_paragraphs(title: str) -> list[str]:
    """The paragraphs of a chapter that is not a command chapter (such as "The wire")."""
    text = SPEC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return [" ".join(p.split()) for p in text[start:end].split("\n\n")]


COMMON_ERRORS = listed_errors(chapter_paragraphs("The wire"))


def section_of(command: str) -> Section:
    """The section documenting a request: its subcommand's section if it has one."""
    words = command.upper().split()
    return BY_TITLE.get(" ".join(words[:2])) or BY_TITLE[words[0]]


@pytest.mark.parametrize(("section", "example"), EXAMPLES, ids=_ids(EXAMPLES))
def test_errors_shown_in_examples_are_listed(section: Section, example: Transcript) -> None:
    """Every error reply an example shows for Stash is listed by the command that gave it."""
    for step in example.steps:
        for target, _, text in step.expect:
            if target == "redis" or not text.startswith("-"):
                continue
            if step.command.upper().split()[0] in BY_TITLE:
                own = section_of(step.command)
                listed = listed_errors(own.paragraphs()) + COMMON_ERRORS
            else:
                own, listed = section, COMMON_ERRORS  # an unknown command
            assert any(p.fullmatch(text) for p in listed), (
                f"{section.title} example: list `{text}` under {own.title}'s Errors"
            )


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon() as d:
        yield d


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize(("section", "example"), EXAMPLES, ids=_ids(EXAMPLES))
def test_example_on_stashd(
    section: Section, example: Transcript, proto: str, daemon: StashDaemon
) -> None:
    """The example gives the replies it shows, in a namespace of its own."""
    client = RespClient(daemon.port)
    try:
        assert client.call("AUTH", f"spec-{secrets.token_hex(8)}").render() == "+OK"
        if proto == "resp3":
            assert client.call("HELLO", "3").kind == "%"
        transcript.run(example, client, "stash", proto)
    finally:
        client.close()


STANDARD = [(s, e) for s, e in EXAMPLES if e.standard]


@pytest.mark.parametrize("proto", ["resp2", "resp3"])
@pytest.mark.parametrize(("section", "example"), STANDARD, ids=_ids(STANDARD))
def test_standard_example_on_redis(
    section: Section, example: Transcript, proto: str, redis: RedisServer
) -> None:
    """An example marked ``@ standard`` gives the same replies on redis-server, or its own."""
    client = RespClient(redis.port)
    try:
        assert client.call("FLUSHALL").render() == "+OK"
        if proto == "resp3":
            assert client.call("HELLO", "3").kind == "%"
        transcript.run(example, client, "redis", proto)
    finally:
        client.close()


def test_a_wrong_example_fails(daemon: StashDaemon) -> None:
    """The runner really compares: an example with a wrong reply is caught."""
    wrong = transcript.parse(["> ECHO hello", "$'goodbye'"], "wrong")
    client = RespClient(daemon.port)
    try:
        with pytest.raises(AssertionError, match="goodbye"):
            transcript.run(wrong, client, "stash", "resp2")
    finally:
        client.close()

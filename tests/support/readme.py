"""The README's fenced blocks, and the one place its example outputs are matched with real ones.

An expected line matches an actual line when they are equal after these, and only these,
allowances:

- a memory id written in the README (8 base62 characters mixing digits, lower and upper
  case, such as ``xK9mP2nQ``) matches any 8 base62 characters, and the same README id
  must be the same real id everywhere in one example (two README ids, two real ids);
- an API key (``sk_live_`` and its characters, or shortened to ``sk_live_Z8nl3Ser...``,
  optionally followed by a parenthesised remark) matches any well-shaped key, and a key
  id ``key_...`` any key id; both are remembered like memory ids;
- an ISO timestamp (``2026-11-25T14:10:00Z``, or Python's ``2026-11-25 14:10:00+00:00``)
  matches any timestamp of the same form: it depends on the clock;
- a TTL counts down while the example runs, so where a number is a TTL -- the value of
  ``"ttl"``, ``"ttl_remaining"`` or ``ttl_remaining=``, the ``(integer)`` after a
  ``"ttl_remaining"`` line of redis-cli, or the whole output of a command that answers
  the seconds left (``TTL``, ``UPDATE``, ``stash update``/``ttl``/``extend``) -- the real
  number may be below the README's by up to 2 plus the whole seconds the example has run
  so far (:attr:`Matcher.slack`), never above it. No other number may differ.

What was remembered is used to write the real values into later commands
(``RECALL xK9mP2nQ`` runs as ``RECALL <the id STASH printed>``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

README: Final = Path(__file__).resolve().parent.parent.parent / "README.md"
FENCE: Final = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
#: How far below the README's number a real TTL may be before any time has passed: a TTL
#: is rounded, and the second it was set in may end at once. The seconds an example has
#: run are added to it (Matcher.slack): on a loaded machine one command takes seconds.
TTL_SLACK: Final = 2

_B62 = "[0-9A-Za-z]"
_README_ID = rf"(?<![0-9A-Za-z_])(?=\w*[0-9])(?=\w*[a-z])(?=\w*[A-Z]){_B62}{{8}}(?![0-9A-Za-z_])"
_README_KEY = rf"sk_live_{_B62}+(?:\.\.\.(?:\s+\([^)]*\))?)?"
_KEY_ID = rf"key_{_B62}{{12}}"
_TIME = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:Z|\+00:00)"
_TTL = r'(?<=ttl_remaining":)\d+|(?<="ttl":)\d+|(?<=ttl_remaining=)\d+'
_TOKEN: Final = re.compile(
    rf"(?P<key>{_README_KEY})|(?P<key_id>{_KEY_ID})|(?P<time>{_TIME})"
    rf"|(?P<ttl>{_TTL})|(?P<id>{_README_ID})"
)
_REAL: Final = {
    "key": rf"sk_live_{_B62}{{38}}",
    "key_id": _KEY_ID,
    "time": _TIME,
    "ttl": r"\d+",
    "id": rf"{_B62}{{8}}",
}
_WHOLE_TTL: Final = re.compile(r"(?P<prefix>\(integer\) )?(?P<n>\d+)")
#: Commands whose whole output is the seconds left.
_SECONDS_LEFT: Final = re.compile(r"^(?:stash (?:update|ttl|extend)|redis-cli .* (?:TTL|UPDATE)) ")


@dataclass
class Block:
    """One fenced block: where it starts, its info string and its text."""

    line: int
    info: str
    body: str
    start: int  # offset of the opening fence
    end: int  # offset just past the closing fence


def blocks() -> list[Block]:
    """Every fenced block of the README, in order."""
    text = README.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(line, match["info"].strip(), match["body"], match.start(), match.end()))
    return found


def output_after(block: Block, following: Block | None) -> str | None:
    """The body of a ```text output block right after ``block`` (only blank lines between)."""
    if following is None or following.info != "text output":
        return None
    between = README.read_text()[block.end : following.start]
    return following.body if not between.strip() else None


@dataclass
class Matcher:
    """Matches expected lines with real ones, remembering README ids, keys and key ids."""

    real: dict[str, str] = field(default_factory=dict)  # README token -> real value
    #: How far below the README's number a real TTL may be, in seconds.
    slack: int = TTL_SLACK

    def ran_for(self, seconds: float) -> None:
        """The example has run ``seconds`` so far: its TTLs may have ticked that much more."""
        self.slack = TTL_SLACK + math.ceil(seconds)

    def fill(self, command: str) -> str:
        """``command`` with each remembered README token replaced by its real value."""
        for token in sorted(self.real, key=len, reverse=True):
            command = command.replace(token, self.real[token])
        return command

    def lines(self, expected: str, actual: str, command: str = "") -> list[str]:
        """What differs between ``expected`` and ``actual`` output (empty: they match)."""
        want, got = expected.splitlines(), actual.splitlines()
        problems = []
        if len(want) != len(got):
            problems.append(f"{len(got)} lines printed, {len(want)} in the README")
        for n, (w, g) in enumerate(zip(want, got, strict=False)):
            whole_ttl = bool(_SECONDS_LEFT.match(command)) or (
                n > 0 and want[n - 1].endswith('"ttl_remaining"')
            )
            problem = self.line(w, g, whole_ttl=whole_ttl)
            if problem:
                problems.append(problem)
        if problems:
            problems += ["README:", *want, "printed:", *got]
        return problems

    def line(self, want: str, got: str, *, whole_ttl: bool = False) -> str | None:
        """Why ``got`` does not match ``want`` (None when it does)."""
        whole = _WHOLE_TTL.fullmatch(want) if whole_ttl else None
        if whole:
            real = _WHOLE_TTL.fullmatch(got)
            if (
                real
                and real["prefix"] == whole["prefix"]
                and _close(whole["n"], real["n"], self.slack)
            ):
                return None
            return f"TTL line: README {want!r}, printed {got!r}"
        pattern, slots = [], []
        at = 0
        for token in _TOKEN.finditer(want):
            pattern.append(re.escape(want[at : token.start()]))
            kind = token.lastgroup
            assert kind is not None
            text = token.group()
            if kind == "key":
                text = re.sub(r"\s+\(.*$", "", text)
            if kind in ("id", "key", "key_id") and text in self.real:
                pattern.append(re.escape(self.real[text]))
            else:
                pattern.append(f"({_REAL[kind]})")
                slots.append((kind, text))
            at = token.end()
        pattern.append(re.escape(want[at:]))
        real = re.fullmatch("".join(pattern), got)
        if real is None:
            return f"README {want!r}, printed {got!r}"
        for (kind, text), value in zip(slots, real.groups(), strict=True):
            if kind == "ttl" and not _close(text, value, self.slack):
                return f"TTL {value} where the README has {text}: {got!r}"
            if kind in ("id", "key", "key_id") and self.real.get(text) != value:
                if text in self.real or value in self.real.values():
                    return f"{value} printed for two README values ({text}): {got!r}"
                self.real[text] = value
        return None


def _close(readme: str, real: str, slack: int) -> bool:
    """A real TTL at most ``slack`` below the README's, never above it."""
    return int(readme) - slack <= int(real) <= int(readme)

"""Sorted-set scores as Redis 7.0 reads, orders and writes them, apart from any command.

A sorted set's value holds each member with an 8-byte double (see
:mod:`stashd.containers`); this module is what the sorted-set commands share about it:
reading a score or a range bound exactly as Redis does (C's ``strtod`` with Redis's own
checks around it, which differ between a score and a range bound), the order members
are read in (by score, then by member bytes), and picking the members a score range, a
lex range or a rank range names, walking them the way Redis walks its own encoding so
that even odd requests (a lex range over members of different scores) answer alike.
"""

from __future__ import annotations

import re
from typing import Final

from stashd.errors import CommandError, NotFloat

#: One member as read in order: its score first, so tuples sort as Redis orders them.
Item = tuple[float, bytes]

# What C's strtod accepts as a whole number (Redis refuses NaN in every form anyway).
_DECIMAL: Final = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_HEX: Final = re.compile(
    rb"[+-]?0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?"
)
_INF: Final = re.compile(rb"[+-]?(?:inf|infinity)", re.IGNORECASE)
_NONZERO: Final = re.compile(rb"[1-9a-fA-F]")
# C's isspace: what strtod skips in front of a number.
_C_SPACE: Final = b" \t\n\v\f\r"
# Redis writes an integral score in a ZSCAN reply as an integer within this bound.
_INTEGRAL_MAX: Final = float(2**62)


class NotFloatRange(CommandError):
    """A score range bound that is not a number."""

    template = "min or max is not a float"


class NotLexRange(CommandError):
    """A lex range bound that does not start with ``[`` or ``(`` and is not ``-`` or ``+``."""

    template = "min or max not valid string range item"


class NaNScore(CommandError):
    """An increment that would make a score NaN (``+inf`` plus ``-inf``)."""

    template = "resulting score is not a number (NaN)"


def _strtod(text: bytes) -> tuple[float, bool] | None:
    """What strtod makes of the whole of ``text``, and whether it overflowed or underflowed.

    None when ``text`` is not one number from end to end.
    """
    if _DECIMAL.fullmatch(text):
        value = float(text)
        mantissa = text.split(b"e")[0].split(b"E")[0]
        out_of_range = value in {float("inf"), float("-inf")} or (
            value == 0 and _NONZERO.search(mantissa) is not None
        )
        return value, out_of_range
    if _HEX.fullmatch(text):
        try:
            value = float.fromhex(text.decode())
        except OverflowError:
            return (float("-inf") if text.startswith(b"-") else float("inf")), True
        digits = text.split(b"p")[0].split(b"P")[0][2 + (text[:1] in b"+-") :]
        return value, value == 0 and _NONZERO.search(digits) is not None
    if _INF.fullmatch(text):
        return (float("-inf") if text.startswith(b"-") else float("inf")), False
    return None


def parse_score(raw: bytes) -> float:
    """A score or increment argument, read as Redis reads one; refused like Redis otherwise.

    The whole argument must be the number: no space in front or behind, nothing past
    the double's range (``1e400``, or ``1e-400`` that would read as 0), never NaN.
    """
    parsed = _strtod(raw)
    if parsed is None or parsed[1]:
        raise NotFloat
    return parsed[0]


def _bound(raw: bytes) -> tuple[float, bool]:
    """One score range bound: the number and whether it is exclusive (a leading ``(``).

    Redis reads a bound with a bare strtod: spaces in front, an empty text (0) and a
    number past the range (an infinity) pass; trailing text or NaN do not.
    """
    exclusive = raw[:1] == b"("
    text = raw[1:] if exclusive else raw
    text = text.split(b"\0", 1)[0]  # strtod reads a C string
    stripped = text.lstrip(_C_SPACE)
    if not stripped:
        if text:  # only spaces: strtod converts nothing, and the space is left over
            raise NotFloatRange
        return 0.0, exclusive
    parsed = _strtod(stripped)
    if parsed is None:
        raise NotFloatRange
    return parsed[0], exclusive


class ScoreRange:
    """A range of scores, each end inclusive or exclusive, as ZRANGEBYSCORE reads it."""

    __slots__ = ("high", "high_ex", "low", "low_ex")

    def __init__(self, low: bytes, high: bytes) -> None:
        self.low, self.low_ex = _bound(low)
        self.high, self.high_ex = _bound(high)

    def above_low(self, score: float) -> bool:
        """Whether a score is at or past the low end."""
        return score > self.low if self.low_ex else score >= self.low

    def below_high(self, score: float) -> bool:
        """Whether a score is at or before the high end."""
        return score < self.high if self.high_ex else score <= self.high

    def item_above_low(self, item: Item) -> bool:
        """Whether a member's score is at or past the low end."""
        return self.above_low(item[0])

    def item_below_high(self, item: Item) -> bool:
        """Whether a member's score is at or before the high end."""
        return self.below_high(item[0])

    def empty(self) -> bool:
        """Whether no score can be in the range."""
        low, high = self.low, self.high
        return low > high or (low == high and (self.low_ex or self.high_ex))


# The ends of every lex range: ``-`` is below every member and ``+`` above.
_BELOW: Final = -1
_ABOVE: Final = 1
_MEMBER: Final = 0


def _lex_bound(raw: bytes) -> tuple[int, bytes, bool]:
    """One lex range bound: (which kind, the member text, exclusive)."""
    first = raw[:1]
    if first in {b"-", b"+"}:
        if len(raw) != 1:
            raise NotLexRange
        return (_BELOW if first == b"-" else _ABOVE), b"", True
    if first == b"(":
        return _MEMBER, raw[1:], True
    if first == b"[":
        return _MEMBER, raw[1:], False
    raise NotLexRange


def _lex_cmp(a: tuple[int, bytes], b: tuple[int, bytes]) -> int:
    """Compare two lex points (a member is (_MEMBER, text)), as Redis's zslLexValueCmp."""
    if a[0] != _MEMBER or b[0] != _MEMBER:
        return (a[0] > b[0]) - (a[0] < b[0])
    return (a[1] > b[1]) - (a[1] < b[1])


class LexRange:
    """A range of members by their bytes, as ZRANGEBYLEX reads it."""

    __slots__ = ("high", "high_ex", "low", "low_ex")

    def __init__(self, low: bytes, high: bytes) -> None:
        kind, text, self.low_ex = _lex_bound(low)
        self.low = (kind, text)
        kind, text, self.high_ex = _lex_bound(high)
        self.high = (kind, text)

    def above_low(self, member: bytes) -> bool:
        """Whether a member is at or past the low end."""
        c = _lex_cmp((_MEMBER, member), self.low)
        return c > 0 if self.low_ex else c >= 0

    def below_high(self, member: bytes) -> bool:
        """Whether a member is at or before the high end."""
        c = _lex_cmp((_MEMBER, member), self.high)
        return c < 0 if self.high_ex else c <= 0

    def item_above_low(self, item: Item) -> bool:
        """Whether a member is at or past the low end."""
        return self.above_low(item[1])

    def item_below_high(self, item: Item) -> bool:
        """Whether a member is at or before the high end."""
        return self.below_high(item[1])

    def empty(self) -> bool:
        """Whether no member can be in the range."""
        c = _lex_cmp(self.low, self.high)
        return c > 0 or (c == 0 and (self.low_ex or self.high_ex))


def ordered(scores: dict[bytes, float]) -> list[Item]:
    """Every member as (score, member), in Redis's order: by score, then by member bytes."""
    return sorted([(s, m) for m, s in scores.items()])


def by_rank(n: int, start: int, stop: int) -> range:
    """The positions ``start..stop`` (both inclusive, negative from the end) name in ``n``."""
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    start = max(start, 0)
    if start > stop or start >= n:
        return range(0)
    return range(start, min(stop, n - 1) + 1)


def walk(
    items: list[Item],
    rng: ScoreRange | LexRange,
    offset: int = 0,
    limit: int = -1,
    *,
    reverse: bool = False,
) -> list[Item]:
    """The members a range picks, after ``offset`` of them and at most ``limit`` (-1: all).

    As Redis does: from the first member inside the range (the last, in reverse), skip
    ``offset`` members, then take members until one is past the far end. For a score
    range that is every member within it; for a lex range over members of different
    scores (which Redis leaves undefined) it is what Redis answers too. A negative
    offset picks nothing.
    """
    if rng.empty() or not items or offset < 0:
        return []
    low, high = rng.item_above_low, rng.item_below_high
    near, far = (high, low) if reverse else (low, high)
    order = range(len(items) - 1, -1, -1) if reverse else range(len(items))
    # Redis first checks the whole set overlaps the range, end to end.
    first, last = items[order[0]], items[order[-1]]
    if not (far(first) and near(last)):
        return []
    start = next((i for i, at in enumerate(order) if near(items[at])), None)
    if start is None or not far(items[order[start]]):
        return []
    picked: list[Item] = []
    for at in order[start + offset :]:
        if limit == 0 or not far(items[at]):
            break
        picked.append(items[at])
        limit -= 1
    return picked


def scan_text(score: float) -> bytes:
    """A score as ZSCAN sends it: Redis's stored text, an integer where one is exact.

    Redis keeps a small sorted set's scores as text and ZSCAN returns that text, which
    writes an integral score within 2**62 as an integer (1e18 as 1000000000000000000),
    where the other replies' ``%.17g`` writes 1e+18.
    """
    if -_INTEGRAL_MAX <= score <= _INTEGRAL_MAX and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score
